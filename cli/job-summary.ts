import { appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hideBin } from 'yargs/helpers';
import { jobSummaryMarkdown, topSignature } from '../reporting/job-summary.ts';
import { readSummary } from '../reporting/summary.ts';
import { commandLine, runMain } from './args.ts';

// `npm run job-summary -- --reports DIR`: the markdown summary of a finished run for a CI job's
// page (reporting/job-summary.ts), appended to $GITHUB_STEP_SUMMARY when it is set, else printed.
// Exit 0 when written, 2 when the reports directory holds no finished run.

async function main(): Promise<number> {
  const usage =
    '$0 --reports DIR [--artifact NAME]\n\n' +
    "Writes a finished run's job summary: to $GITHUB_STEP_SUMMARY when set, else to standard output.";
  const args = await commandLine(hideBin(process.argv), 'npm run job-summary --', usage)
    .options({
      reports: { type: 'string', demandOption: true, describe: 'The reports directory of a finished run' },
      artifact: { type: 'string', describe: 'The name the reports are uploaded under, for the reader' },
    })
    .parseAsync();
  const summary = await readSummary(args.reports);
  const top = topSignature(summary);
  // a report folder without repro.sh (an older format) leaves the summary without one
  const topRepro = top ? await readFile(join(args.reports, top.folder, 'repro.sh'), 'utf8').catch(() => null) : null;
  const markdown = jobSummaryMarkdown({ summary, topRepro, artifact: args.artifact ?? null });
  const out = process.env.GITHUB_STEP_SUMMARY;
  if (out) await appendFile(out, markdown);
  else process.stdout.write(markdown);
  return 0;
}

runMain(main);

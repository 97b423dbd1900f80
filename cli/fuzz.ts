import { resolve } from 'node:path';
import { hideBin } from 'yargs/helpers';
import { runMain } from './args.ts';
import { parseArgs } from './fuzz-args.ts';
import { defaultWorkdir, writableDir } from './paths.ts';

// `npm run fuzz -- [options]`: a fuzz run, or one of --replay, --recheck and --promote.
// Exit codes: 0 no new divergence, 1 new divergences (or a replay that reproduced), 2 usage or
// setup error, before any work is done.

async function main(): Promise<number> {
  const args = await parseArgs(hideBin(process.argv));
  // the paths first, before the run's modules load or any tool starts: a bad one is the user's to
  // fix, and says so at once
  const workdir = resolve(args.workdir ?? (await defaultWorkdir()));
  await writableDir(workdir, '--workdir', false);
  const fuzzing = args.promote === undefined && args.replay === undefined && !args.recheck;
  if (fuzzing) await writableDir(args.reports, '--reports', true);
  const run = await import('./fuzz-run.ts');
  return run.runMode(args, workdir);
}

runMain(main);

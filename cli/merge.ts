import { join } from 'node:path';
import { hideBin } from 'yargs/helpers';
import { writeReportsIndex } from '../reporting/index-page.ts';
import { mergeReports } from '../reporting/merge.ts';
import { registryNotes } from '../reporting/summary.ts';
import { commandLine, runMain } from './args.ts';

// `npm run merge -- [--out DIR] REPORTS_DIR...`: merges the reports directories of the shards of
// one sharded run (see reporting/merge.ts). Exit codes as for a fuzz run: 0 no new divergence,
// 1 new divergences, 2 an error (bad input), or generated cases that could not be built.

async function main(): Promise<number> {
  const usage =
    '$0 [--out DIR] REPORTS_DIR...\n\n' +
    'Merges the reports directories of the shards of one run (--shard K/N, same --seed and --iterations).';
  const args = await commandLine(hideBin(process.argv), 'npm run merge --', usage, true)
    .options({
      out: {
        type: 'string',
        default: 'reports-merged',
        describe:
          'Where the merged reports and summary.json go: ' +
          'one of the inputs (merged in place), or a new or empty directory',
      },
    })
    .parseAsync();
  const dirs = args._.map(String);
  const s = await mergeReports(dirs, args.out);
  const shards = s.merged.shards.map((x) => (x.shard ? `${x.shard.index}/${x.shard.count}` : 'whole run')).join(', ');
  console.log(`merged ${dirs.length} runs (${shards}) of seed ${s.seed}: ${s.iterations} cases`);
  if (s.merged.missingShards.length)
    console.log(`warning: no input for shards ${s.merged.missingShards.join(', ')}: their cases are not covered`);
  if (s.stoppedEarly) console.log(`a shard stopped early: ${s.stoppedEarly}`);
  console.log(`new divergences: ${s.newDivergences} (${s.signatures.length} signatures); known: ${s.knownDivergences}`);
  for (const sig of s.signatures)
    console.log(`  x${sig.hitsThisRun} ${sig.signature}\n        ${join(args.out, sig.folder)}`);
  for (const note of registryNotes(s)) console.log(note);
  for (const sig of s.flaky)
    console.log(`  FLAKY x${sig.hitsThisRun} ${sig.signature}\n        ${join(args.out, sig.folder)}`);
  console.log(`summary: ${join(args.out, 'summary.json')}`);
  console.log(`index: ${(await writeReportsIndex(args.out)).html}`);
  if (s.newDivergences > 0 || s.corpus.newDivergences > 0 || s.flaky.length > 0) return 1;
  if (s.setupErrors.length > 0) {
    console.error(`${s.setupErrors.length} generated cases could not be built: a harness bug, see the shards' logs`);
    return 2;
  }
  return 0;
}

runMain(main);

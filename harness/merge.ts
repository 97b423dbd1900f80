import { cp, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { FatalError } from './errors.ts';
import { smaller } from './minimise.ts';
import { writeReportsIndex } from './report-index.ts';
import { reportFolders, writeAtomic, type Origin, type Report } from './reports.ts';
import type { RunSummary } from './run.ts';
import type { Shard } from './shard.ts';

// `npm run merge -- [--out DIR] REPORTS_DIR...`: merges the reports directories of the shards of
// one sharded run (same seed, same --iterations, --shard K/N with distinct K) into one directory:
// their report folders (hits summed, the earliest first sighting's report kept as the base) and
// their summary.json files (counts summed, signatures and coverage merged). --out may be one of
// the inputs (merged in place); otherwise it must be new or empty; default `reports-merged`.
// Exit codes as for a fuzz run: 0 no new divergence, 1 new divergences, 2 an error (bad input),
// or generated cases that could not be built.

export interface MergedSummary extends RunSummary {
  merged: {
    /** The directories merged, as given. */
    from: string[];
    shards: { dir: string; shard: Shard | null; iterations: number; elapsedSeconds: number; stoppedEarly: RunSummary['stoppedEarly']; jobs: number }[];
    /** Shard indices of 1..N with no input: the merged run does not cover their cases. */
    missingShards: number[];
  };
}

class MergeError extends FatalError {}
const fail = (message: string): never => {
  throw new MergeError(message);
};

async function readJson<T>(file: string, what: string): Promise<T> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    return fail(`cannot read ${file}: ${(err as Error).message} (${what})`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    return fail(`${file} is not valid JSON: ${(err as Error).message}`);
  }
}

type Counts = { [key: string]: number | Counts };

/** Sums two trees of counts (coverage): numbers add, objects merge key by key. */
export function sumCounts<T>(a: T, b: T): T {
  if (typeof a === 'number' && typeof b === 'number') return (a + b) as T;
  if (a === undefined) return b;
  if (b === undefined) return a;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return fail(`cannot add ${JSON.stringify(a)} and ${JSON.stringify(b)} in coverage`);
  const out: Counts = {};
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) out[key] = sumCounts((a as Counts)[key], (b as Counts)[key]) as number | Counts;
  return out as T;
}

/** Sighting order: by case index, then date; replays (no index) after every indexed sighting. */
const originKey = (o: Origin): [number, string] => [o.iteration ?? Infinity, o.date];
const earlier = (a: Origin, b: Origin) => {
  const [ia, da] = originKey(a);
  const [ib, db] = originKey(b);
  return ia !== ib ? ia < ib : da < db;
};

/** Corpus cases (no index) run first. */
const firstOf = (sig: RunSummary['signatures'][number]) => (sig.firstCorpusCase !== null ? -1 : (sig.firstIteration ?? Infinity));

const STOP_PRIORITY: NonNullable<RunSummary['stoppedEarly']>[] = ['interrupted', 'fail-fast', 'duration'];

export function mergeSummaries(dirs: string[], summaries: RunSummary[]): MergedSummary {
  const first = summaries[0]!;
  summaries.forEach((s, i) => {
    const where = `${dirs[i]}/summary.json`;
    if (s.seed !== first.seed) fail(`${where} is of seed ${s.seed}, ${dirs[0]}/summary.json of seed ${first.seed}: only the shards of one seed can be merged`);
    if ((s.iterationsRequested ?? null) !== (first.iterationsRequested ?? null)) fail(`${where} ran --iterations ${s.iterationsRequested}, ${dirs[0]}/summary.json ${first.iterationsRequested}: shards must share --iterations`);
    if (summaries.length > 1 && !s.shard) fail(`${where} is of a whole run (no --shard): only shards are merged, or one run alone`);
    if (s.shard && first.shard && s.shard.count !== first.shard.count) fail(`${where} is shard ${s.shard.index}/${s.shard.count}, ${dirs[0]}/summary.json shard ${first.shard.index}/${first.shard.count}: shards must share N`);
  });
  const seen = new Map<number, string>();
  summaries.forEach((s, i) => {
    if (!s.shard) return;
    const other = seen.get(s.shard.index);
    if (other !== undefined) fail(`${other} and ${dirs[i]} are both shard ${s.shard.index}/${s.shard.count}`);
    seen.set(s.shard.index, dirs[i]!);
  });
  const count = first.shard?.count ?? 1;
  const missingShards = first.shard ? Array.from({ length: count }, (_, i) => i + 1).filter((k) => !seen.has(k)) : [];

  const signatures = new Map<string, RunSummary['signatures'][number]>();
  for (const s of summaries) {
    for (const sig of s.signatures) {
      const prev = signatures.get(sig.signature);
      if (!prev) signatures.set(sig.signature, { ...sig });
      else {
        prev.hitsThisRun += sig.hitsThisRun;
        prev.filedThisRun ||= sig.filedThisRun;
        // corpus cases run before the generated ones
        if (sig.firstCorpusCase !== null || (prev.firstCorpusCase === null && firstOf(sig) < firstOf(prev))) Object.assign(prev, { firstIteration: sig.firstIteration, firstCorpusCase: sig.firstCorpusCase });
      }
    }
  }
  const knownByEntry = summaries.reduce<Record<string, number>>((acc, s) => sumCounts(acc, s.knownByEntry), {});
  const iterations = summaries.reduce((n, s) => n + s.iterations, 0);
  const processes = summaries.reduce((n, s) => n + s.processes.total, 0);
  const filing = summaries.reduce((n, s) => n + (s.processes.filing ?? 0), 0);
  const stops = summaries.map((s) => s.stoppedEarly);
  return {
    seed: first.seed,
    iterationsRequested: first.iterationsRequested ?? null,
    durationSeconds: first.durationSeconds ?? null,
    shard: null,
    iterations,
    stoppedEarly: STOP_PRIORITY.find((p) => stops.includes(p)) ?? null,
    // the shards ran side by side: the slowest one is the run's wall time
    elapsedSeconds: Math.max(...summaries.map((s) => s.elapsedSeconds)),
    jobs: first.jobs,
    subject: first.subject,
    tools: first.tools,
    newDivergences: summaries.reduce((n, s) => n + s.newDivergences, 0),
    knownDivergences: summaries.reduce((n, s) => n + s.knownDivergences, 0),
    knownByEntry,
    signatures: [...signatures.values()].sort((a, b) => firstOf(a) - firstOf(b) || a.signature.localeCompare(b.signature)),
    flaky: summaries.flatMap((s) => s.flaky ?? []),
    corpus: summaries.map((s) => s.corpus ?? { available: 0, run: 0, newDivergences: 0, knownDivergences: 0 }).reduce((a, b) => sumCounts(a, b)),
    unusedKnown: Object.entries(knownByEntry)
      .filter(([, n]) => n === 0)
      .map(([id]) => id),
    expiredKnown: [...new Set(summaries.flatMap((s) => s.expiredKnown ?? []))].sort(),
    setupErrors: summaries.flatMap((s) => s.setupErrors).sort((a, b) => a.iteration - b.iteration),
    processes: { total: processes, perIteration: iterations ? Math.round(((processes - filing) / iterations) * 10) / 10 : 0, filing },
    coverage: summaries.map((s) => s.coverage).reduce((a, b) => sumCounts(a, b)),
    merged: {
      from: dirs,
      shards: summaries.map((s, i) => ({ dir: dirs[i]!, shard: s.shard ?? null, iterations: s.iterations, elapsedSeconds: s.elapsedSeconds, stoppedEarly: s.stoppedEarly, jobs: s.jobs })),
      missingShards,
    },
  };
}

/** Merges one signature's folders: hits summed, firstSeen the earliest and lastSeen the latest
 * sighting; the folder with the smallest case (the earliest among equals) is the base: its case,
 * images and repro.sh. */
async function mergeFolder(folder: string, sources: { dir: string; report: Report }[], out: string) {
  const first = sources.reduce((a, b) => (earlier(b.report.firstSeen, a.report.firstSeen) ? b : a));
  const base = sources.reduce((a, b) => (smaller(b.report.case, a.report.case) || (!smaller(a.report.case, b.report.case) && earlier(b.report.firstSeen, a.report.firstSeen)) ? b : a));
  for (const s of sources) if (s.report.signature !== base.report.signature) fail(`${join(s.dir, folder)} and ${join(base.dir, folder)} hold different signatures`);
  const report: Report = {
    ...base.report,
    hits: sources.reduce((n, s) => n + s.report.hits, 0),
    firstSeen: first.report.firstSeen,
    lastSeen: sources.map((s) => s.report.lastSeen).reduce((a, b) => (earlier(a, b) ? b : a)),
    originalCase: first.report.originalCase ?? first.report.case,
  };
  const json = `${JSON.stringify(report, null, 2)}\n`;
  const target = join(out, folder);
  if (resolve(base.dir) === resolve(out)) {
    if (sources.length > 1) await writeAtomic(join(target, 'report.json'), json);
    return;
  }
  // a whole folder is staged under a hidden temporary name and renamed into place; a fuzz run on
  // the directory removes leftovers of an interrupted merge, like its own
  const flat = folder.replace('/', '-');
  const staging = join(out, `.${flat}.tmp-${process.pid}`);
  const old = join(out, `.${flat}.old.tmp-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await cp(join(base.dir, folder), staging, { recursive: true });
  await writeAtomic(join(staging, 'report.json'), json);
  const exists = await stat(target).then(() => true, () => false);
  if (exists) await rename(target, old);
  await mkdir(dirname(target), { recursive: true });
  await rename(staging, target);
  if (exists) await rm(old, { recursive: true, force: true });
}

export async function mergeReports(dirs: string[], out: string): Promise<MergedSummary> {
  if (dirs.length === 0) fail('name the reports directories to merge');
  if (new Set(dirs.map((d) => resolve(d))).size !== dirs.length) fail('a reports directory is named twice');
  for (const d of dirs) {
    if (!(await stat(d).then((s) => s.isDirectory(), () => false))) fail(`${d} is not a directory`);
  }
  const summaries = await Promise.all(dirs.map((d) => readJson<RunSummary>(join(d, 'summary.json'), 'every input must be the reports directory of a finished run')));
  const merged = mergeSummaries(dirs, summaries);

  const inPlace = dirs.some((d) => resolve(d) === resolve(out));
  if (!inPlace) {
    const existing = await readdir(out).catch(() => null);
    if (existing && existing.length > 0) fail(`--out ${out} is not empty: name a new directory, or one of the inputs to merge into it`);
    await mkdir(out, { recursive: true });
  }
  const bySignature = new Map<string, { dir: string; report: Report }[]>();
  for (const dir of dirs) {
    for (const folder of await reportFolders(dir)) {
      const report = await readJson<Report>(join(dir, folder, 'report.json'), 'a report folder');
      if (typeof report?.signature !== 'string' || typeof report.hits !== 'number' || !report.firstSeen || !report.lastSeen) fail(`${join(dir, folder, 'report.json')} is not a fuzzer report`);
      bySignature.set(folder, [...(bySignature.get(folder) ?? []), { dir, report }]);
    }
  }
  for (const [folder, sources] of bySignature) await mergeFolder(folder, sources, out);
  await writeAtomic(join(out, 'summary.json'), `${JSON.stringify(merged, null, 2)}\n`);
  return merged;
}

async function main(): Promise<number> {
  const args = await yargs(hideBin(process.argv))
    .scriptName('npm run merge --')
    .usage('$0 [--out DIR] REPORTS_DIR...\n\nMerges the reports directories of the shards of one run (--shard K/N, same --seed and --iterations).')
    .options({ out: { type: 'string', describe: 'Where the merged reports and summary.json go: one of the inputs (merged in place), or a new or empty directory', default: 'reports-merged' } })
    .strictOptions()
    .help()
    .version(false)
    .fail((message, err) => {
      throw err instanceof MergeError ? err : new MergeError(message ?? String(err));
    })
    .parseAsync();
  const dirs = args._.map(String);
  const s = await mergeReports(dirs, args.out);
  const shards = s.merged.shards.map((x) => (x.shard ? `${x.shard.index}/${x.shard.count}` : 'whole run')).join(', ');
  console.log(`merged ${dirs.length} runs (${shards}) of seed ${s.seed}: ${s.iterations} cases`);
  if (s.merged.missingShards.length) console.log(`warning: no input for shards ${s.merged.missingShards.join(', ')}: their cases are not covered`);
  if (s.stoppedEarly) console.log(`a shard stopped early: ${s.stoppedEarly}`);
  console.log(`new divergences: ${s.newDivergences} (${s.signatures.length} signatures); known: ${s.knownDivergences}`);
  for (const sig of s.signatures) console.log(`  x${sig.hitsThisRun} ${sig.signature}\n        ${join(args.out, sig.folder)}`);
  if (s.unusedKnown.length) console.log(`registry entries that matched nothing: ${s.unusedKnown.join(', ')}`);
  for (const sig of s.flaky) console.log(`  FLAKY x${sig.hitsThisRun} ${sig.signature}\n        ${join(args.out, sig.folder)}`);
  console.log(`summary: ${join(args.out, 'summary.json')}`);
  console.log(`index: ${(await writeReportsIndex(args.out)).html}`);
  if (s.newDivergences > 0 || s.corpus.newDivergences > 0 || s.flaky.length > 0) return 1;
  if (s.setupErrors.length > 0) {
    console.error(`${s.setupErrors.length} generated cases could not be built: a harness bug, see the shards' logs`);
    return 2;
  }
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(err instanceof FatalError ? `error: ${err.message}` : err);
      process.exitCode = 2;
    },
  );
}

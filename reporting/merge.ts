import { cp, readdir, rm, stat } from 'node:fs/promises';
import { makeDirectory } from '../exec/files.ts';
import { join, resolve } from 'node:path';
import { smaller } from '../model/case.ts';
import { FatalError } from '../model/errors.ts';
import type { Shard } from '../model/shard.ts';
import {
  publishStaged,
  readReport,
  reportFolders,
  stagingFolder,
  writeReport,
  type Origin,
  type Report,
} from './store.ts';
import { readSummary, writeSummary, type RunSummary } from './summary.ts';

// `npm run merge -- [--out DIR] REPORTS_DIR...`: merges the reports directories of the shards of
// one sharded run (same seed, same --iterations, --shard K/N with distinct K) into one directory:
// their report folders (hits summed, the earliest first sighting's report kept as the base) and
// their summary.json files (counts summed, signatures and coverage merged). --out may be one of
// the inputs (merged in place); otherwise it must be new or empty; default `reports-merged`.

export interface MergedSummary extends RunSummary {
  merged: {
    /** The directories merged, as given. */
    from: string[];
    shards: {
      dir: string;
      shard: Shard | null;
      iterations: number;
      elapsedSeconds: number;
      stoppedEarly: RunSummary['stoppedEarly'];
      jobs: number;
    }[];
    /** Shard indices of 1..N with no input: the merged run does not cover their cases. */
    missingShards: number[];
  };
}

export class MergeError extends FatalError {}
const fail = (message: string): never => {
  throw new MergeError(message);
};

type Counts = { [key: string]: number | Counts };

/** Sums two trees of counts (coverage): numbers add, objects merge key by key. */
export function sumCounts<T>(a: T, b: T): T {
  if (typeof a === 'number' && typeof b === 'number') return (a + b) as T;
  if (a === undefined) return b;
  if (b === undefined) return a;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null)
    return fail(`cannot add ${JSON.stringify(a)} and ${JSON.stringify(b)} in coverage`);
  const out: Counts = {};
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)]))
    out[key] = sumCounts((a as Counts)[key], (b as Counts)[key]) as number | Counts;
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
const firstOf = (sig: RunSummary['signatures'][number]) =>
  sig.firstCorpusCase !== null ? -1 : (sig.firstIteration ?? Infinity);

const STOP_PRIORITY: NonNullable<RunSummary['stoppedEarly']>[] = ['interrupted', 'fail-fast', 'duration'];

export function mergeSummaries(dirs: string[], summaries: RunSummary[]): MergedSummary {
  const first = summaries[0]!;
  summaries.forEach((s, i) => {
    const where = `${dirs[i]}/summary.json`;
    if (s.seed !== first.seed)
      fail(
        `${where} is of seed ${s.seed}, ${dirs[0]}/summary.json of seed ${first.seed}: ` +
          'only the shards of one seed can be merged',
      );
    if ((s.iterationsRequested ?? null) !== (first.iterationsRequested ?? null))
      fail(
        `${where} ran --iterations ${s.iterationsRequested}, ` +
          `${dirs[0]}/summary.json ${first.iterationsRequested}: shards must share --iterations`,
      );
    if (summaries.length > 1 && !s.shard)
      fail(`${where} is of a whole run (no --shard): only shards are merged, or one run alone`);
    if (s.shard && first.shard && s.shard.count !== first.shard.count)
      fail(
        `${where} is shard ${s.shard.index}/${s.shard.count}, ` +
          `${dirs[0]}/summary.json shard ${first.shard.index}/${first.shard.count}: shards must share N`,
      );
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
        if (sig.firstCorpusCase !== null || (prev.firstCorpusCase === null && firstOf(sig) < firstOf(prev)))
          Object.assign(prev, { firstIteration: sig.firstIteration, firstCorpusCase: sig.firstCorpusCase });
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
    signatures: [...signatures.values()].sort(
      (a, b) => firstOf(a) - firstOf(b) || a.signature.localeCompare(b.signature),
    ),
    flaky: summaries.flatMap((s) => s.flaky ?? []),
    corpus: summaries
      .map((s) => s.corpus ?? { available: 0, run: 0, newDivergences: 0, knownDivergences: 0 })
      .reduce((a, b) => sumCounts(a, b)),
    unusedKnown: Object.entries(knownByEntry)
      .filter(([, n]) => n === 0)
      .map(([id]) => id),
    messageDiffers: summaries.reduce<RunSummary['messageDiffers']>((acc, s) => {
      for (const [id, seen] of Object.entries(s.messageDiffers ?? {}))
        acc[id] = { findings: (acc[id]?.findings ?? 0) + seen.findings, stderr: acc[id]?.stderr ?? seen.stderr };
      return acc;
    }, {}),
    expiredKnown: [...new Set(summaries.flatMap((s) => s.expiredKnown ?? []))].sort(),
    setupErrors: summaries.flatMap((s) => s.setupErrors).sort((a, b) => a.iteration - b.iteration),
    processes: {
      total: processes,
      perIteration: iterations ? Math.round(((processes - filing) / iterations) * 10) / 10 : 0,
      filing,
    },
    coverage: summaries.map((s) => s.coverage).reduce((a, b) => sumCounts(a, b)),
    merged: {
      from: dirs,
      shards: summaries.map((s, i) => ({
        dir: dirs[i]!,
        shard: s.shard ?? null,
        iterations: s.iterations,
        elapsedSeconds: s.elapsedSeconds,
        stoppedEarly: s.stoppedEarly,
        jobs: s.jobs,
      })),
      missingShards,
    },
  };
}

/** Merges one signature's folders: hits summed, firstSeen the earliest and lastSeen the latest
 * sighting; the folder with the smallest case (the earliest among equals) is the base: its case,
 * images and repro.sh. */
async function mergeFolder(folder: string, sources: { dir: string; report: Report }[], out: string) {
  const first = sources.reduce((a, b) => (earlier(b.report.firstSeen, a.report.firstSeen) ? b : a));
  const base = sources.reduce((a, b) =>
    smaller(b.report.case, a.report.case) ||
    (!smaller(a.report.case, b.report.case) && earlier(b.report.firstSeen, a.report.firstSeen))
      ? b
      : a,
  );
  for (const s of sources)
    if (s.report.signature !== base.report.signature)
      fail(`${join(s.dir, folder)} and ${join(base.dir, folder)} hold different signatures`);
  const report: Report = {
    ...base.report,
    hits: sources.reduce((n, s) => n + s.report.hits, 0),
    firstSeen: first.report.firstSeen,
    lastSeen: sources.map((s) => s.report.lastSeen).reduce((a, b) => (earlier(a, b) ? b : a)),
    originalCase: first.report.originalCase ?? first.report.case,
  };
  if (resolve(base.dir) === resolve(out)) {
    if (sources.length > 1) await writeReport(join(out, folder), report);
    return;
  }
  // a whole folder is staged under a hidden temporary name and renamed into place; a fuzz run on
  // the directory removes leftovers of an interrupted merge, like its own
  const staging = stagingFolder(out, folder);
  await rm(staging, { recursive: true, force: true });
  await cp(join(base.dir, folder), staging, { recursive: true });
  await writeReport(staging, report);
  await publishStaged(out, staging, folder);
}

export async function mergeReports(dirs: string[], out: string): Promise<MergedSummary> {
  if (dirs.length === 0) fail('name the reports directories to merge');
  if (new Set(dirs.map((d) => resolve(d))).size !== dirs.length) fail('a reports directory is named twice');
  for (const d of dirs) {
    if (
      !(await stat(d).then(
        (s) => s.isDirectory(),
        () => false,
      ))
    )
      fail(`${d} is not a directory`);
  }
  const summaries = await Promise.all(dirs.map(readSummary));
  const merged = mergeSummaries(dirs, summaries);

  const inPlace = dirs.some((d) => resolve(d) === resolve(out));
  if (!inPlace) {
    const existing = await readdir(out).catch(() => null);
    if (existing && existing.length > 0)
      fail(`--out ${out} is not empty: name a new directory, or one of the inputs to merge into it`);
    await makeDirectory(out);
  }
  const bySignature = new Map<string, { dir: string; report: Report }[]>();
  for (const dir of dirs) {
    for (const folder of await reportFolders(dir)) {
      const report = await readReport(join(dir, folder));
      bySignature.set(folder, [...(bySignature.get(folder) ?? []), { dir, report }]);
    }
  }
  for (const [folder, sources] of bySignature) await mergeFolder(folder, sources, out);
  await writeSummary(out, merged);
  return merged;
}

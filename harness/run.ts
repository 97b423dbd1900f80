import { readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Case } from './case.ts';
import { CaseAborted, DiskFullError, isNoSpace } from './errors.ts';
import { CaseSetupError, runCase, type CaseResult } from './execute.ts';
import { addCase, emptyCoverage, type CoverageSummary } from './coverage.ts';
import { processesSpawned } from './process.ts';
import { caseIndexAt, casesInShard, type Shard } from './shard.ts';
import type { KnownDivergence } from './registry.ts';
import { fileReport, writeAtomic, type Report } from './reports.ts';
import type { Resizer } from './subjects.ts';
import { triage } from './triage.ts';
import { caseAt } from '../generators/case.ts';
import { signatureOf } from '../oracles/finding.ts';

export interface FuzzOptions {
  seed: number;
  /** Case indices below this are run (by this shard); Infinity: until the duration is spent. */
  iterations: number;
  /** Time budget: no case starts after it; running ones get up to timeoutMs to finish, then are
   * stopped like an interrupted run. */
  durationMs?: number | null;
  /** Run only this shard's slice of the case indices (see shard.ts). */
  shard?: Shard | null;
  /** Cases run at the same time. Results are committed in case order, so reports, hit counts and
   * the summary do not depend on it. */
  jobs: number;
  subject: Resizer;
  timeoutMs: number;
  workdir: string;
  reportsDir: string;
  registry: KnownDivergence[];
  failFast: boolean;
  tools: Report['tools'];
  log: Logger;
  /** Aborted by SIGINT or SIGTERM: the run stops where it is and still writes its summary. */
  stop?: AbortSignal;
  /** Readable progress for the console. */
  say: (line: string) => void;
}

export interface RunSummary {
  seed: number;
  /** --iterations: the case indices below it, across all shards; null when only --duration
   * bounded the run. */
  iterationsRequested: number | null;
  /** --duration in seconds, or null. */
  durationSeconds: number | null;
  /** The shard this run was (1-based index of count), or null for a whole run. */
  shard: Shard | null;
  /** Cases run to the end and counted; an interrupted run counts only those. */
  iterations: number;
  /** Why the run ended before its iterations: 'fail-fast', 'interrupted', or 'duration' (the
   * --duration budget was spent). */
  stoppedEarly: 'fail-fast' | 'interrupted' | 'duration' | null;
  elapsedSeconds: number;
  jobs: number;
  subject: Resizer;
  tools: Report['tools'];
  /** Cases with at least one finding that no registry entry explains. */
  newDivergences: number;
  /** Cases whose findings the registry explains entirely. */
  knownDivergences: number;
  knownByEntry: Record<string, number>;
  /** Signatures of new findings seen in this run, with their report folders. */
  signatures: { signature: string; folder: string; hitsThisRun: number; filedThisRun: boolean; firstIteration: number }[];
  /** Registry entries that matched nothing in this run. */
  unusedKnown: string[];
  /** Cases whose base image could not be built: harness bugs, never divergences. */
  setupErrors: { iteration: number; message: string }[];
  processes: { total: number; perIteration: number };
  coverage: CoverageSummary;
}

/** Below this much free space in the work or reports directory the run stops cleanly. */
const MIN_FREE_BYTES = 256 * 1024 * 1024;

async function ensureSpace(dir: string, what: string, flag: string) {
  const s = await statfs(dir);
  const free = s.bavail * s.bsize;
  if (free < MIN_FREE_BYTES) throw new DiskFullError(`the ${what} ${dir} has only ${Math.floor(free / 2 ** 20)} MiB free (at least ${MIN_FREE_BYTES / 2 ** 20} MiB needed): free space or pass ${flag} DIR`);
}

/** Staging folders of a run that was killed before it could rename them into reports. */
async function removeStaleStaging(reportsDir: string) {
  for (const name of await readdir(reportsDir)) {
    if (/^\..+\.tmp-\d+$/.test(name)) await rm(join(reportsDir, name), { recursive: true, force: true });
  }
}

type Attempt = { c: Case; result: CaseResult } | { c: Case; setupError: CaseSetupError };

export async function fuzz(o: FuzzOptions): Promise<RunSummary> {
  const started = performance.now();
  const processesBefore = processesSpawned();
  const knownByEntry: Record<string, number> = Object.fromEntries(o.registry.map((e) => [e.id, 0]));
  const signatures = new Map<string, RunSummary['signatures'][number]>();
  const setupErrors: RunSummary['setupErrors'] = [];
  const coverage = emptyCoverage();
  let newDivergences = 0;
  let knownDivergences = 0;
  let committed = 0;
  let stoppedEarly: RunSummary['stoppedEarly'] = null;
  let fatal: unknown = null;
  let accepting = true;
  /** Child process wall time of the committed cases (for the log and benchmarks; not in the
   * summary, which does not depend on timing). */
  let childMs = 0;
  const shard = o.shard ?? null;
  /** Positions in this shard's sequence of case indices. */
  const positions = casesInShard(shard, o.iterations);

  // `halt` stops new cases and kills running ones: on fail-fast, interruption or a fatal error
  const halt = new AbortController();
  const onStop = () => {
    stoppedEarly ??= 'interrupted';
    halt.abort();
  };
  o.stop?.addEventListener('abort', onStop, { once: true });
  await removeStaleStaging(o.reportsDir);

  async function commit(iteration: number, attempt: Attempt) {
    const { c } = attempt;
    childMs += 'setupError' in attempt ? attempt.setupError.command.durationMs : attempt.result.commands.reduce((sum, r) => sum + r.durationMs, 0);
    if ('setupError' in attempt) {
      const err = attempt.setupError;
      setupErrors.push({ iteration, message: err.message });
      o.log.error({ iteration, case: c, command: err.command }, `case could not be built: ${err.message}`);
      o.say(`[${iteration}] harness bug: the generated case could not be built: ${err.message}`);
      return;
    }
    const { result } = attempt;
    addCase(coverage, c, result);
    const { known, fresh } = triage(c, result, o.registry);
    for (const { entry } of known) knownByEntry[entry.id]! += 1;
    o.log.info({ iteration, steps: result.steps.map((s) => `${s.plan.kind}:${s.reference}/${s.subject}`), known: known.map((k) => k.entry.id), fresh: fresh.map(signatureOf) }, 'case done');
    if (fresh.length === 0) {
      if (known.length > 0) knownDivergences++;
      return;
    }
    newDivergences++;
    const primary = fresh[0]!;
    const filed = await fileReport(o.reportsDir, {
      finding: primary,
      findings: result.findings,
      case: c,
      result,
      subject: o.subject,
      tools: o.tools,
      origin: { seed: o.seed, iteration, date: new Date().toISOString() },
    });
    const signature = signatureOf(primary);
    const entry = signatures.get(signature) ?? { signature, folder: filed.folder, hitsThisRun: 0, filedThisRun: filed.isNew, firstIteration: iteration };
    entry.hitsThisRun++;
    signatures.set(signature, entry);
    o.log.warn({ iteration, signature, folder: filed.folder, isNew: filed.isNew }, primary.message);
    o.say(`[${iteration}] ${filed.isNew ? 'NEW' : 'again'}: ${primary.message} -> ${join(o.reportsDir, filed.folder)}`);
    if (o.failFast) {
      // later cases may have finished already: they are not counted, as if they never ran
      accepting = false;
      stoppedEarly = 'fail-fast';
      halt.abort();
    }
  }

  // --duration: at the deadline no further case starts; running ones may finish within one
  // timeout, then they are stopped like an interrupted run's
  let draining = false;
  let graceTimer: NodeJS.Timeout | undefined;
  const deadline = o.durationMs == null ? null : started + o.durationMs;
  const deadlineTimer =
    deadline === null
      ? undefined
      : setTimeout(() => {
          draining = true;
          graceTimer = setTimeout(() => {
            stoppedEarly ??= 'duration';
            halt.abort();
          }, o.timeoutMs);
        }, o.durationMs!);

  // Results arrive in any order; they are committed strictly in case order (positions in this
  // shard's sequence; `iteration` is always the real case index).
  const done = new Map<number, Attempt>();
  let commits = Promise.resolve();
  const commitReady = async () => {
    while (accepting && done.has(committed)) {
      const attempt = done.get(committed)!;
      done.delete(committed);
      await commit(caseIndexAt(shard, committed), attempt);
      committed++;
      if ((committed % 25 === 0 || committed === positions) && !halt.signal.aborted) {
        const now = performance.now();
        const rate = committed / ((now - started) / 1000);
        const left = deadline === null ? '' : `, ${Math.max(0, Math.round((deadline - now) / 1000))} s left`;
        o.say(`[${committed}${Number.isFinite(positions) ? `/${positions}` : ''}] ${rate.toFixed(1)} cases/s, new ${newDivergences}, known ${knownDivergences}${left}`);
      }
    }
  };

  let next = 0;
  async function worker() {
    while (!halt.signal.aborted && !draining && next < positions) {
      const position = next++;
      const iteration = caseIndexAt(shard, position);
      const c = caseAt(o.seed, iteration);
      try {
        await ensureSpace(o.workdir, 'work directory', '--workdir');
        await ensureSpace(o.reportsDir, 'reports directory', '--reports');
        const result = await runCase(c, {
          subject: o.subject,
          timeoutMs: o.timeoutMs,
          workdir: o.workdir,
          signal: halt.signal,
          wantArtifacts: (findings, steps) => triage(c, { findings, steps }, o.registry).fresh.length > 0,
        });
        done.set(position, { c, result });
      } catch (err) {
        if (err instanceof CaseAborted) return;
        if (err instanceof CaseSetupError) done.set(position, { c, setupError: err });
        else {
          fatal ??= isNoSpace(err) ? new DiskFullError(`no space left: ${(err as Error).message}; free space in --workdir and --reports`) : err;
          halt.abort();
          return;
        }
      }
      commits = commits.then(commitReady).catch((err: unknown) => {
        fatal ??= isNoSpace(err) ? new DiskFullError(`the reports directory ${o.reportsDir} is full: ${(err as Error).message}; reports already filed are intact`) : err;
        halt.abort();
      });
      await commits;
    }
  }
  await Promise.all(Array.from({ length: Math.min(o.jobs, positions) }, worker));
  await commits;
  clearTimeout(deadlineTimer);
  clearTimeout(graceTimer);
  o.stop?.removeEventListener('abort', onStop);
  if (fatal) throw fatal;
  if (draining && committed < positions) stoppedEarly ??= 'duration';

  const total = processesSpawned() - processesBefore;
  const summary: RunSummary = {
    seed: o.seed,
    iterationsRequested: Number.isFinite(o.iterations) ? o.iterations : null,
    durationSeconds: o.durationMs == null ? null : o.durationMs / 1000,
    shard,
    iterations: committed,
    stoppedEarly,
    elapsedSeconds: Math.round((performance.now() - started) / 10) / 100,
    jobs: o.jobs,
    subject: o.subject,
    tools: o.tools,
    newDivergences,
    knownDivergences,
    knownByEntry,
    signatures: [...signatures.values()],
    unusedKnown: Object.entries(knownByEntry)
      .filter(([, n]) => n === 0)
      .map(([id]) => id),
    setupErrors,
    processes: { total, perIteration: committed ? Math.round((total / committed) * 10) / 10 : 0 },
    coverage,
  };
  o.log.info({ childSeconds: Math.round(childMs) / 1000, elapsedSeconds: summary.elapsedSeconds, iterations: committed, jobs: o.jobs }, 'run timing');
  await writeAtomic(join(o.reportsDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  return summary;
}

import { readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Case } from './case.ts';
import { CaseAborted, DiskFullError, isNoSpace } from './errors.ts';
import { CaseSetupError, runCase, workDirsRemoved, type CaseResult } from './execute.ts';
import { addCase, emptyCoverage, type CoverageSummary } from './coverage.ts';
import type { CorpusEntry } from './corpus.ts';
import { fileFinding, type CaseSource } from './filing.ts';
import type { MinimiseBudget } from './minimise.ts';
import { processesSpawned } from './process.ts';
import { readerThreadsFor, startReaders } from './readers.ts';
import { caseIndexAt, casesInShard, type Shard } from './shard.ts';
import type { KnownDivergence } from './registry.ts';
import { writeAtomic, type Report } from './reports.ts';
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
  /** Re-runs of a new signature before it is filed (k of n); 0 files without confirming. */
  confirmRuns: number;
  /** Budget for shrinking a new signature's case; null files cases as generated. */
  minimise: MinimiseBudget | null;
  /** Regression cases replayed before the generated ones (this shard's share of them). */
  corpus: CorpusEntry[];
  /** Ids of the registry entries left out because they expired. */
  expiredKnown: string[];
  /** The corpus may take at most this share of the run: of --iterations in cases, or of
   * --duration in time. */
  corpusShare: number;
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
  /** Signatures of new findings seen in this run, with their report folders (generated and
   * corpus cases alike; flaky ones are listed apart, under `flaky`). */
  signatures: SignatureSeen[];
  /** Findings that never reproduced when re-run: filed under flaky/, not counted as divergences. */
  flaky: SignatureSeen[];
  /** Regression cases from the corpus, run before the generated ones and counted apart from them. */
  corpus: { available: number; run: number; newDivergences: number; knownDivergences: number };
  /** Registry entries that matched nothing in this run. */
  unusedKnown: string[];
  /** Registry entries past their `expires` day: they suppressed nothing in this run. */
  expiredKnown: string[];
  /** Cases whose base image could not be built: harness bugs, never divergences. */
  setupErrors: { iteration: number; message: string }[];
  /** Child processes: all of them; per case run (generated or corpus), counting the case's own
   * commands; and those spent confirming and minimising new findings. */
  processes: { total: number; perIteration: number; filing: number };
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

export interface SignatureSeen {
  signature: string;
  folder: string;
  hitsThisRun: number;
  filedThisRun: boolean;
  /** The first case of this run that hit it: a case index, or null for a corpus case (named in
   * firstCorpusCase). */
  firstIteration: number | null;
  firstCorpusCase: string | null;
  confirmation: { runs: number; reproduced: number } | null;
  /** Steps and data operations of the case filed when new, and how it was shrunk. */
  minimised: { steps: number; data: number; runs: number; stoppedBy: string } | null;
}

/** This shard's corpus cases, in name order: case j goes to shard (j mod N) + 1. */
export const corpusInShard = (corpus: CorpusEntry[], shard: Shard | null) => (shard ? corpus.filter((_, j) => j % shard.count === shard.index - 1) : corpus);

export async function fuzz(o: FuzzOptions): Promise<RunSummary> {
  const started = performance.now();
  const processesBefore = processesSpawned();
  const knownByEntry: Record<string, number> = Object.fromEntries(o.registry.map((e) => [e.id, 0]));
  const signatures = new Map<string, SignatureSeen>();
  const flaky = new Map<string, SignatureSeen>();
  const setupErrors: RunSummary['setupErrors'] = [];
  const coverage = emptyCoverage();
  let newDivergences = 0;
  let knownDivergences = 0;
  /** Positions committed: corpus cases first, then this shard's generated cases. */
  let committed = 0;
  let stoppedEarly: RunSummary['stoppedEarly'] = null;
  let fatal: unknown = null;
  let accepting = true;
  /** Child process wall time of the committed cases (for the log and benchmarks; not in the
   * summary, which does not depend on timing). */
  let childMs = 0;
  let caseProcesses = 0;
  const shard = o.shard ?? null;
  const corpusCases = corpusInShard(o.corpus, shard);
  // the corpus's share of an iteration budget, in cases; a --duration budget is checked in time
  const corpusLimit = Number.isFinite(o.iterations) ? Math.min(corpusCases.length, Math.ceil(o.corpusShare * o.iterations)) : corpusCases.length;
  const corpusSummary: RunSummary['corpus'] = { available: corpusCases.length, run: 0, newDivergences: 0, knownDivergences: 0 };
  /** Positions in this run's sequence: corpus cases, then this shard's case indices. */
  const generated = casesInShard(shard, o.iterations);
  const positions = corpusLimit + generated;
  const sourceAt = (position: number): CaseSource =>
    position < corpusLimit ? { corpus: corpusCases[position]!.name } : { seed: o.seed, iteration: caseIndexAt(shard, position - corpusLimit) };
  const caseOf = (source: CaseSource) => ('corpus' in source ? corpusCases.find((e) => e.name === source.corpus)!.case : caseAt(source.seed, source.iteration));
  const label = (source: CaseSource) => ('corpus' in source ? `corpus ${source.corpus}` : String(source.iteration));

  // `halt` stops new cases and kills running ones: on fail-fast, interruption or a fatal error
  const halt = new AbortController();
  const onStop = () => {
    stoppedEarly ??= 'interrupted';
    halt.abort();
  };
  o.stop?.addEventListener('abort', onStop, { once: true });
  startReaders(readerThreadsFor(o.jobs));
  await removeStaleStaging(o.reportsDir);

  async function commit(source: CaseSource, attempt: Attempt) {
    const { c } = attempt;
    const where = label(source);
    const fromCorpus = 'corpus' in source;
    if (fromCorpus) corpusSummary.run++;
    caseProcesses += 'setupError' in attempt ? 1 : attempt.result.commands.length;
    childMs += 'setupError' in attempt ? attempt.setupError.command.durationMs : attempt.result.commands.reduce((sum, r) => sum + r.durationMs, 0);
    if ('setupError' in attempt) {
      const err = attempt.setupError;
      setupErrors.push({ iteration: fromCorpus ? -1 : source.iteration, message: `${fromCorpus ? `corpus case ${source.corpus}: ` : ''}${err.message}` });
      o.log.error({ source, case: c, command: err.command }, `case could not be built: ${err.message}`);
      o.say(`[${where}] harness bug: the case could not be built: ${err.message}`);
      return;
    }
    const { result } = attempt;
    if (!fromCorpus) addCase(coverage, c, result);
    const { known, fresh } = triage(c, result, o.registry);
    for (const { entry } of known) knownByEntry[entry.id]! += 1;
    o.log.info({ source, steps: result.steps.map((s) => `${s.plan.kind}:${s.reference}/${s.subject}`), known: known.map((k) => k.entry.id), fresh: fresh.map(signatureOf) }, 'case done');
    if (fresh.length === 0) {
      if (known.length > 0) {
        if (fromCorpus) corpusSummary.knownDivergences++;
        else knownDivergences++;
      }
      return;
    }
    const primary = fresh[0]!;
    const signature = signatureOf(primary);
    const firstThisRun = !signatures.has(signature) && !flaky.has(signature);
    if (firstThisRun) o.say(`[${where}] ${primary.message}: confirming${o.minimise && !fromCorpus ? ' and minimising' : ''} before filing`);
    const filed = await fileFinding(
      { reportsDir: o.reportsDir, subject: o.subject, tools: o.tools, registry: o.registry, timeoutMs: o.timeoutMs, workdir: o.workdir, signal: halt.signal, confirmRuns: o.confirmRuns, minimise: o.minimise, log: o.log },
      c,
      result,
      primary,
      source,
    );
    const seen = filed.flaky ? flaky : signatures;
    const entry = seen.get(signature) ?? {
      signature,
      folder: filed.folder,
      hitsThisRun: 0,
      filedThisRun: filed.isNew,
      firstIteration: fromCorpus ? null : source.iteration,
      firstCorpusCase: fromCorpus ? source.corpus : null,
      confirmation: filed.confirmation,
      minimised: filed.minimisation && filed.isNew ? { steps: c.steps.length, data: c.data.length, runs: filed.minimisation.runs, stoppedBy: filed.minimisation.stoppedBy } : null,
    };
    entry.hitsThisRun++;
    seen.set(signature, entry);
    if (filed.flaky) {
      o.log.warn({ source, signature, folder: filed.folder }, `flaky: ${primary.message}`);
      o.say(`[${where}] FLAKY (did not reproduce in ${filed.confirmation?.runs} re-runs): ${primary.message} -> ${join(o.reportsDir, filed.folder)}`);
      return;
    }
    if (fromCorpus) corpusSummary.newDivergences++;
    else newDivergences++;
    const how = filed.isNew ? ` (reproduced ${filed.confirmation ? `${filed.confirmation.reproduced}/${filed.confirmation.runs}` : 'unconfirmed'}${filed.minimisation ? `; minimised in ${filed.minimisation.runs} runs, ${filed.minimisation.stoppedBy}` : ''})` : '';
    o.log.warn({ source, signature, folder: filed.folder, isNew: filed.isNew }, primary.message);
    o.say(`[${where}] ${filed.isNew ? 'NEW' : 'again'}: ${primary.message}${how} -> ${join(o.reportsDir, filed.folder)}`);
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
  const corpusDeadline = o.durationMs == null ? Infinity : started + o.corpusShare * o.durationMs;
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

  // Results arrive in any order; they are committed strictly in position order.
  const done = new Map<number, Attempt | 'skipped'>();
  let commits = Promise.resolve();
  const commitReady = async () => {
    while (accepting && done.has(committed)) {
      const attempt = done.get(committed)!;
      done.delete(committed);
      if (attempt !== 'skipped') await commit(sourceAt(committed), attempt);
      committed++;
      const cases = committed - corpusLimit;
      if (cases > 0 && (cases % 25 === 0 || cases === generated) && !halt.signal.aborted) {
        const now = performance.now();
        const rate = committed / ((now - started) / 1000);
        const left = deadline === null ? '' : `, ${Math.max(0, Math.round((deadline - now) / 1000))} s left`;
        o.say(`[${cases}${Number.isFinite(generated) ? `/${generated}` : ''}] ${rate.toFixed(1)} cases/s, new ${newDivergences}, known ${knownDivergences}${left}`);
      }
    }
  };

  let next = 0;
  async function worker() {
    while (!halt.signal.aborted && !draining && next < positions) {
      const position = next++;
      const source = sourceAt(position);
      const c = caseOf(source);
      try {
        // under --duration the corpus gets its share of the time, then the generated cases start
        if ('corpus' in source && performance.now() > corpusDeadline) {
          done.set(position, 'skipped');
        } else {
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
        }
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
        if (err instanceof CaseAborted) return;
        fatal ??= isNoSpace(err) ? new DiskFullError(`the reports directory ${o.reportsDir} is full: ${(err as Error).message}; reports already filed are intact`) : err;
        halt.abort();
      });
      await commits;
    }
  }
  await Promise.all(Array.from({ length: Math.min(o.jobs, positions) }, worker));
  await commits;
  await workDirsRemoved().catch((err: unknown) => {
    fatal ??= err;
  });
  clearTimeout(deadlineTimer);
  clearTimeout(graceTimer);
  o.stop?.removeEventListener('abort', onStop);
  if (fatal) throw fatal;
  const iterations = Math.max(0, committed - corpusLimit);
  if (draining && iterations < generated) stoppedEarly ??= 'duration';

  const total = processesSpawned() - processesBefore;
  const summary: RunSummary = {
    seed: o.seed,
    iterationsRequested: Number.isFinite(o.iterations) ? o.iterations : null,
    durationSeconds: o.durationMs == null ? null : o.durationMs / 1000,
    shard,
    iterations,
    stoppedEarly,
    elapsedSeconds: Math.round((performance.now() - started) / 10) / 100,
    jobs: o.jobs,
    subject: o.subject,
    tools: o.tools,
    newDivergences,
    knownDivergences,
    knownByEntry,
    signatures: [...signatures.values()],
    flaky: [...flaky.values()],
    corpus: corpusSummary,
    unusedKnown: Object.entries(knownByEntry)
      .filter(([, n]) => n === 0)
      .map(([id]) => id),
    expiredKnown: o.expiredKnown,
    setupErrors,
    processes: { total, perIteration: committed ? Math.round((caseProcesses / committed) * 10) / 10 : 0, filing: total - caseProcesses },
    coverage,
  };
  o.log.info({ childSeconds: Math.round(childMs) / 1000, elapsedSeconds: summary.elapsedSeconds, iterations, jobs: o.jobs }, 'run timing');
  await writeAtomic(join(o.reportsDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  return summary;
}

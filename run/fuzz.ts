import { join } from 'node:path';
import type { Logger } from 'pino';
import { processesSpawned } from '../exec/process.ts';
import { readerThreadsFor, startReaders } from '../exec/readers.ts';
import { CaseSetupError, runCase } from '../exec/run-case.ts';
import { workDirsRemoved } from '../exec/work-dir.ts';
import { caseAt } from '../generators/cases.ts';
import type { ImageFormat, OperationName, OutputMode } from '../model/case.ts';
import type { Resizer } from '../model/commands.ts';
import { DiskFullError, isNoSpace } from '../model/errors.ts';
import { caseIndexAt, casesInShard, type Shard } from '../model/shard.ts';
import { signatureOf } from '../oracles/finding.ts';
import type { CorpusEntry } from '../reporting/corpus.ts';
import { removeStaleStaging, type Report } from '../reporting/store.ts';
import { writeSummary, type RunSummary } from '../reporting/summary.ts';
import type { KnownDivergence } from '../triage/registry.ts';
import { triage, type Triage } from '../triage/triage.ts';
import { ensureSpace } from './disk.ts';
import type { MinimiseBudget } from './minimise.ts';
import { recordFinding, type CaseSource } from './record-finding.ts';
import { schedule, type Scheduler } from './schedule.ts';
import { RunTally, type Attempt } from './tally.ts';

// A fuzz run: the schedule of its cases (corpus first, then this shard's case indices), the commit
// of each case's result in order (triage, then a new finding recorded), and the summary.

export interface FuzzOptions {
  seed: number;
  /** Case indices below this are run (by this shard); Infinity: until the duration is spent. */
  iterations: number;
  /** The image formats of the generated cases (generators/cases.ts formatAt). */
  formats: readonly ImageFormat[];
  /** What every generated step asks the subject to print; null: the generator's mix. */
  output?: OutputMode | null;
  /** The operations of the generated steps (operations/table.ts); resize alone when absent. */
  ops?: readonly OperationName[];
  /** Time budget: no case starts after it; running ones get up to timeoutMs to finish, then are
   * stopped like an interrupted run. */
  durationMs?: number | null;
  /** Run only this shard's slice of the case indices (see model/shard.ts). */
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

/** This shard's corpus cases, in name order: case j goes to shard (j mod N) + 1. */
export const corpusInShard = (corpus: CorpusEntry[], shard: Shard | null) =>
  shard ? corpus.filter((_, j) => j % shard.count === shard.index - 1) : corpus;

/** The positions of a run: this shard's corpus cases (at most its share of an iteration
 * budget; a --duration budget is checked in time), then this shard's case indices. */
function runPositions(o: FuzzOptions) {
  const shard = o.shard ?? null;
  const corpus = corpusInShard(o.corpus, shard);
  const corpusCases = Number.isFinite(o.iterations)
    ? Math.min(corpus.length, Math.ceil(o.corpusShare * o.iterations))
    : corpus.length;
  const generated = casesInShard(shard, o.iterations);
  const sourceAt = (position: number): CaseSource =>
    position < corpusCases
      ? { corpus: corpus[position]!.name }
      : { seed: o.seed, iteration: caseIndexAt(shard, position - corpusCases) };
  const caseOf = (source: CaseSource) =>
    'corpus' in source
      ? corpus.find((e) => e.name === source.corpus)!.case
      : caseAt(source.seed, source.iteration, o.formats, o.output ?? null, o.ops);
  return { shard, corpus, corpusCases, generated, total: corpusCases + generated, sourceAt, caseOf };
}

const label = (source: CaseSource) => ('corpus' in source ? `corpus ${source.corpus}` : String(source.iteration));

export async function fuzz(o: FuzzOptions): Promise<RunSummary> {
  const started = performance.now();
  const processesBefore = processesSpawned();
  const plan = runPositions(o);
  const tally = new RunTally(o.registry, plan.corpus.length);
  const deadline = o.durationMs == null ? null : started + o.durationMs;
  // under --duration the corpus gets its share of the time, then the generated cases start
  const corpusDeadline = o.durationMs == null ? Infinity : started + o.corpusShare * o.durationMs;
  startReaders(readerThreadsFor(o.jobs));
  await removeStaleStaging(o.reportsDir);

  const runPosition = async (position: number, s: Scheduler): Promise<(Attempt & { triage?: Triage }) | 'skip'> => {
    const source = plan.sourceAt(position);
    if ('corpus' in source && performance.now() > corpusDeadline) return 'skip';
    const c = plan.caseOf(source);
    try {
      await ensureSpace(o.workdir, 'work directory', '--workdir');
      await ensureSpace(o.reportsDir, 'reports directory', '--reports');
      // triaged once, when runCase asks whether to keep the images; the commit reuses it
      let triaged: Triage | undefined;
      const result = await runCase(c, {
        subject: o.subject,
        timeoutMs: o.timeoutMs,
        workdir: o.workdir,
        signal: s.signal,
        wantArtifacts: (findings, steps) => (triaged = triage(c, { findings, steps }, o.registry)).fresh.length > 0,
      });
      return { c, result, triage: triaged! };
    } catch (err) {
      if (err instanceof CaseSetupError) return { c, setupError: err };
      if (isNoSpace(err))
        throw new DiskFullError(`no space left: ${(err as Error).message}; free space in --workdir and --reports`);
      throw err;
    }
  };

  const commit = async (position: number, attempt: Attempt & { triage?: Triage }, s: Scheduler) => {
    const source = plan.sourceAt(position);
    const where = label(source);
    tally.ran(source, attempt);
    if ('setupError' in attempt) {
      const err = attempt.setupError;
      o.log.error({ source, case: attempt.c, command: err.command }, `case could not be built: ${err.message}`);
      o.say(`[${where}] harness bug: the case could not be built: ${err.message}`);
      return;
    }
    const { c, result } = attempt;
    const t = attempt.triage ?? triage(c, result, o.registry);
    const steps = result.steps.map((st) => `${st.plan.kind}:${st.reference}/${st.subject}`);
    o.log.info({ source, steps, known: t.known.map((k) => k.entry.id), fresh: t.fresh.map(signatureOf) }, 'case done');
    const primary = t.fresh[0];
    if (!primary) {
      tally.triaged(source, t, null, null);
      return;
    }
    const signature = signatureOf(primary);
    if (!tally.seen(signature))
      o.say(
        `[${where}] ${primary.message}: ` +
          `confirming${o.minimise && !('corpus' in source) ? ' and minimising' : ''} before filing`,
      );
    const recorded = await recordFinding({ ...o, signal: s.signal }, c, result, primary, source).catch(
      (err: unknown) => {
        throw isNoSpace(err)
          ? new DiskFullError(
              `the reports directory ${o.reportsDir} is full: ${(err as Error).message}; ` +
                'reports already filed are intact',
            )
          : err;
      },
    );
    tally.triaged(source, t, signature, recorded);
    const folder = join(o.reportsDir, recorded.folder);
    if (recorded.flaky) {
      o.log.warn({ source, signature, folder: recorded.folder }, `flaky: ${primary.message}`);
      o.say(
        `[${where}] FLAKY (did not reproduce in ${recorded.confirmation?.runs} re-runs): ` +
          `${primary.message} -> ${folder}`,
      );
      return;
    }
    const confirmed = recorded.confirmation
      ? `${recorded.confirmation.reproduced}/${recorded.confirmation.runs}`
      : 'unconfirmed';
    const minimised = recorded.minimisation
      ? `; minimised in ${recorded.minimisation.runs} runs, ${recorded.minimisation.stoppedBy}`
      : '';
    const how = recorded.isNew ? ` (reproduced ${confirmed}${minimised})` : '';
    o.log.warn({ source, signature, folder: recorded.folder, isNew: recorded.isNew }, primary.message);
    o.say(`[${where}] ${recorded.isNew ? 'NEW' : 'again'}: ${primary.message}${how} -> ${folder}`);
    if (o.failFast) s.halt('fail-fast');
  };

  const progress = (committed: number) => {
    const cases = committed - plan.corpusCases;
    if (cases <= 0 || (cases % 25 !== 0 && cases !== plan.generated)) return;
    const now = performance.now();
    const rate = committed / ((now - started) / 1000);
    const left = deadline === null ? '' : `, ${Math.max(0, Math.round((deadline - now) / 1000))} s left`;
    const of = Number.isFinite(plan.generated) ? `/${plan.generated}` : '';
    o.say(
      `[${cases}${of}] ${rate.toFixed(1)} cases/s, new ${tally.newDivergences}, known ${tally.knownDivergences}${left}`,
    );
  };

  const ran = await schedule({
    positions: plan.total,
    jobs: o.jobs,
    run: runPosition,
    commit,
    committed: progress,
    stop: o.stop,
    durationMs: o.durationMs ?? null,
    graceMs: o.timeoutMs,
  });
  let fatal = ran.fatal;
  await workDirsRemoved().catch((err: unknown) => {
    fatal ??= err;
  });
  if (fatal) throw fatal;
  const iterations = Math.max(0, ran.committed - plan.corpusCases);
  const stoppedEarly = ran.stoppedEarly ?? (ran.draining && iterations < plan.generated ? 'duration' : null);

  const total = processesSpawned() - processesBefore;
  const summary: RunSummary = {
    seed: o.seed,
    iterationsRequested: Number.isFinite(o.iterations) ? o.iterations : null,
    durationSeconds: o.durationMs == null ? null : o.durationMs / 1000,
    shard: plan.shard,
    iterations,
    stoppedEarly,
    elapsedSeconds: Math.round((performance.now() - started) / 10) / 100,
    jobs: o.jobs,
    subject: o.subject,
    tools: o.tools,
    newDivergences: tally.newDivergences,
    knownDivergences: tally.knownDivergences,
    knownByEntry: tally.knownByEntry,
    signatures: [...tally.signatures.values()],
    flaky: [...tally.flaky.values()],
    corpus: tally.corpus,
    unusedKnown: tally.unusedKnown(),
    messageDiffers: tally.messageDiffers,
    expiredKnown: o.expiredKnown,
    setupErrors: tally.setupErrors,
    processes: {
      total,
      perIteration: ran.committed ? Math.round((tally.caseProcesses / ran.committed) * 10) / 10 : 0,
      filing: total - tally.caseProcesses,
    },
    coverage: tally.coverage,
  };
  o.log.info(
    {
      childSeconds: Math.round(tally.childMs) / 1000,
      elapsedSeconds: summary.elapsedSeconds,
      iterations,
      jobs: o.jobs,
    },
    'run timing',
  );
  await writeSummary(o.reportsDir, summary);
  return summary;
}

import { join } from 'node:path';
import type { Logger } from 'pino';
import { CaseSetupError, runCase, type CaseResult } from '../exec/run-case.ts';
import type { Case, OperationName, OutputMode } from '../model/case.ts';
import type { Resizer } from '../model/commands.ts';
import { CaseAborted } from '../model/errors.ts';
import { signatureOf, type StepFinding } from '../oracles/finding.ts';
import { saveSighting } from '../reporting/sighting.ts';
import {
  folderName,
  readReportIfAny,
  type Confirmation,
  type MinimisationRecord,
  type Origin,
  type Report,
} from '../reporting/store.ts';
import type { KnownDivergence } from '../triage/registry.ts';
import { triage } from '../triage/triage.ts';
import { caseArbitrary } from '../generators/cases.ts';
import { minimise, type MinimiseBudget } from './minimise.ts';

// What becomes of a case's new finding: a signature already in the store gets one more hit; a new
// one is stored only after it has been re-run (confirmation) and shrunk (minimisation), and one
// that never reproduces is kept apart as flaky. Every re-run is a fresh case directory.

export interface RecordingContext {
  reportsDir: string;
  subject: Resizer;
  tools: Report['tools'];
  registry: KnownDivergence[];
  timeoutMs: number;
  workdir: string;
  signal: AbortSignal;
  /** Re-runs before a new signature is filed; 0 files without confirming. */
  confirmRuns: number;
  /** null: file the case as generated. */
  minimise: MinimiseBudget | null;
  /** What every generated step asked the subject to print, when a run fixed it (--output). */
  output?: OutputMode | null;
  /** The operations the run's steps were drawn from (--ops). */
  ops?: readonly OperationName[];
  log: Logger;
}

/** Where the case came from: generated cases can be shrunk, corpus cases cannot. */
export type CaseSource = { seed: number; iteration: number } | { corpus: string };

export interface Recorded {
  folder: string;
  isNew: boolean;
  flaky: boolean;
  confirmation: Confirmation | null;
  minimisation: MinimisationRecord | null;
  /** The case stored (the minimal one, when shrunk). */
  stored: Case;
}

/** The case's first new finding: the one that names its report. */
const primaryOf = (c: Case, result: Pick<CaseResult, 'findings' | 'steps'>, registry: KnownDivergence[]) =>
  triage(c, result, registry).fresh[0] ?? null;

export async function recordFinding(
  ctx: RecordingContext,
  c: Case,
  result: CaseResult,
  primary: StepFinding,
  source: CaseSource,
): Promise<Recorded> {
  const origin: Origin =
    'corpus' in source
      ? { seed: null, iteration: null, corpus: source.corpus, date: new Date().toISOString() }
      : { ...source, date: new Date().toISOString() };
  const base = { finding: primary, case: c, result, originalCase: c, subject: ctx.subject, tools: ctx.tools, origin };
  if ((await readReportIfAny(join(ctx.reportsDir, folderName(primary)))) !== null) {
    const saved = await saveSighting(ctx.reportsDir, { ...base, minimisation: null, confirmation: null, flaky: false });
    return { ...saved, flaky: false, confirmation: null, minimisation: null, stored: c };
  }

  const signature = signatureOf(primary);
  const run = (candidate: Case, keep: boolean) =>
    runCase(candidate, {
      subject: ctx.subject,
      timeoutMs: ctx.timeoutMs,
      workdir: ctx.workdir,
      signal: ctx.signal,
      wantArtifacts: () => keep,
    });
  /** The finding with the same signature in a fresh run of `candidate`, or null. */
  const reproduces = async (candidate: Case) => {
    try {
      const found = primaryOf(candidate, await run(candidate, false), ctx.registry);
      return found && signatureOf(found) === signature ? found : null;
    } catch (err) {
      if (err instanceof CaseSetupError) return null;
      throw err;
    }
  };

  // Confirmation; an interrupted run files what it has, unconfirmed, rather than lose it
  let confirmation: Confirmation | null = null;
  let interrupted = false;
  if (ctx.confirmRuns > 0) {
    let reproduced = 0;
    try {
      for (let i = 0; i < ctx.confirmRuns; i++) if ((await reproduces(c)) !== null) reproduced++;
      confirmation = { runs: ctx.confirmRuns, reproduced };
    } catch (err) {
      if (!(err instanceof CaseAborted)) throw err;
      interrupted = true;
    }
  }
  const flaky = confirmation !== null && confirmation.reproduced === 0;

  let minimisation: Recorded['minimisation'] = null;
  let filedCase = c;
  let filedResult = result;
  let filedFinding = primary;
  if (!flaky && !interrupted && ctx.minimise && 'seed' in source) {
    const arbitrary = caseArbitrary(c.image.format, ctx.output ?? null, ctx.ops);
    const m = await minimise(source.seed, source.iteration, c, reproduces, ctx.minimise, primary.step, arbitrary);
    const { case: smallest, ...record } = m;
    minimisation = record;
    ctx.log.info(
      {
        signature,
        ...record,
        steps: [c.steps.length, smallest.steps.length],
        data: [c.data.length, smallest.data.length],
      },
      'minimised',
    );
    if (smallest !== c && m.stoppedBy !== 'interrupted') {
      // one more run, keeping the images, so that the report shows the case it stores
      try {
        const last = await run(smallest, true);
        const again = primaryOf(smallest, last, ctx.registry);
        if (again && signatureOf(again) === signature) [filedCase, filedResult, filedFinding] = [smallest, last, again];
      } catch (err) {
        if (!(err instanceof CaseAborted || err instanceof CaseSetupError)) throw err;
      }
    }
  }
  const saved = await saveSighting(ctx.reportsDir, {
    ...base,
    finding: filedFinding,
    case: filedCase,
    result: filedResult,
    minimisation,
    confirmation,
    flaky,
  });
  return { ...saved, flaky, confirmation, minimisation, stored: filedCase };
}

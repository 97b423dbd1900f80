import type { CaseResult, CaseSetupError } from '../exec/run-case.ts';
import type { Case } from '../model/case.ts';
import type { RunSummary, SignatureSeen } from '../reporting/summary.ts';
import { addCase, emptyCoverage } from '../triage/coverage.ts';
import type { KnownDivergence } from '../triage/registry.ts';
import type { Triage } from '../triage/triage.ts';
import type { CaseSource, Recorded } from './record-finding.ts';

// What a run has seen so far, counted as cases are committed: the figures summary.json reports.

export type Attempt = { c: Case; result: CaseResult } | { c: Case; setupError: CaseSetupError };

export class RunTally {
  readonly knownByEntry: Record<string, number>;
  readonly messageDiffers: RunSummary['messageDiffers'] = {};
  readonly signatures = new Map<string, SignatureSeen>();
  readonly flaky = new Map<string, SignatureSeen>();
  readonly setupErrors: RunSummary['setupErrors'] = [];
  readonly coverage = emptyCoverage();
  readonly corpus: RunSummary['corpus'];
  newDivergences = 0;
  knownDivergences = 0;
  /** Commands of the committed cases, and their summed wall time (for the log and benchmarks;
   * not in the summary, which does not depend on timing). */
  caseProcesses = 0;
  childMs = 0;

  constructor(registry: KnownDivergence[], corpusAvailable: number) {
    this.knownByEntry = Object.fromEntries(registry.map((e) => [e.id, 0]));
    this.corpus = { available: corpusAvailable, run: 0, newDivergences: 0, knownDivergences: 0 };
  }

  /** A case ran (or could not be built); its commands count either way. */
  ran(source: CaseSource, attempt: Attempt): void {
    if ('corpus' in source) this.corpus.run++;
    const commands = 'setupError' in attempt ? [attempt.setupError.command] : attempt.result.commands;
    this.caseProcesses += commands.length;
    this.childMs += commands.reduce((sum, r) => sum + r.durationMs, 0);
    if ('setupError' in attempt) {
      const where = 'corpus' in source ? `corpus case ${source.corpus}: ` : '';
      this.setupErrors.push({
        iteration: 'corpus' in source ? -1 : source.iteration,
        message: `${where}${attempt.setupError.message}`,
      });
    } else if (!('corpus' in source)) {
      addCase(this.coverage, attempt.c, attempt.result);
    }
  }

  /** A case's findings as triage sorted them; `recorded` when a new one was recorded. */
  triaged(source: CaseSource, t: Triage, signature: string | null, recorded: Recorded | null): SignatureSeen | null {
    for (const { entry } of t.known) this.knownByEntry[entry.id]! += 1;
    for (const { entry, stderr } of t.messageDiffers) {
      const seen = (this.messageDiffers[entry.id] ??= { findings: 0, stderr });
      seen.findings++;
    }
    const fromCorpus = 'corpus' in source;
    if (signature === null || recorded === null) {
      if (t.known.length > 0) {
        if (fromCorpus) this.corpus.knownDivergences++;
        else this.knownDivergences++;
      }
      return null;
    }
    const seen = recorded.flaky ? this.flaky : this.signatures;
    const { minimisation } = recorded;
    const entry = seen.get(signature) ?? {
      signature,
      folder: recorded.folder,
      hitsThisRun: 0,
      filedThisRun: recorded.isNew,
      firstIteration: fromCorpus ? null : source.iteration,
      firstCorpusCase: fromCorpus ? source.corpus : null,
      confirmation: recorded.confirmation,
      minimised:
        minimisation && recorded.isNew
          ? {
              steps: recorded.stored.steps.length,
              data: recorded.stored.data.length,
              runs: minimisation.runs,
              stoppedBy: minimisation.stoppedBy,
            }
          : null,
    };
    entry.hitsThisRun++;
    seen.set(signature, entry);
    if (recorded.flaky) return entry;
    if (fromCorpus) this.corpus.newDivergences++;
    else this.newDivergences++;
    return entry;
  }

  /** Whether this run has met the signature already (filed, hit or flaky). */
  seen(signature: string): boolean {
    return this.signatures.has(signature) || this.flaky.has(signature);
  }

  /** Registry entries that matched nothing. */
  unusedKnown(): string[] {
    return Object.entries(this.knownByEntry)
      .filter(([, n]) => n === 0)
      .map(([id]) => id);
  }
}

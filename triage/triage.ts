import type { CaseResult } from '../exec/run-case.ts';
import type { Case } from '../model/case.ts';
import type { StepFinding } from '../oracles/finding.ts';
import { caseFacts, judge, type KnownDivergence } from './registry.ts';

export interface Triage {
  /** Findings the registry explains, with the entry that explains each. */
  known: { finding: StepFinding; entry: KnownDivergence }[];
  /** Findings nobody expected, in oracle order. */
  fresh: StepFinding[];
  /** The case's primary new finding when an entry would explain it but for its message pattern,
   * with the subject's first line of stderr: the entry's message is stale, or the subject refuses
   * for a new reason. */
  messageDiffers: { finding: StepFinding; entry: KnownDivergence; stderr: string }[];
}

/** Splits a case's findings into known and new. The first new finding is the case's primary one:
 * it names the report, so one bug that trips several oracles still files a single report. */
export function triage(c: Case, result: Pick<CaseResult, 'findings' | 'steps'>, registry: KnownDivergence[]): Triage {
  const out: Triage = { known: [], fresh: [], messageDiffers: [] };
  for (const finding of result.findings) {
    const step = result.steps[finding.step]!;
    const { entry, messageDiffers } = judge(registry, finding, caseFacts(c, step), step.subjectStderr);
    if (entry) out.known.push({ finding, entry });
    else out.fresh.push(finding);
    // only the finding that files the case's report: a near miss on a symptom of another cause
    // (a grammar refusal's outcome finding) says nothing about the entry
    if (out.fresh.length !== 1 || out.fresh[0] !== finding) continue;
    const stderr = step.subjectStderr.split('\n')[0] ?? '';
    for (const e of messageDiffers) out.messageDiffers.push({ finding, entry: e, stderr });
  }
  return out;
}

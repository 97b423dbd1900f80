import type { StepKind } from '../model/plan.ts';
import type { CommandRecord } from '../model/commands.ts';
import type { Finding, Side } from './finding.ts';

export type OutcomeClass = 'ok' | 'refused' | 'crashed' | 'timed-out';

export function classifyOutcome(
  r: Pick<CommandRecord, 'exitCode' | 'signal' | 'timedOut' | 'spawnError'>,
): OutcomeClass {
  if (r.timedOut) return 'timed-out';
  if (r.signal !== null) return 'crashed';
  return r.exitCode === 0 ? 'ok' : 'refused';
}

function abnormal(side: Side, outcome: OutcomeClass, signal: string | null, stepKind: StepKind): Finding | null {
  if (outcome === 'crashed') {
    return {
      oracle: 'outcome',
      kind: 'crashed',
      side,
      detail: `signal=${signal},step=${stepKind}`,
      message: `${side} was killed by ${signal} on a ${stepKind} step`,
    };
  }
  if (outcome === 'timed-out') {
    return {
      oracle: 'outcome',
      kind: 'timed-out',
      side,
      detail: `step=${stepKind}`,
      message: `${side} ran past the timeout on a ${stepKind} step and was killed`,
    };
  }
  return null;
}

/** Different outcome classes are a divergence; a crash or timeout is a finding on its own, even
 * when the other side did the same. Any two refusals agree: exit codes and messages differ freely. */
export function outcomeOracle(reference: CommandRecord, subject: CommandRecord, stepKind: StepKind): Finding[] {
  const ref = classifyOutcome(reference);
  const sub = classifyOutcome(subject);
  const findings = [
    abnormal('subject', sub, subject.signal, stepKind),
    abnormal('reference', ref, reference.signal, stepKind),
  ].filter((f): f is Finding => f !== null);
  if (findings.length === 0 && ref !== sub) {
    findings.push({
      oracle: 'outcome',
      kind: 'outcome-mismatch',
      side: 'subject',
      detail: `reference=${ref},subject=${sub},step=${stepKind}`,
      message: `qemu-img ${ref === 'ok' ? 'accepted' : 'refused'} a ${stepKind} step that the subject ${sub === 'ok' ? 'accepted' : 'refused'}`,
      evidence: { referenceExit: reference.exitCode, subjectExit: subject.exitCode, subjectStderr: subject.stderr },
    });
  }
  return findings;
}

import type { CheckObservation } from './check.ts';
import type { CommandRecord } from '../model/commands.ts';
import type { Finding, Side } from './finding.ts';
import { firstLine, messageLine, normaliseMessage } from './message.ts';

export type OutcomeClass = 'ok' | 'refused' | 'crashed' | 'timed-out';

/** `acceptedExits`: the exit codes of a step that did what it was asked (its operation's; a
 * repair that leaves damage behind exits 2 or 3). */
export function classifyOutcome(
  r: Pick<CommandRecord, 'exitCode' | 'signal' | 'timedOut' | 'spawnError'>,
  acceptedExits: readonly number[] = [0],
): OutcomeClass {
  if (r.timedOut) return 'timed-out';
  if (r.signal !== null) return 'crashed';
  return r.exitCode !== null && acceptedExits.includes(r.exitCode) ? 'ok' : 'refused';
}

/** What the subject made of the size, when it accepted a step qemu-img refused: the virtual size
 * of its result against the size before and the one asked for (null where SIZE does not parse). */
export interface AcceptedSize {
  before: number;
  target: number | null;
  /** The subject's virtual size after the step; null when its image cannot be read. */
  after: number | null;
  /** qemu-img check of the subject's result, which qemu gives none to compare with (absent for
   * raw, and in older observations). */
  check?: CheckObservation;
}

/** How the subject's result size relates to the request, when it accepted what qemu-img refused:
 * `as-asked`, `below-asked`, `above-asked`, `unchanged`, `changed` (SIZE does not parse) or
 * `unreadable`. */
export function sizeRelation({ before, target, after }: AcceptedSize): string {
  if (after === null) return 'unreadable';
  if (after === before) return 'unchanged';
  if (target === null) return 'changed';
  if (after === target) return 'as-asked';
  return after < target ? 'below-asked' : 'above-asked';
}

/** The words a side refused with: its first line of stderr, normalised, or its exit code. */
const refusal = (r: CommandRecord) =>
  r.spawnError !== null
    ? `could not start: ${/\b(E[A-Z]+)\b/.exec(r.spawnError)?.[1] ?? normaliseMessage(r.spawnError)}`
    : normaliseMessage(messageLine(r.stderr)) || `exit ${r.exitCode} without a message`;

function abnormal(side: Side, r: CommandRecord, outcome: OutcomeClass, stepKind: string): Finding | null {
  const evidence = { stepKind, signal: r.signal, stderr: firstLine(r.stderr) };
  if (outcome === 'crashed') {
    // a panic or assertion message names the cause like a crash's top frame; without one the
    // step kind is the only hint
    const said = normaliseMessage(r.stderr);
    return {
      oracle: 'outcome',
      kind: 'crashed',
      side,
      detail: `signal=${r.signal},${said ? `message=${said}` : `step=${stepKind}`}`,
      message: `${side} was killed by ${r.signal} on a ${stepKind} step`,
      evidence,
    };
  }
  if (outcome === 'timed-out') {
    return {
      oracle: 'outcome',
      kind: 'timed-out',
      side,
      detail: `step=${stepKind}`,
      message: `${side} ran past the timeout on a ${stepKind} step and was killed`,
      evidence,
    };
  }
  return null;
}

/** Different outcome classes are a divergence; a crash or timeout is a finding on its own, even
 * when the other side did the same. Any two refusals agree: exit codes and messages differ freely.
 * A refusal only one side makes is named by the refusing side's message (a refusal for a new reason
 * is a new signature, whatever the step); an acceptance qemu-img refused, by qemu-img's message. */
export function outcomeOracle(
  reference: CommandRecord,
  subject: CommandRecord,
  stepKind: string,
  accepted: AcceptedSize | null = null,
  acceptedExits: readonly number[] = [0],
): Finding[] {
  const ref = classifyOutcome(reference, acceptedExits);
  const sub = classifyOutcome(subject, acceptedExits);
  const findings = [abnormal('subject', subject, sub, stepKind), abnormal('reference', reference, ref, stepKind)];
  const out = findings.filter((f): f is Finding => f !== null);
  if (out.length > 0 || ref === sub) return out;
  const evidence = {
    reference: ref,
    subject: sub,
    stepKind,
    referenceExit: reference.exitCode,
    subjectExit: subject.exitCode,
    referenceStderr: reference.stderr,
    subjectStderr: subject.stderr,
  };
  if (sub === 'refused') {
    const said = refusal(subject);
    const message =
      `the subject refused a ${stepKind} step that qemu-img accepted: ` + (firstLine(subject.stderr) || said);
    return [{ oracle: 'outcome', kind: 'refused', side: 'subject', detail: said, message, evidence }];
  }
  // named by qemu's reason alone: where the size landed (as asked, rounded) is a second behaviour,
  // said in the message, and would split one cause over several signatures
  const size = accepted ? sizeRelation(accepted) : 'unknown';
  const said = refusal(reference);
  const message =
    `the subject accepted a ${stepKind} step that qemu-img refused ` + `(${messageLine(reference.stderr) || said})`;
  return [
    {
      oracle: 'outcome',
      kind: 'accepted',
      side: 'subject',
      detail: `qemu-img: ${said.replace(/^qemu-img: /, '')}`,
      message: `${message}; the subject's size: ${accepted?.after ?? 'unreadable'} (${size})`,
      evidence: { ...evidence, size: accepted },
    },
  ];
}

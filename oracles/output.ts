import type { OutputMode } from '../model/case.ts';
import type { CommandRecord } from '../model/commands.ts';
import type { Case } from '../model/case.ts';
import type { Finding } from './finding.ts';
import { normaliseMessage } from './message.ts';
import { classifyOutcome } from './outcome.ts';

// The subject's own report of what it did. In human mode its words must be qemu-img's
// (`Image resized.`); with -q it prints nothing; with --output json its report must say what the
// images show: the action, the virtual size before (the size the step started from) and after
// (the subject's result), and the file's new length. qemu-img has no JSON: the check is against
// the images.

export interface OutputObservation {
  case: Case;
  index: number;
  /** What the subject was asked to print (outputModeOf). */
  output: OutputMode;
  reference: CommandRecord;
  subject: CommandRecord;
  /** The virtual size of the subject's image right before the step, as read from the image (null
   * where it could not be read). */
  sizeBefore: number | null;
  /** The subject's image after the step, for a JSON report: its virtual size and file length. */
  subjectAfter: { size: number | null; fileLength: number | null } | null;
}

const JSON_KEYS = ['filename', 'format', 'action', 'old_virtual_size', 'new_virtual_size', 'new_file_size'] as const;

/** The fields of a JSON report that disagree with the images, sorted; null when it is not a
 * JSON object, and the keys it lacks. */
function jsonDisagreements(o: OutputObservation): { wrong: string[]; missing: string[] } | null {
  let report: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(o.subject.stdout);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
    report = parsed as Record<string, unknown>;
  } catch {
    return null;
  }
  const missing = JSON_KEYS.filter((k) => !(k in report));
  const before = o.sizeBefore;
  const after = o.subjectAfter?.size ?? null;
  const action =
    after === null || before === null ? null : after > before ? 'grow' : after < before ? 'shrink' : 'noop';
  const expected: Record<string, unknown> = {
    format: o.case.image.format,
    action,
    old_virtual_size: before,
    new_virtual_size: after,
    new_file_size: o.subjectAfter?.fileLength ?? null,
  };
  const wrong = Object.entries(expected)
    .filter(([k, v]) => k in report && v !== null && report[k] !== v)
    .map(([k]) => k)
    .sort();
  return { wrong, missing };
}

export function outputOracle(o: OutputObservation): Finding[] {
  if (classifyOutcome(o.subject) !== 'ok') return [];
  const base = { oracle: 'output' as const, side: 'subject' as const };
  const said = o.subject.stdout;
  const evidence = { output: o.output, stdout: said, referenceStdout: o.reference.stdout };
  if (o.output === 'quiet') {
    if (said.trim() === '') return [];
    const message = `the subject printed ${JSON.stringify(said.slice(0, 200))} with -q`;
    return [{ ...base, kind: 'quiet-printed', detail: normaliseMessage(said), message, evidence }];
  }
  if (o.output === 'human') {
    // qemu-img's words for a step it also accepted
    if (classifyOutcome(o.reference) !== 'ok' || said === o.reference.stdout) return [];
    const printed = JSON.stringify(said.slice(0, 200));
    const message = `the subject printed ${printed} where qemu-img printed ${JSON.stringify(o.reference.stdout)}`;
    return [{ ...base, kind: 'stdout-differs', detail: normaliseMessage(said) || 'nothing', message, evidence }];
  }
  const found = jsonDisagreements(o);
  if (found === null) {
    const message = `the subject's --output json is not a JSON object: ${JSON.stringify(said.slice(0, 200))}`;
    return [{ ...base, kind: 'json-invalid', detail: 'not-an-object', message, evidence }];
  }
  const out: Finding[] = [];
  if (found.missing.length > 0) {
    const message = `the subject's JSON report lacks ${found.missing.join(', ')}`;
    out.push({ ...base, kind: 'json-incomplete', detail: found.missing.join(','), message, evidence });
  }
  if (found.wrong.length > 0) {
    const message = `the subject's JSON report disagrees with the images in ${found.wrong.join(', ')}`;
    out.push({
      ...base,
      kind: 'json-wrong',
      detail: found.wrong.join(','),
      message,
      evidence: { ...evidence, subjectAfter: o.subjectAfter },
    });
  }
  return out;
}

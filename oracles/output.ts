import {
  opOf,
  type BitmapStep,
  type Case,
  type OutputMode,
  type RebaseStep,
  type SnapshotStep,
} from '../model/case.ts';
import { COMMIT_JSON_KEYS } from '../operations/commit/judge.ts';
import { rebaseJsonKeys } from '../operations/rebase/judge.ts';
import { BITMAP_JSON_KEYS, bitmapJsonExpected } from '../operations/bitmap/judge.ts';
import type { CommandRecord } from '../model/commands.ts';
import type { ImageState } from '../model/state.ts';
import { AMEND_JSON_KEYS, amendJsonExpected } from '../operations/amend/judge.ts';
import { normaliseListing, snapshotJsonDisagreements } from '../operations/snapshot/judge.ts';
import type { Finding } from './finding.ts';
import { normaliseMessage } from './message.ts';
import { classifyOutcome } from './outcome.ts';

// The subject's own report of what it did. In human mode its words must be qemu-img's (`Image
// resized.`; nothing for amend and the mutating snapshot modes; a snapshot listing but for its
// dates); with -q it prints nothing; with --output json its report must say what the images show,
// per operation (a resize's action and sizes, an amend's compat and lazy_refcounts, a listing's
// snapshots). qemu-img has no JSON: the check is against the images.

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
  /** A qcow2 subject's image as read before and after the step (an amend's report says them), and
   * its snapshots after it (a listing names them). Absent where not read. */
  stateBefore?: ImageState | null;
  stateAfter?: ImageState | null;
  snapshotsAfter?: { id: string; name: string }[] | null;
}

const RESIZE_JSON_KEYS = ['filename', 'format', 'action', 'old_virtual_size', 'new_virtual_size', 'new_file_size'];

/** What a step's JSON report must hold, by operation: the keys, and the values the images give
 * (null: not read, not judged). */
function expectedJson(o: OutputObservation): { keys: readonly string[]; values: Record<string, unknown> } {
  const step = o.case.steps[o.index]!;
  if (opOf(step) === 'amend')
    return { keys: AMEND_JSON_KEYS, values: amendJsonExpected(o.stateBefore ?? null, o.stateAfter ?? null) };
  if (opOf(step) === 'bitmap')
    return { keys: BITMAP_JSON_KEYS, values: bitmapJsonExpected(step as BitmapStep, o.stateAfter ?? null) };
  // the overlay's format: qcow2 or vmdk
  const overlay = { overlay_format: o.case.image.format };
  if (opOf(step) === 'commit') return { keys: COMMIT_JSON_KEYS, values: overlay };
  if (opOf(step) === 'rebase') return { keys: rebaseJsonKeys(step as RebaseStep), values: overlay };
  const before = o.sizeBefore;
  const after = o.subjectAfter?.size ?? null;
  const action =
    after === null || before === null ? null : after > before ? 'grow' : after < before ? 'shrink' : 'noop';
  return {
    keys: RESIZE_JSON_KEYS,
    values: {
      format: o.case.image.format,
      action,
      old_virtual_size: before,
      new_virtual_size: after,
      new_file_size: o.subjectAfter?.fileLength ?? null,
    },
  };
}

/** The fields of a JSON report that disagree with the images, sorted, and the keys it lacks; null
 * when it is not JSON of the shape the operation prints. */
function jsonDisagreements(o: OutputObservation): { wrong: string[]; missing: string[] } | null {
  const step = o.case.steps[o.index]!;
  let report: unknown;
  try {
    report = o.subject.stdout.trim() === '' ? undefined : JSON.parse(o.subject.stdout);
  } catch {
    return null;
  }
  if (opOf(step) === 'snapshot')
    return snapshotJsonDisagreements(step as SnapshotStep, report, o.snapshotsAfter ?? null);
  if (typeof report !== 'object' || report === null || Array.isArray(report)) return null;
  const fields = report as Record<string, unknown>;
  const { keys, values } = expectedJson(o);
  const missing = keys.filter((k) => !(k in fields));
  const wrong = Object.entries(values)
    .filter(([k, v]) => k in fields && v !== null && fields[k] !== v)
    .map(([k]) => k)
    .sort();
  return { wrong, missing };
}

/** The subject's words against qemu-img's, with what differs from run to run taken out. */
const sameWords = (o: OutputObservation) => {
  const step = o.case.steps[o.index]!;
  const plain = (t: string) => (opOf(step) === 'snapshot' ? normaliseListing(t) : t);
  return plain(o.subject.stdout) === plain(o.reference.stdout);
};

export function outputOracle(o: OutputObservation): Finding[] {
  if (classifyOutcome(o.subject) !== 'ok') return [];
  const base = { oracle: 'output' as const, side: 'subject' as const };
  const said = o.subject.stdout;
  const evidence = { output: o.output, stdout: said, referenceStdout: o.reference.stdout };
  // -q silences nothing of a snapshot step (qemu-img's listing prints all the same): its words
  const mode = o.output === 'quiet' && opOf(o.case.steps[o.index]!) === 'snapshot' ? 'human' : o.output;
  if (mode === 'quiet') {
    if (said.trim() === '') return [];
    const message = `the subject printed ${JSON.stringify(said.slice(0, 200))} with -q`;
    return [{ ...base, kind: 'quiet-printed', detail: normaliseMessage(said), message, evidence }];
  }
  if (mode === 'human') {
    // qemu-img's words for a step it also accepted
    if (classifyOutcome(o.reference) !== 'ok' || sameWords(o)) return [];
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

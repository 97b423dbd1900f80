import { isResize, type Case } from '../model/case.ts';
import type { CommandRecord } from '../model/commands.ts';
import { isPlainForm, otherReadings, sizeForm } from '../model/size.ts';
import type { Finding } from './finding.ts';
import { classifyOutcome } from './outcome.ts';

// How the two tools read the step's SIZE. A step written other than in plain bytes (`1.5M`,
// `2048b`, `64K`, `1G`...) that the tools treat differently because of how it is written is a
// grammar difference, named by the spelling, whatever else the step does: the subject refusing it
// with a message that quotes the size, accepting what qemu-img cannot parse, or both accepting and
// the subject's size being one of the other ways to read it (b as sectors, k as 1000, a fraction
// cut off). Ranked first: a refusal of `1.5M` is about the grammar, not about the image.

export interface SizeObservation {
  case: Case;
  index: number;
  reference: CommandRecord;
  subject: CommandRecord;
  /** The subject's virtual size right before the step, as read from its image. */
  sizeBefore: number | null;
  /** Virtual sizes after the step: both when both accepted it, the subject's alone when only
   * qemu-img refused. */
  sizes: { reference: number | null; subject: number | null } | null;
}

/** qemu-img's own words when it cannot parse SIZE (qemu-img.c, qemu's size parser). */
const QEMU_PARSE_ERROR = /Invalid image size specified|Parameter 'size' expects/;

export function sizeGrammarOracle(o: SizeObservation): Finding[] {
  const step = o.case.steps[o.index]!;
  if (!isResize(step)) return [];
  const size = step.size;
  const form = sizeForm(size);
  if (isPlainForm(form)) return [];
  const ref = classifyOutcome(o.reference);
  const sub = classifyOutcome(o.subject);
  const base = { oracle: 'size-grammar' as const, side: 'subject' as const, detail: `form=${form}` };
  const evidence = { size, form, referenceStderr: o.reference.stderr, subjectStderr: o.subject.stderr };
  if (ref === 'ok' && sub === 'refused' && o.subject.stderr.includes(size)) {
    const message = `the subject refused SIZE ${size} (${form}), which qemu-img read and accepted`;
    return [{ ...base, kind: 'refused', message, evidence }];
  }
  if (ref === 'refused' && sub === 'ok' && QEMU_PARSE_ERROR.test(o.reference.stderr)) {
    const message = `the subject accepted SIZE ${size} (${form}), which qemu-img cannot parse`;
    return [{ ...base, kind: 'accepted', message, evidence }];
  }
  const { reference, subject } = o.sizes ?? { reference: null, subject: null };
  if (subject === null || reference === subject || o.sizeBefore === null) return [];
  if (!otherReadings(size, o.sizeBefore).includes(subject)) return [];
  // qemu-img refusing what its own reading makes of SIZE (a shrink without --shrink) is the
  // same difference
  if (reference === null && !(ref === 'refused' && sub === 'ok')) return [];
  const qemuRead =
    reference === null ? `refused its reading (${o.reference.stderr.split('\n')[0]})` : `as ${reference}`;
  const message = `the subject read SIZE ${size} (${form}) as ${subject} bytes, qemu-img ${qemuRead}`;
  return [{ ...base, kind: 'read-differently', message, evidence: { ...evidence, reference, subject } }];
}

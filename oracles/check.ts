import { INCOMPAT_DIRTY } from '../qcow2/format.ts';
import type { StructureObservation } from '../qcow2/structure.ts';
import type { Finding, Side } from './finding.ts';
import { normaliseMessage } from './message.ts';
import { checkDamage, damageDetail, isGarbled, parseCheckComplaints, type CheckComplaints } from './refcount-damage.ts';

/** `qemu-img check --output=json`: counters appear only when non-zero. */
export interface CheckReport {
  'check-errors': number;
  corruptions?: number;
  leaks?: number;
  'allocated-clusters'?: number;
  'image-end-offset'?: number;
}

export interface CheckObservation {
  exitCode: number | null;
  /** null when the output was not a check report (the image could not be opened). */
  report: CheckReport | null;
  stderr: string;
}

export function parseCheck(exitCode: number | null, stdout: string, stderr: string): CheckObservation {
  let report: CheckReport | null = null;
  try {
    const parsed = JSON.parse(stdout) as CheckReport;
    if (typeof parsed['check-errors'] === 'number') report = parsed;
  } catch {
    // not JSON: qemu-img printed only an error
  }
  return { exitCode, report, stderr };
}

export const isClean = (c: CheckObservation) =>
  c.exitCode === 0 && c.report !== null && !c.report.corruptions && !c.report.leaks && c.report['check-errors'] === 0;

function checkFinding(
  side: Side,
  c: CheckObservation,
  structure: StructureObservation | null,
  otherHasLeaks: boolean,
  before: StructureObservation | null,
): Finding | null {
  const r = c.report;
  const base = { oracle: 'check' as const, side };
  const evidence = { exitCode: c.exitCode, report: r, stderr: c.stderr };
  if (r === null) {
    return {
      ...base,
      kind: 'check-failed',
      detail: normaliseMessage(c.stderr) || `exit=${c.exitCode}`,
      message: `qemu-img check could not check the ${side} image: ${c.stderr.trim()}`,
      evidence,
    };
  }
  const complaints = parseCheckComplaints(c.stderr, structure?.readable ? structure.header.clusterBits : 16);
  const damage = (kind: 'corruptions' | 'leaks') => {
    const bits = structure?.readable ? structure.header.refcountBits : 16;
    const classes = checkDamage(complaints, structure, kind, before);
    return {
      detail: damageDetail(classes, bits, garbled(complaints, structure, bits)) || 'unexplained',
      evidence: { ...evidence, classes: [...new Set(classes.map((x) => x.class))].sort() },
    };
  };
  if (r.corruptions) {
    const message = `qemu-img check found ${r.corruptions} corruptions in the ${side} image`;
    return { ...base, kind: 'corruptions', message, ...damage('corruptions') };
  }
  if (r['check-errors']) {
    const message = `qemu-img check hit ${r['check-errors']} errors on the ${side} image`;
    return { ...base, kind: 'check-errors', detail: normaliseMessage(c.stderr) || 'check-errors', message, evidence };
  }
  if (r.leaks && !otherHasLeaks) {
    const message = `qemu-img check found ${r.leaks} leaked clusters in the ${side} image and none in the other`;
    return { ...base, kind: 'leaks', message, ...damage('leaks') };
  }
  return null;
}

/** Any corruption or check error in the subject's result is a finding; leaks only where qemu's
 * result has none. The reference check is needed only when the subject's is not clean. Damage is
 * named by the structures the damaged clusters belong to (refcount-damage.ts), which each image's
 * structure (when given) tells. */
/** Whether an image's header carries the dirty bit: its refcounts lag behind its tables by design
 * (lazy refcounts) until something opens it for writing and repairs them. */
const dirty = (s: StructureObservation | null) =>
  s?.readable === true && (BigInt(s.header.incompatibleFeatures) & INCOMPAT_DIRTY) !== 0n;

/** Garbled refcount blocks, by what qemu-img check lists or, more completely, by what the reader saw
 * of the same image (check does not list clusters past the end of the file). */
function garbled(complaints: CheckComplaints, structure: StructureObservation | null, bits: number): boolean {
  if (isGarbled(complaints.refcounts, complaints.refcounts.length, bits)) return true;
  if (!structure?.readable || !structure.refcountsChecked) return false;
  const { undercounted, overcounted, leaked } = structure.mismatchCounts;
  return isGarbled(structure.refcountMismatches, undercounted + overcounted + leaked, bits);
}

export function checkOracle(
  subject: CheckObservation,
  reference: CheckObservation | null,
  structures: {
    subject: StructureObservation | null;
    reference: StructureObservation | null;
    /** The subject's image before the step: what clusters leaked by it were. */
    subjectBefore?: StructureObservation | null;
  } = { subject: null, reference: null },
): Finding[] {
  const refLeaks = Boolean(reference?.report?.leaks);
  // qemu's result before the step was what the subject's was: what leaked clusters had been
  const before = structures.subjectBefore ?? null;
  const qemus = reference ? checkFinding('reference', reference, structures.reference, true, before) : null;
  const own = checkFinding('subject', subject, structures.subject, refLeaks, before);
  // damage qemu's own result has the same way is qemu's: reported on its side, not the subject's
  const findings = [own && qemus && own.kind === qemus.kind && own.detail === qemus.detail ? null : own, qemus];
  // a step that leaves qemu's result dirty too (a read-only one, a listing) leaves the refcounts
  // lagging on both sides: what check says of them is the dirty image's, not a difference
  const bothDirty = dirty(structures.subject) && dirty(structures.reference);
  return findings.filter(
    (f): f is Finding => f !== null && !(bothDirty && (f.kind === 'corruptions' || f.kind === 'leaks')),
  );
}

import type { Case } from '../model/case.ts';
import { guestRegion } from '../model/plan.ts';
import type { Finding } from './finding.ts';
import { normaliseMessage } from './message.ts';

/** Whether each result reads zeros in the 512 bytes where they first differ. */
export interface MismatchSector {
  referenceReadsZero: boolean;
  subjectReadsZero: boolean;
}

export interface CompareObservation {
  /** `qemu-img compare` exit: 0 same, 1 different, 2+ error. */
  exitCode: number | null;
  stdout: string;
  stderr: string;
  /** Virtual sizes from qemu-img info; null where info failed (the info oracle reports that). */
  referenceSize: number | null;
  subjectSize: number | null;
  /** Read where they first differ, when they do. */
  sector?: MismatchSector | null;
}

/** Where the two results first differ, as `qemu-img compare` printed it; null when it did not. */
export function firstMismatch(c: Pick<CompareObservation, 'exitCode' | 'stdout'>): number | null {
  const at = c.exitCode === 1 ? /offset (\d+)/.exec(c.stdout)?.[1] : undefined;
  return at === undefined ? null : Number(at);
}

/** What both results read in the partial cluster a shrink kept and a later grow exposed, when the
 * first mismatch lies there (see regrowWindows in model/plan.ts). */
export interface RegrowProbe {
  window: { start: number; end: number };
  referenceReadsZero: boolean;
  subjectReadsZero: boolean;
}

/** Where the compared results stand in their case: the difference is named by where it lies
 * relative to the steps (model/plan.ts guestRegion). `workloadSize`: after-use's grown size. */
export interface CompareContext {
  case: Case;
  step: number;
  workloadSize?: number | null;
}

/** How the subject's size differs from qemu's: larger or smaller, and whether it sits on a
 * cluster boundary qemu's does not (a rounding). */
function sizeDetail(reference: number, subject: number, clusterSize: number | null): string {
  const rounded = clusterSize !== null && subject % clusterSize === 0 && reference % clusterSize !== 0;
  return `subject-${subject < reference ? 'smaller' : 'larger'}${rounded ? ',at-cluster-boundary' : ''}`;
}

/** What each side reads where they first differ: the subject's zeros where qemu shows data (data
 * lost), data where qemu reads zeros (stale or garbage bytes), or data on both sides. */
const sectorText = (s: MismatchSector | null) =>
  s === null
    ? 'read=unknown'
    : s.subjectReadsZero
      ? 'subject=zeros'
      : s.referenceReadsZero
        ? 'subject=data,qemu=zeros'
        : 'both=data';

/** Guest content must be identical. `qemu-img compare` without -s only warns about a size
 * difference, so sizes are compared explicitly; -s is not used: allocation legitimately differs.
 * A difference in a regrow window where qemu's result shows old bytes and the subject's reads
 * zeros is qemu's quirk, not the subject's bug: it is reported on the reference side. */
export function contentOracle(
  c: CompareObservation,
  regrow: RegrowProbe | null = null,
  where: CompareContext | null = null,
): Finding[] {
  const base = { oracle: 'content' as const, side: 'subject' as const };
  if (c.referenceSize !== null && c.subjectSize !== null && c.referenceSize !== c.subjectSize) {
    const message = `virtual sizes differ: qemu ${c.referenceSize}, subject ${c.subjectSize}`;
    const detail = sizeDetail(c.referenceSize, c.subjectSize, where?.case.image.clusterSize ?? null);
    return [
      {
        ...base,
        kind: 'size-differs',
        detail,
        message,
        evidence: { referenceSize: c.referenceSize, subjectSize: c.subjectSize },
      },
    ];
  }
  if (c.exitCode === 0) return [];
  if (c.exitCode === 1) {
    if (regrow && !regrow.referenceReadsZero && regrow.subjectReadsZero) return [regrowQuirk(regrow.window)];
    // in a regrow window qemu's own bytes are its quirk: the subject is judged against zeros there
    const sector = c.sector && regrow ? { ...c.sector, referenceReadsZero: true } : (c.sector ?? null);
    const at = firstMismatch(c);
    const region =
      at !== null && where ? guestRegion(where.case, where.step, at, where.workloadSize ?? null) : 'unknown';
    return [
      {
        ...base,
        kind: 'content-differs',
        detail: `region=${region},${sectorText(sector)}`,
        message: `guest content differs${at !== null ? ` first at offset ${at} (${region})` : ''}`,
        evidence: { firstMismatch: at, region, stdout: c.stdout },
      },
    ];
  }
  return [
    {
      ...base,
      kind: 'compare-failed',
      detail: normaliseMessage(c.stderr) || `exit=${c.exitCode}`,
      message: `qemu-img compare failed: ${c.stderr.trim()}`,
      evidence: { exitCode: c.exitCode },
    },
  ];
}

const regrowQuirk = (window: RegrowProbe['window']): Finding => ({
  oracle: 'content',
  kind: 'stale-bytes-after-regrow',
  side: 'reference',
  detail: 'partial-cluster',
  message:
    'qemu-img shows old bytes again in the partial cluster kept by a shrink ' +
    'and exposed by a later grow (a qemu quirk); ' +
    'the subject reads zeros there',
  evidence: { window },
});

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
 * first mismatch lies there (see regrowWindows). */
export interface RegrowProbe {
  window: { start: number; end: number };
  referenceReadsZero: boolean;
  subjectReadsZero: boolean;
}

/** The virtual size of qemu's result before and after one step, as observed on the image; `after`
 * is null where the step was refused. */
export interface ObservedStep {
  before: number;
  after: number | null;
}

/** Guest ranges where qemu shows old bytes again after the steps observed so far: a shrink to a
 * size inside a cluster keeps that cluster whole, and a later grow makes the rest of it readable (a
 * qemu quirk, see the reference notes). One range per such shrink, to the end of its cluster. */
export function regrowWindows(history: ObservedStep[], clusterSize: number): { start: number; end: number }[] {
  return history.flatMap(({ before, after: s }, j) => {
    if (s === null || s >= before || s % clusterSize === 0) return [];
    const regrown = history.slice(j + 1).some((q) => q.after !== null && q.after > s);
    return regrown ? [{ start: s, end: Math.ceil(s / clusterSize) * clusterSize }] : [];
  });
}

/** The part of a regrow window an image of `size` bytes can read (a grow to less than the cluster's
 * end exposes only part of it, and a read past the end fails); null when none. */
export function readableWindow(window: { start: number; end: number }, size: number | null) {
  const end = size === null ? window.end : Math.min(window.end, size);
  return end > window.start ? { start: window.start, end } : null;
}

/** Where the compared results stand: the virtual sizes observed on qemu's result before and after
 * the step, and for after-use the size its workload grew them to. */
export interface CompareContext {
  /** The image's cluster size: a subject size on a cluster boundary qemu's is not on is a rounding. */
  clusterSize: number;
  before: number;
  after: number;
  /** After use: the size the workload grew the results to. */
  workloadSize?: number | null;
}

/** Where a guest offset lies relative to the step, for naming a content difference: `kept` (below
 * both sizes), `grown` (new space of a grow), `beyond-end` (past the size after the step). After use,
 * offsets from the step's size up to the size the workload grew the results to are `grown` too (a
 * grow is a grow, whoever made it). Deliberately coarse: a bug that writes where a grow begins lands
 * in `grown` whatever the steps before it did, so the finer history (a range discarded earlier, a
 * partial cluster, preallocation) would split one bug over several signatures. */
export type GuestRegion = 'kept' | 'grown' | 'beyond-end';

export function guestRegion(offset: number, { before, after, workloadSize }: CompareContext): GuestRegion {
  if (workloadSize != null) return offset < after ? 'kept' : offset < workloadSize ? 'grown' : 'beyond-end';
  if (offset < Math.min(before, after)) return 'kept';
  return offset < after ? 'grown' : 'beyond-end';
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
    const detail = sizeDetail(c.referenceSize, c.subjectSize, where?.clusterSize ?? null);
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
    const region = at !== null && where ? guestRegion(at, where) : 'unknown';
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
      side: unreadableSide(c.stderr),
      kind: 'compare-failed',
      detail: normaliseMessage(c.stderr) || `exit=${c.exitCode}`,
      message: `qemu-img compare failed: ${c.stderr.trim()}`,
      evidence: { exitCode: c.exitCode },
    },
  ];
}

/** The side a failed compare is laid to: qemu's own result where it opened but could not be read
 * (`Error while reading offset N of reference.<format>`: a vmdk top after qemu-img commit, whose
 * parentCID it leaves stale); the subject otherwise, an image that would not open included (the
 * compare opens qemu's first, so the subject's could be as bad: it is not let off). */
export function unreadableSide(stderr: string): 'reference' | 'subject' {
  return /Error while reading offset \d+ of (?:\S*\/)?reference\.\w+\b/.test(stderr) ? 'reference' : 'subject';
}

/** After a snapshot apply, each side must read what the image held when the snapshot was taken
 * (the harness kept a copy then): a side that does not is wrong about its apply, whatever the other
 * side did. Named by what differs: the size or the content, or the compare's failure. */
export function snapshotContentOracle(o: {
  name: string;
  reference: CompareObservation;
  subject: CompareObservation;
}): Finding[] {
  return (['subject', 'reference'] as const).flatMap((side): Finding[] => {
    const c = o[side];
    const evidence = { snapshot: o.name, exitCode: c.exitCode, stdout: c.stdout, stderr: c.stderr };
    const kept = c.referenceSize;
    const now = c.subjectSize;
    const base = { oracle: 'content' as const, kind: 'snapshot-content-differs', side };
    if (kept !== null && now !== null && kept !== now)
      return [
        {
          ...base,
          detail: 'size',
          message: `after applying snapshot ${o.name}, the ${side}'s image is ${now} bytes; it was ${kept} then`,
          evidence,
        },
      ];
    if (c.exitCode === 0) return [];
    const at = firstMismatch(c);
    const detail = c.exitCode === 1 ? 'content' : `compare-failed:${normaliseMessage(c.stderr) || c.exitCode}`;
    const message =
      c.exitCode === 1
        ? `after applying snapshot ${o.name}, the ${side}'s image reads otherwise than when it was taken` +
          (at !== null ? `, first at offset ${at}` : '')
        : `comparing the ${side}'s image with snapshot ${o.name}'s content failed: ${c.stderr.trim()}`;
    return [{ ...base, detail, message, evidence }];
  });
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

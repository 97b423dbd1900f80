import type { Finding } from './finding.ts';

export interface CompareObservation {
  /** `qemu-img compare` exit: 0 same, 1 different, 2+ error. */
  exitCode: number | null;
  stdout: string;
  stderr: string;
  /** Virtual sizes from qemu-img info; null where info failed (the info oracle reports that). */
  referenceSize: number | null;
  subjectSize: number | null;
}

/** Guest content must be identical. `qemu-img compare` without -s only warns about a size
 * difference, so sizes are compared explicitly; -s is not used: allocation legitimately differs. */
export function contentOracle(c: CompareObservation): Finding[] {
  const base = { oracle: 'content' as const, side: 'subject' as const };
  if (c.referenceSize !== null && c.subjectSize !== null && c.referenceSize !== c.subjectSize) {
    return [{ ...base, kind: 'size-differs', detail: 'virtual-size', message: `virtual sizes differ: qemu ${c.referenceSize}, subject ${c.subjectSize}` }];
  }
  if (c.exitCode === 0) return [];
  if (c.exitCode === 1) {
    const at = /offset (\d+)/.exec(c.stdout)?.[1];
    return [{ ...base, kind: 'content-differs', detail: 'content-differs', message: `guest content differs${at ? ` first at offset ${at}` : ''}`, evidence: { firstMismatch: at ? Number(at) : null, stdout: c.stdout } }];
  }
  return [{ ...base, kind: 'compare-failed', detail: `exit=${c.exitCode}`, message: `qemu-img compare failed: ${c.stderr.trim()}` }];
}

/** A content difference inside a regrow window (see regrowWindows) where qemu's result shows old
 * bytes and the subject's reads zeros is qemu's quirk, not the subject's bug: it is reported on the
 * reference side. `window` is the range holding the first mismatch; null when it is in none. */
export function regrowQuirk(window: { start: number; end: number } | null, referenceReadsZero: boolean, subjectReadsZero: boolean): Finding | null {
  if (window === null || referenceReadsZero || !subjectReadsZero) return null;
  return {
    oracle: 'content',
    kind: 'stale-bytes-after-regrow',
    side: 'reference',
    detail: 'partial-cluster',
    message: 'qemu-img shows old bytes again in the partial cluster kept by a shrink and exposed by a later grow (a qemu quirk); the subject reads zeros there',
    evidence: { window },
  };
}

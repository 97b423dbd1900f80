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

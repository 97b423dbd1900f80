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

/** Guest content must be identical. `qemu-img compare` without -s only warns about a size
 * difference, so sizes are compared explicitly; -s is not used: allocation legitimately differs.
 * A difference in a regrow window where qemu's result shows old bytes and the subject's reads
 * zeros is qemu's quirk, not the subject's bug: it is reported on the reference side. */
export function contentOracle(c: CompareObservation, regrow: RegrowProbe | null = null): Finding[] {
  const base = { oracle: 'content' as const, side: 'subject' as const };
  if (c.referenceSize !== null && c.subjectSize !== null && c.referenceSize !== c.subjectSize) {
    const message = `virtual sizes differ: qemu ${c.referenceSize}, subject ${c.subjectSize}`;
    return [{ ...base, kind: 'size-differs', detail: 'virtual-size', message }];
  }
  if (c.exitCode === 0) return [];
  if (c.exitCode === 1) {
    if (regrow && !regrow.referenceReadsZero && regrow.subjectReadsZero) return [regrowQuirk(regrow.window)];
    const at = firstMismatch(c);
    return [
      {
        ...base,
        kind: 'content-differs',
        detail: 'content-differs',
        message: `guest content differs${at !== null ? ` first at offset ${at}` : ''}`,
        evidence: { firstMismatch: at, stdout: c.stdout },
      },
    ];
  }
  return [
    {
      ...base,
      kind: 'compare-failed',
      detail: `exit=${c.exitCode}`,
      message: `qemu-img compare failed: ${c.stderr.trim()}`,
    },
  ];
}

const regrowQuirk = (window: RegrowProbe['window']): Finding => ({
  oracle: 'content',
  kind: 'stale-bytes-after-regrow',
  side: 'reference',
  detail: 'partial-cluster',
  message:
    'qemu-img shows old bytes again in the partial cluster kept by a shrink and exposed by a later grow (a qemu quirk); ' +
    'the subject reads zeros there',
  evidence: { window },
});

import type { Finding, Side } from './finding.ts';

/** A refused resize must leave the image byte-for-byte as it was. Hashes are of the whole file. */
export function unchangedOnRefusalOracle(side: Side, hashBefore: string, hashAfter: string): Finding[] {
  if (hashBefore === hashAfter) return [];
  return [
    {
      oracle: 'unchanged-on-refusal',
      kind: 'image-modified-on-refusal',
      side,
      detail: 'hash-changed',
      message: `${side} refused the resize but changed the image file`,
      evidence: { hashBefore, hashAfter },
    },
  ];
}

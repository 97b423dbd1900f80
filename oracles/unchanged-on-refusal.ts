import type { Finding, Side } from './finding.ts';

/** Hashes of one side's image file before and after a step it refused; null if it did not refuse. */
export type RefusalHashes = { before: string; after: string } | null;

const changed = (h: RefusalHashes) => h !== null && h.before !== h.after;

function finding(side: Side, h: { before: string; after: string }): Finding {
  return {
    oracle: 'unchanged-on-refusal',
    kind: 'image-modified-on-refusal',
    side,
    detail: 'hash-changed',
    message: `${side === 'subject' ? 'the subject' : 'qemu-img'} refused the step but changed the image file`,
    evidence: { hashBefore: h.before, hashAfter: h.after },
  };
}

/** A refused step must leave the image byte for byte as it was. qemu-img itself changes some
 * images before it refuses (opening a dirty lazy-refcounts image read-write repairs it): that is
 * reported on the reference side, and a subject that changes the image where qemu-img did too
 * agrees with it. */
export function unchangedOnRefusalOracle(h: { reference: RefusalHashes; subject: RefusalHashes }): Finding[] {
  const out: Finding[] = [];
  if (changed(h.reference)) out.push(finding('reference', h.reference!));
  if (changed(h.subject) && !changed(h.reference)) out.push(finding('subject', h.subject!));
  return out;
}

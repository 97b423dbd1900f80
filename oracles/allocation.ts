import type { L2Entry } from '../qcow2/tables.ts';
import type { Finding } from './finding.ts';

// What a resize allocates, against qemu's result of the same step. A grow allocates the new range
// as its --preallocation asks and as qemu does (compared by the allocation status of its guest
// clusters, never by host offsets: instar documents preallocating only the appended region, which
// this shows); without preallocation it allocates nothing there. And a resize does not make the
// image take much more host space than qemu's result: more than HOST_FACTOR times qemu's
// allocated bytes and HOST_SLACK more.

export const HOST_FACTOR = 2;
export const HOST_SLACK = 1024 * 1024;

export type GuestCounts = Record<L2Entry['type'], number>;

export interface AllocationObservation {
  /** --preallocation of the step, 'none' without the option. */
  preallocation: string;
  /** The grown range [from, to) and its guest clusters (those wholly inside), per side; null when
   * the step is no grow. */
  grown: { from: number; to: number; reference: GuestCounts; subject: GuestCounts } | null;
  /** Allocated bytes on the host (st_blocks × 512) of each side's image and data file. */
  hostBytes: { reference: number; subject: number };
}

/** The host file system's block: the unit of a raw file's allocation. */
const HOST_BLOCK = 4096;

/** A raw grow's new range, counted in bytes of the host blocks wholly inside it (as the qcow2
 * reader counts the clusters wholly inside): as many as the file's host blocks grew by are
 * allocated ('normal'), the rest are holes. A raw file has no map of its own, and SEEK_DATA shows
 * fallocated blocks as holes, so the blocks are what tells falloc from off. */
export function rawGrownCounts(from: number, to: number, grewBy: number): GuestCounts {
  const inner = Math.max(0, Math.floor(to / HOST_BLOCK) - Math.ceil(from / HOST_BLOCK)) * HOST_BLOCK;
  // the two blocks the range's ends fall in may be allocated by the step too, or before it
  const allocated = grewBy >= inner ? inner : Math.max(0, grewBy - 2 * HOST_BLOCK);
  return { unallocated: inner - allocated, normal: allocated, 'zero-plain': 0, 'zero-alloc': 0, compressed: 0 };
}

/** How a range is allocated, in a word: nothing mapped, preallocated metadata that reads as zero,
 * data clusters, or a mix. */
function allocationClass(c: GuestCounts): string {
  const none = c.unallocated + c['zero-plain'];
  const total = none + c['zero-alloc'] + c.normal + c.compressed;
  if (none === total) return 'none';
  if (c['zero-alloc'] === total) return 'metadata';
  if (c.normal + c.compressed === total) return 'data';
  return 'mixed';
}

const mib = (n: number) => (n < 2 ** 20 ? `${Math.round(n / 1024)} KiB` : `${Math.round((n / 2 ** 20) * 10) / 10} MiB`);

export function allocationOracle(o: AllocationObservation): Finding[] {
  const base = { oracle: 'allocation' as const, side: 'subject' as const };
  const out: Finding[] = [];
  if (o.grown) {
    const qemu = allocationClass(o.grown.reference);
    const subject = allocationClass(o.grown.subject);
    if (qemu !== subject) {
      const message =
        `after a grow with preallocation ${o.preallocation}, the grown range is allocated as ${subject} ` +
        `in the subject's image and as ${qemu} in qemu's`;
      out.push({
        ...base,
        kind: 'grown-range-differs',
        detail: `preallocation=${o.preallocation},subject=${subject},qemu=${qemu}`,
        message,
        evidence: o.grown,
      });
    }
  }
  const { reference, subject } = o.hostBytes;
  if (subject > reference * HOST_FACTOR && subject > reference + HOST_SLACK) {
    const message =
      `the subject's image takes ${mib(subject)} on the host, qemu's ${mib(reference)} ` +
      `(more than ${HOST_FACTOR} times and ${mib(HOST_SLACK)} more)`;
    out.push({
      ...base,
      kind: 'host-blow-up',
      detail: `preallocation=${o.preallocation}`,
      message,
      evidence: o.hostBytes,
    });
  }
  return out;
}

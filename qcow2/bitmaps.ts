import type { BitmapDirectoryEntry } from './format.ts';
import { L1E_OFFSET_MASK } from './tables.ts';

// The dirty bits of a persistent bitmap as its bitmap table and data clusters hold them (qcow2.txt
// "Bitmaps"): bit i covers guest bytes [i * granularity, (i + 1) * granularity), LSB first in each
// byte; a table entry of offset 0 reads all zeros, or all ones with its bit 0 set.

/** What one bitmap is, as the guest sees it: its directory entry but host offsets, and its bits. */
export interface BitmapBits {
  name: string;
  granularity: number;
  /** in_use, auto (qcow2.txt flag names), in that order. */
  flags: string[];
  /** How many bits are set. */
  set: number;
  /** The set bits as runs of bit indexes (`3-7,12`), the first MAX_RUNS of them. */
  runs: string;
}

/** Runs listed before the rest is only counted: two bitmaps that differ past them differ in `set`
 * or in the first runs almost always, and a report stays readable. */
export const MAX_RUNS = 64;

const FLAG_NAMES: [number, string][] = [
  [1, 'in_use'],
  [2, 'auto'],
];

export const flagNames = (flags: number) => FLAG_NAMES.filter(([bit]) => flags & bit).map(([, name]) => name);

/** The bits of a bitmap of `entry` over a disk of `virtualSize` bytes, reading its data clusters
 * through `read` (only the allocated ones: an unallocated one is all zeros or all ones). */
export async function readBitmapBits(
  entry: BitmapDirectoryEntry,
  table: bigint[],
  virtualSize: number,
  clusterSize: number,
  read: (offset: number, length: number) => Promise<Buffer>,
): Promise<BitmapBits> {
  const granularity = 2 ** entry.granularityBits;
  const total = Math.ceil(virtualSize / granularity);
  const perCluster = clusterSize * 8;
  const runs: [number, number][] = [];
  let set = 0;
  const mark = (from: number, to: number) => {
    // [from, to) set; joined with the run before when adjacent
    const last = runs.at(-1);
    if (last && last[1] === from) last[1] = to;
    else runs.push([from, to]);
    set += to - from;
  };
  for (const [i, raw] of table.entries()) {
    const first = i * perCluster;
    if (first >= total) break;
    const end = Math.min(total, first + perCluster);
    const offset = Number(raw & L1E_OFFSET_MASK);
    if (offset === 0) {
      if (raw & 1n) mark(first, end);
      continue;
    }
    const data = await read(offset, clusterSize);
    let runStart = -1;
    for (let bit = first; bit <= end; bit++) {
      const byte = data[(bit - first) >> 3] ?? 0;
      // a whole byte that continues what is open (no run in 0x00, one run on in 0xff) is skipped
      if (((bit - first) & 7) === 0 && bit + 8 <= end && byte === (runStart < 0 ? 0 : 0xff)) {
        bit += 7;
        continue;
      }
      const on = bit < end && ((byte >> ((bit - first) & 7)) & 1) === 1;
      if (on && runStart < 0) runStart = bit;
      if (!on && runStart >= 0) {
        mark(runStart, bit);
        runStart = -1;
      }
    }
  }
  const shown = runs.slice(0, MAX_RUNS).map(([a, b]) => (b - a === 1 ? `${a}` : `${a}-${b - 1}`));
  const more = runs.length > MAX_RUNS ? `,… ${runs.length - MAX_RUNS} more runs` : '';
  return { name: entry.name, granularity, flags: flagNames(entry.flags), set, runs: shown.join(',') + more };
}

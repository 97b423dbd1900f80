import { resolve } from 'node:path';
import type { CommandRecord } from '../model/commands.ts';
import { INCOMPAT_DATA_FILE, INCOMPAT_EXTL2 } from '../qcow2/format.ts';
import { readQcow2Header, withQcow2 } from '../qcow2/reader.ts';
import {
  L1E_OFFSET_MASK,
  L2E_OFFSET_MASK,
  OFLAG_COMPRESSED,
  l1EntriesNeeded,
  l2EntriesPerTable,
  nonZeroChunks,
} from '../qcow2/tables.ts';

// Guest-content comparison whose cost grows with the allocated data, not the virtual size.
//
// `qemu-img compare` walks the block status of the whole virtual disk: on a 1 TiB image with a few
// MiB of data it takes about three times as long as on a 16 MiB one. Here the L1/L2 tables of both
// images are read in-process (qcow2/reader.ts, read-only), every guest cluster that either image
// maps to something that is not plain zero becomes part of a comparison window, and each window is
// compared by `qemu-img compare` on a raw view of both images
// (`--image-opts driver=raw,offset=O,size=L,file.driver=qcow2,...`). Ranges unallocated or plain
// zero in both images read as zeros in both (no backing file: checked) and are equal without
// reading. qemu still opens every image in every window, so header and open-time errors surface as
// before; any window error re-runs the plain compare so that error messages are exactly qemu's.
//
// Semantics are those of `qemu-img compare -f qcow2 -F qcow2 A B` (without -s): exit 0 identical, 1
// different with "Content mismatch at offset N!" on stdout (N the first differing 512-byte sector
// in guest order, checked against the plain compare by test/content-compare.test.ts), 2 or more an
// error; for images of different sizes the larger one's tail must read as zeros, and "Warning:
// Image size mismatch!" comes first unless the common part already differs. Small images (the usual
// fuzz case), images this reader is unsure about (backing file, external data file, encryption,
// tables outside the file, unreadable metadata) fall back to one plain compare, so this never
// spawns more processes than the plain compare except when data is spread over far-apart regions
// (at most MAX_WINDOWS processes, then).

export interface CompareContentOptions {
  /** Budget of the whole comparison: windows are not started once it is spent. Each process's own
   * timeout is the business of `run`. */
  timeoutMs: number;
  /** Directory relative paths are resolved against (the children run there too, through `run`). */
  cwd?: string;
  /** Aborted: no further window is started. */
  signal?: AbortSignal;
  /** Runs one child process (in the harness: runCommand with the case's cwd, timeout and signal). */
  run: (program: string, args: string[]) => Promise<CommandRecord>;
  /** Images whose virtual sizes are both at most this get one plain compare. Default 64 MiB. */
  plainUpTo?: number;
  /** Tuning, for tests: see MERGE_GAP and MAX_WINDOWS. */
  mergeGap?: number;
  maxWindows?: number;
  /** The reading of both images, when it was started earlier (planComparison with the same
   * paths and options): the harness reads while another command runs. */
  plan?: Promise<ComparePlan>;
}

/** What the reading of both images decided: one plain compare, or windows over their data. */
export type ComparePlan =
  { kind: 'plain' } | { kind: 'windows'; windows: Range[]; referenceSize: number; subjectSize: number };

export interface CompareContentResult {
  /** 0 same, 1 different, 2+ error, null when the compare was killed (timeout, signal). */
  exitCode: number | null;
  stdout: string;
  stderr: string;
  /** How it was compared: one plain `qemu-img compare`, or that many windows. */
  method: 'plain' | 'windows';
  /** Processes run. */
  processes: number;
  /** Windows as [guest offset, length], for diagnosis. */
  windows: [number, number][];
}

const MiB = 2 ** 20;
const GiB = 2 ** 30;
export const PLAIN_UP_TO = 64 * MiB;
/** Two allocated regions closer than this share a window: walking an unallocated gap costs qemu
 * about 15 us per GiB, a process about 8 ms. */
export const MERGE_GAP = 64 * GiB;
/** More windows than this are merged across their smallest gaps. */
export const MAX_WINDOWS = 4;
const SECTOR = 512;

type Range = [start: number, end: number];

interface DataRanges {
  /** Virtual size as qemu sees it (whole sectors). */
  size: number;
  /** Guest ranges that are not plain zeros, sorted, merged. */
  ranges: Range[];
}

const sectorFloor = (n: number) => Math.floor(n / SECTOR) * SECTOR;

function pushRange(ranges: Range[], start: number, end: number) {
  const last = ranges[ranges.length - 1];
  if (last && last[1] >= start) last[1] = Math.max(last[1], end);
  else ranges.push([start, end]);
}

/** The guest ranges of an image that may not read as zeros, or null when this reader cannot be
 * sure (the plain compare decides then). Conservative: anything with a host offset, compressed, or
 * with allocated subclusters counts as data. */
async function dataRangesOf(path: string): Promise<DataRanges | null> {
  try {
    return await withQcow2(path, async (r) => {
      const h = r.header;
      if (h.backingFileOffset !== 0 || h.cryptMethod !== 0 || h.incompatibleFeatures & INCOMPAT_DATA_FILE) return null;
      const size = sectorFloor(h.size);
      if (size <= 0) return null;
      const cs = h.clusterSize;
      const extended = (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
      const perTable = l2EntriesPerTable(cs, extended);
      const needed = l1EntriesNeeded(size, cs, extended);
      if (h.l1Size < needed || h.l1TableOffset % cs !== 0 || h.l1TableOffset + needed * 8 > r.fileLength) return null;
      const l1 = await r.readL1Table(h.l1TableOffset, needed);
      const entryBytes = extended ? 16 : 8;
      const ranges: Range[] = [];
      for (let i = 0; i < needed; i++) {
        const l2Offset = Number(l1[i]! & L1E_OFFSET_MASK);
        if (l2Offset === 0) continue;
        // qemu fails on such a table: leave the verdict and its message to the plain compare
        if (l2Offset % cs !== 0 || l2Offset + cs > r.fileLength) return null;
        const table = await r.readL2Table(l2Offset);
        // the entries of guest clusters before the virtual size's end
        const entries = Math.min(perTable, Math.ceil(size / cs) - i * perTable);
        for (const [start, end] of nonZeroChunks(table.subarray(0, entries * entryBytes))) {
          for (let off = start; off < end; off += entryBytes) {
            const guest = (i * perTable + off / entryBytes) * cs;
            // the common case, an all-zero entry, without BigInt
            if (
              table.readUInt32BE(off) === 0 &&
              table.readUInt32BE(off + 4) === 0 &&
              (!extended || table.readUInt32BE(off + 12) === 0)
            )
              continue;
            const raw = table.readBigUInt64BE(off);
            const allocBits = extended ? table.readUInt32BE(off + 12) : 0;
            const readsZero = (raw & OFLAG_COMPRESSED) === 0n && (raw & L2E_OFFSET_MASK) === 0n && allocBits === 0;
            if (!readsZero) pushRange(ranges, guest, Math.min(guest + cs, size));
          }
        }
      }
      return { size, ranges };
    });
  } catch {
    return null;
  }
}

/** Union of both images' ranges, merged into at most MAX_WINDOWS windows; never empty, so that
 * qemu opens (and validates) both images at least once. */
export function windowsOf(
  a: Range[],
  b: Range[],
  end: number,
  mergeGap = MERGE_GAP,
  maxWindows = MAX_WINDOWS,
): Range[] {
  const all = [...a, ...b].sort((x, y) => x[0] - y[0]);
  const merged: Range[] = [];
  for (const [s, e] of all) {
    const last = merged[merged.length - 1];
    if (last && s - last[1] <= mergeGap) last[1] = Math.max(last[1], e);
    else merged.push([s, e]);
  }
  while (merged.length > maxWindows) {
    let best = 1;
    for (let i = 2; i < merged.length; i++)
      if (merged[i]![0] - merged[i - 1]![1] < merged[best]![0] - merged[best - 1]![1]) best = i;
    merged[best - 1]![1] = Math.max(merged[best - 1]![1], merged[best]![1]);
    merged.splice(best, 1);
  }
  if (merged.length === 0) merged.push([0, Math.min(SECTOR, end)]);
  return merged.map(([s, e]) => [sectorFloor(s), Math.min(end, Math.ceil(e / SECTOR) * SECTOR)]);
}

/** A raw view of `length` bytes at `offset` of a qcow2 image, for --image-opts. Commas in the file
 * name are doubled (QemuOpts quoting); file.driver=file keeps the name from being read as a
 * protocol prefix. */
export const windowOpts = (file: string, offset: number, length: number) =>
  `driver=raw,offset=${offset},size=${length},file.driver=qcow2,` +
  `file.file.driver=file,file.file.filename=${file.replace(/,/g, ',,')}`;

const SIZE_WARNING = 'Warning: Image size mismatch!\n';
const MISMATCH = /Content mismatch at offset (\d+)!/;

/** Reads both images (in-process, read-only) and decides how to compare them. */
export async function planComparison(
  referencePath: string,
  subjectPath: string,
  opts: Pick<CompareContentOptions, 'cwd' | 'plainUpTo' | 'mergeGap' | 'maxWindows'>,
): Promise<ComparePlan> {
  const at = (p: string) => resolve(opts.cwd ?? '.', p);
  const sizes = await Promise.all([readQcow2Header(at(referencePath)), readQcow2Header(at(subjectPath))]).then(
    (hs) => hs.map((h) => sectorFloor(h.size)),
    () => null,
  );
  if (!sizes || Math.max(sizes[0]!, sizes[1]!) <= (opts.plainUpTo ?? PLAIN_UP_TO)) return { kind: 'plain' };
  const [ref, sub] = await Promise.all([dataRangesOf(at(referencePath)), dataRangesOf(at(subjectPath))]);
  if (!ref || !sub) return { kind: 'plain' };
  return {
    kind: 'windows',
    windows: windowsOf(ref.ranges, sub.ranges, Math.max(ref.size, sub.size), opts.mergeGap, opts.maxWindows),
    referenceSize: ref.size,
    subjectSize: sub.size,
  };
}

export async function compareContent(
  referencePath: string,
  subjectPath: string,
  opts: CompareContentOptions,
): Promise<CompareContentResult> {
  const deadline = performance.now() + opts.timeoutMs;
  let processes = 0;
  const run = (args: string[]) => {
    processes++;
    return opts.run('qemu-img', args);
  };
  const plain = async (windows: [number, number][] = []): Promise<CompareContentResult> => {
    const r = await run(['compare', '-f', 'qcow2', '-F', 'qcow2', referencePath, subjectPath]);
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr, method: 'plain', processes, windows };
  };

  const plan = await (opts.plan ?? planComparison(referencePath, subjectPath, opts));
  if (plan.kind === 'plain') return plain();
  const { windows } = plan;
  const ref = { size: plan.referenceSize };
  const sub = { size: plan.subjectSize };
  const warning = ref.size !== sub.size ? SIZE_WARNING : '';
  const common = Math.min(ref.size, sub.size);
  let stderr = '';
  for (const [start, end] of windows) {
    if (opts.signal?.aborted || performance.now() > deadline) {
      return {
        exitCode: null,
        stdout: '',
        stderr:
          `${stderr}content comparison stopped before window ${start}+${end - start}: ` +
          `${opts.signal?.aborted ? 'aborted' : 'out of time'}\n`,
        method: 'windows',
        processes,
        windows: windows.map(([s, e]) => [s, e - s]),
      };
    }
    const len = (size: number) => Math.max(0, Math.min(end, size) - start);
    const r = await run([
      'compare',
      '--image-opts',
      windowOpts(referencePath, start, len(ref.size)),
      windowOpts(subjectPath, start, len(sub.size)),
    ]);
    const done = (exitCode: number | null, stdout: string): CompareContentResult => ({
      exitCode,
      stdout,
      stderr: stderr + r.stderr,
      method: 'windows',
      processes,
      windows: windows.map(([s, e]) => [s, e - s]),
    });
    if (r.exitCode === null) return done(null, r.stdout); // killed: a timeout is a timeout either way
    if (r.exitCode === 0) {
      stderr += r.stderr;
      continue;
    }
    const mismatch = MISMATCH.exec(r.stdout);
    if (r.exitCode === 1 && mismatch) {
      const offset = start + Number(mismatch[1]);
      // qemu warns about the sizes only once the common part compared equal
      return done(1, `${offset >= common ? warning : ''}Content mismatch at offset ${offset}!\n`);
    }
    // an error: qemu's own message, with the real file names
    return plain(windows.map(([s, e]) => [s, e - s]));
  }
  return {
    exitCode: 0,
    stdout: `${warning}Images are identical.\n`,
    stderr,
    method: 'windows',
    processes,
    windows: windows.map(([s, e]) => [s, e - s]),
  };
}

// instar's real resize command line, as instar's source and docs show it (the harness's reference
// notes, ../shared/reference/instar-resize.md, and instar's docs/resize.md): its size grammar, its
// `Error: "..."` messages and exit codes, and its documented refusals and behaviours. The double
// (instar-double.ts) speaks this with INSTAR_DOUBLE_CLI=real and runs qemu-img underneath for the
// resize itself.
import {
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  type Qcow2Header,
} from '../../qcow2/format.ts';

const KNOWN_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
const AUTOCLEAR_BITMAPS = 1n;

/** An error as instar prints it: the Rust Debug form of its message (quoted, inner quotes and
 * backslashes escaped), exit 1. */
export const instarError = (message: string) => `Error: ${JSON.stringify(message)}\n`;

const SCALE: Record<string, bigint> = {
  '': 1n,
  b: 512n,
  k: 1n << 10n,
  m: 1n << 20n,
  g: 1n << 30n,
  t: 1n << 40n,
  p: 1n << 50n,
  e: 1n << 60n,
};

export type InstarSize = { bytes: number } | { error: string };

/** SIZE as instar reads it: trimmed; a leading + or - is relative; k/K m/M g/G t/T p/P e/E are
 * powers of 1024, a lowercase b is 512-byte sectors, no suffix is bytes; integers only (a fraction
 * or an uppercase B is an invalid size); results below zero or past u64 are refused. */
export function instarSize(arg: string, current: number): InstarSize {
  const text = arg.trim();
  const m = /^([+-]?)(\d+)([bkKmMgGtTpPeE]?)$/.exec(text);
  if (!m) return { error: `invalid size: '${arg}'` };
  const [, sign, digits, suffix] = m as unknown as [string, string, string, string];
  const unit = suffix === 'b' ? SCALE.b! : SCALE[suffix.toLowerCase()]!;
  const n = BigInt(digits) * unit;
  const value = sign === '+' ? BigInt(current) + n : sign === '-' ? BigInt(current) - n : n;
  if (value >= 1n << 64n) return { error: 'resize: new virtual size overflows u64' };
  if (value < 0n) return { error: 'resize: new virtual size underflows below zero' };
  return { bytes: Number(value) };
}

const guest = (code: number, text: string) => `resize: guest reported error ${code}: ${text}`;

export const BACKING_FILE_REFUSAL =
  'resize: qcow2 images with a backing file are not yet supported (resize would orphan the backing reference); ' +
  'resize the base image directly or flatten via `instar convert` first';
export const UNSUPPORTED_REFUSAL = guest(5, 'format does not support resize');

/** Staging limit of instar's shrink planner: L2 tables it holds at once. */
const MAX_STAGED_L2_TABLES = 256;

export interface ResizeRequest {
  header: Qcow2Header;
  /** Extensions present (bitmaps need the bitmaps extension and its autoclear bit). */
  hasBitmaps: boolean;
  oldSize: number;
  newSize: number;
  shrink: boolean;
  preallocation: string | undefined;
}

/** instar's refusal of a qcow2 resize, host-side checks first, then the guest's; null when it
 * resizes. The order and words are instar's (reference: "Refusals and their messages"). */
export function instarRefusal(r: ResizeRequest): string | null {
  const h = r.header;
  const prealloc = r.preallocation ?? 'off';
  const incompat = h.incompatibleFeatures;
  if (h.backingFileOffset > 0) return BACKING_FILE_REFUSAL;
  if ((prealloc === 'falloc' || prealloc === 'full') && r.newSize < r.oldSize) {
    return `resize: --preallocation=${prealloc} is meaningless when shrinking`;
  }
  if (incompat & INCOMPAT_DIRTY || incompat & INCOMPAT_CORRUPT)
    return guest(12, 'the image header could not be parsed');
  const unsupported =
    incompat & INCOMPAT_DATA_FILE || incompat & ~KNOWN_INCOMPAT || h.compressionType !== 0 || r.hasBitmaps;
  if (unsupported) return UNSUPPORTED_REFUSAL;
  if (r.newSize === 0 || (r.newSize < r.oldSize && r.newSize < h.clusterSize)) return guest(2, 'invalid new size');
  if (r.newSize < r.oldSize && !r.shrink)
    return guest(3, 'shrinking requires --shrink (would discard data above the new size)');
  if (r.newSize > r.oldSize && (prealloc === 'metadata' || (incompat & INCOMPAT_EXTL2 && prealloc !== 'off'))) {
    return guest(8, 'preallocation mode not supported by this format');
  }
  const extended = (incompat & INCOMPAT_EXTL2) !== 0n;
  const l2Coverage = h.clusterSize * (h.clusterSize / (extended ? 16 : 8));
  const discarded = Math.ceil(r.oldSize / l2Coverage) - Math.floor(r.newSize / l2Coverage);
  if (r.newSize < r.oldSize && discarded > MAX_STAGED_L2_TABLES)
    return guest(9, 'image too large for the resize scratch buffer');
  return null;
}

/** Whether the image carries persistent bitmaps instar refuses. */
export const hasBitmaps = (h: Qcow2Header) => (h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n;

/** A shrink rounds the new size down to a cluster boundary (pinned by instar's own unit test). */
export const instarTarget = (r: Pick<ResizeRequest, 'header' | 'oldSize' | 'newSize'>) =>
  r.newSize < r.oldSize ? Math.floor(r.newSize / r.header.clusterSize) * r.header.clusterSize : r.newSize;

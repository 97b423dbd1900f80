// qcow2 structure reader (and a few targeted writers) for oracles, tests and the instar test double.
//
// It reads only what it is asked for: the header cluster, then single tables (L1, L2, refcount
// table and blocks, snapshot table, bitmap directory and tables) at the offsets the image names,
// never the whole file. On top of that, structuralCheck() recomputes every host cluster's refcount
// from the metadata alone, the way qemu's `qemu-img check` does (block/qcow2-refcount.c), and
// compares it with the stored refcounts: an independent second opinion beside qemu-img check.
//
// Layout facts are from qemu's docs/interop/qcow2.txt. All on-disk integers are big-endian.
// Offsets and sizes are JS numbers: the images this harness builds stay far below 2^53 bytes.
import { open, stat, type FileHandle } from "node:fs/promises";

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

// Feature bits (bigint: the fields are u64 and fuzzed images may set high bits).
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;
export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;

/** Byte offsets of the header fields we read or patch. */
export const HEADER_OFFSET = {
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
} as const;

/** Length of a version 2 header; version 3 headers say theirs in header_length (qemu writes 112). */
export const V2_HEADER_LENGTH = 72;

// qemu's implementation limits (qcow2.h): larger tables make it refuse to open the image, and they
// also bound what this reader is willing to allocate for a (possibly damaged) header.
export const MAX_L1_BYTES = 32 * 2 ** 20;
export const MAX_REFTABLE_BYTES = 8 * 2 ** 20;
export const MAX_SNAPSHOTS = 65536;
export const MAX_BITMAPS = 65535;

export interface Qcow2Header {
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  clusterSize: number;
  /** Virtual size in bytes (stays below 2^53 in this harness). */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  refcountBits: number;
  headerLength: number;
  /** 0 = zlib, 1 = zstd. Only present when header_length > 104; otherwise 0. */
  compressionType: number;
}

export interface RefcountBlockRef {
  tableIndex: number;
  /** Host offset of the refcount block (bits 9-63 of the reftable entry). */
  offset: number;
}

// u64 fields as numbers: offsets and sizes of images we build stay far below 2^53.
function u64(buf: Buffer, off: number): number {
  return Number(buf.readBigUInt64BE(off));
}

/** Parses the first 112 (or fewer for v2: 72) bytes of a qcow2 file. */
export function parseQcow2Header(buf: Buffer): Qcow2Header {
  if (buf.length < V2_HEADER_LENGTH || buf.readUInt32BE(0) !== QCOW2_MAGIC) {
    throw new Error("not a qcow2 image (bad magic or short header)");
  }
  const version = buf.readUInt32BE(HEADER_OFFSET.version);
  const clusterBits = buf.readUInt32BE(HEADER_OFFSET.clusterBits);
  const v3 = version >= 3 && buf.length >= 104;
  // v2 has no feature fields and fixed 16-bit refcounts (refcount_order 4).
  const refcountOrder = v3 ? buf.readUInt32BE(HEADER_OFFSET.refcountOrder) : 4;
  const headerLength = v3 ? buf.readUInt32BE(HEADER_OFFSET.headerLength) : V2_HEADER_LENGTH;
  return {
    version,
    backingFileOffset: u64(buf, HEADER_OFFSET.backingFileOffset),
    backingFileSize: buf.readUInt32BE(HEADER_OFFSET.backingFileSize),
    clusterBits,
    clusterSize: 2 ** clusterBits,
    size: u64(buf, HEADER_OFFSET.size),
    cryptMethod: buf.readUInt32BE(HEADER_OFFSET.cryptMethod),
    l1Size: buf.readUInt32BE(HEADER_OFFSET.l1Size),
    l1TableOffset: u64(buf, HEADER_OFFSET.l1TableOffset),
    refcountTableOffset: u64(buf, HEADER_OFFSET.refcountTableOffset),
    refcountTableClusters: buf.readUInt32BE(HEADER_OFFSET.refcountTableClusters),
    nbSnapshots: buf.readUInt32BE(HEADER_OFFSET.nbSnapshots),
    snapshotsOffset: u64(buf, HEADER_OFFSET.snapshotsOffset),
    incompatibleFeatures: v3 ? buf.readBigUInt64BE(HEADER_OFFSET.incompatibleFeatures) : 0n,
    compatibleFeatures: v3 ? buf.readBigUInt64BE(HEADER_OFFSET.compatibleFeatures) : 0n,
    autoclearFeatures: v3 ? buf.readBigUInt64BE(HEADER_OFFSET.autoclearFeatures) : 0n,
    refcountOrder,
    refcountBits: 2 ** refcountOrder,
    headerLength,
    compressionType:
      v3 && headerLength > HEADER_OFFSET.compressionType && buf.length > HEADER_OFFSET.compressionType
        ? buf.readUInt8(HEADER_OFFSET.compressionType)
        : 0,
  };
}

const hasExtendedL2 = (h: Qcow2Header) => (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
const hasDataFile = (h: Qcow2Header) => (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;

// ---------------------------------------------------------------------------------------------
// Header extensions
// ---------------------------------------------------------------------------------------------

export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

const EXTENSION_NAMES: Record<number, string> = {
  [EXT_BACKING_FORMAT]: "backing-format",
  [EXT_FEATURE_TABLE]: "feature-name-table",
  [EXT_BITMAPS]: "bitmaps",
  [EXT_CRYPTO]: "crypto-header",
  [EXT_DATA_FILE]: "data-file",
};

/** A stable name for an extension type; unknown types keep their number (it is not a size). */
export const extensionName = (type: number) => EXTENSION_NAMES[type] ?? `unknown-0x${type.toString(16).padStart(8, "0")}`;

export interface HeaderExtension {
  type: number;
  name: string;
  /** Where the extension's 8-byte type/length prefix starts in the file. */
  offset: number;
  /** Data length as stored (without the padding to a multiple of 8). */
  length: number;
  data: Buffer;
}

/** Where the extension area may end: the backing file name, if any, sits after it in cluster 0. */
function extensionAreaEnd(h: Qcow2Header): number {
  return h.backingFileOffset > 0 ? Math.min(h.backingFileOffset, h.clusterSize) : h.clusterSize;
}

/**
 * Parses the header extensions that follow the header in `cluster0` (the file's first cluster).
 * Stops at the end marker (type 0) or the end of the area; throws, as qemu refuses to open the
 * image, when an extension runs past the area.
 */
export function parseHeaderExtensions(cluster0: Buffer, h: Qcow2Header): HeaderExtension[] {
  const end = Math.min(extensionAreaEnd(h), cluster0.length);
  const exts: HeaderExtension[] = [];
  for (let off = h.headerLength; off + 8 <= end; ) {
    const type = cluster0.readUInt32BE(off);
    const length = cluster0.readUInt32BE(off + 4);
    if (type === EXT_END) break;
    if (off + 8 + length > end) throw new Error(`header extension ${extensionName(type)} runs past the extension area`);
    exts.push({ type, name: extensionName(type), offset: off, length, data: Buffer.from(cluster0.subarray(off + 8, off + 8 + length)) });
    off += 8 + Math.ceil(length / 8) * 8; // data is padded to a multiple of 8
  }
  return exts;
}

/** Serialises extensions back into an extension area: each padded to 8 bytes, then the end marker. */
export function encodeHeaderExtensions(exts: Pick<HeaderExtension, "type" | "data">[]): Buffer {
  const parts = exts.map((e) => {
    const b = Buffer.alloc(8 + Math.ceil(e.data.length / 8) * 8);
    b.writeUInt32BE(e.type, 0);
    b.writeUInt32BE(e.data.length, 4);
    e.data.copy(b, 8);
    return b;
  });
  return Buffer.concat([...parts, Buffer.alloc(8)]);
}

export interface FeatureNameEntry {
  /** 0 incompatible, 1 compatible, 2 autoclear. */
  type: number;
  bit: number;
  name: string;
}

/** Feature name table: 48-byte entries (type, bit, 46-byte zero-padded name). */
export function parseFeatureNameTable(data: Buffer): FeatureNameEntry[] {
  const out: FeatureNameEntry[] = [];
  for (let off = 0; off + 48 <= data.length; off += 48) {
    const raw = data.subarray(off + 2, off + 48);
    const nul = raw.indexOf(0);
    out.push({ type: data[off]!, bit: data[off + 1]!, name: raw.subarray(0, nul < 0 ? raw.length : nul).toString("latin1") });
  }
  return out;
}

export interface BitmapsExtension {
  nbBitmaps: number;
  directorySize: number;
  directoryOffset: number;
}

export function parseBitmapsExtension(data: Buffer): BitmapsExtension {
  if (data.length < 24) throw new Error("bitmaps extension shorter than 24 bytes");
  return { nbBitmaps: data.readUInt32BE(0), directorySize: u64(data, 8), directoryOffset: u64(data, 16) };
}

export interface CryptoHeaderExtension {
  offset: number;
  length: number;
}

export function parseCryptoHeaderExtension(data: Buffer): CryptoHeaderExtension {
  if (data.length < 16) throw new Error("crypto header extension shorter than 16 bytes");
  return { offset: u64(data, 0), length: u64(data, 8) };
}

export interface BitmapDirectoryEntry {
  tableOffset: number;
  /** Entries (u64 each) in the bitmap table. */
  tableSize: number;
  /** Bit 0 in_use, bit 1 auto, bit 2 extra_data_compatible. */
  flags: number;
  type: number;
  granularityBits: number;
  name: string;
  extraData: Buffer;
}

/** The bitmap directory: variable-length entries (24 bytes + extra data + name, padded to 8). */
export function parseBitmapDirectory(buf: Buffer, nbBitmaps: number): BitmapDirectoryEntry[] {
  const out: BitmapDirectoryEntry[] = [];
  let off = 0;
  for (let i = 0; i < nbBitmaps; i++) {
    if (off + 24 > buf.length) throw new Error("bitmap directory entry runs past the directory");
    const nameSize = buf.readUInt16BE(off + 18);
    const extraSize = buf.readUInt32BE(off + 20);
    const end = off + 24 + extraSize + nameSize;
    if (end > buf.length) throw new Error("bitmap directory entry runs past the directory");
    out.push({
      tableOffset: u64(buf, off),
      tableSize: buf.readUInt32BE(off + 8),
      flags: buf.readUInt32BE(off + 12),
      type: buf[off + 16]!,
      granularityBits: buf[off + 17]!,
      extraData: Buffer.from(buf.subarray(off + 24, off + 24 + extraSize)),
      name: buf.subarray(off + 24 + extraSize, end).toString("utf8"),
    });
    off = Math.ceil(end / 8) * 8;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// L1 and L2 entries
// ---------------------------------------------------------------------------------------------

/** Bits 9-55: host offset in L1 entries, standard L2 entries and bitmap table entries. */
export const L1E_OFFSET_MASK = 0x00fffffffffffe00n;
export const L2E_OFFSET_MASK = 0x00fffffffffffe00n;
/** Refcount table entries use bits 9-63 (the low 9 bits are reserved). */
export const REFTABLE_OFFSET_MASK = 0xfffffffffffffe00n;
export const OFLAG_COPIED = 1n << 63n;
export const OFLAG_COMPRESSED = 1n << 62n;
export const OFLAG_ZERO = 1n;

/** L2 entries per table: 8 bytes each, 16 with extended L2 (entry + subcluster bitmap). */
export function l2EntriesPerTable(clusterSize: number, extendedL2: boolean): number {
  return clusterSize / (extendedL2 ? 16 : 8);
}

/** L1 entries needed to map `size` bytes: ceil(size / (cluster_size * l2_entries)). */
export function l1EntriesNeeded(size: number, clusterSize: number, extendedL2: boolean): number {
  return Math.ceil(size / (clusterSize * l2EntriesPerTable(clusterSize, extendedL2)));
}

export interface L1Entry {
  /** Host offset of the L2 table; 0 = unallocated. */
  offset: number;
  copied: boolean;
}

export function decodeL1Entry(raw: bigint): L1Entry {
  return { offset: Number(raw & L1E_OFFSET_MASK), copied: (raw & OFLAG_COPIED) !== 0n };
}

export interface CompressedDescriptor {
  /** Host byte offset of the compressed data (usually not aligned). */
  offset: number;
  /** Additional 512-byte sectors beyond the one containing `offset`. */
  additionalSectors: number;
  /** Bytes qemu accounts to this cluster: up to the end of its last sector (may cross clusters). */
  length: number;
}

/**
 * Compressed cluster descriptor (bits 0-61): with x = 62 - (cluster_bits - 8), bits 0..x-1 are
 * the host offset and bits x..61 the number of additional sectors. The length is what qemu's
 * qcow2_parse_compressed_l2_entry() refcounts: whole sectors, minus the start's offset into its
 * sector. Several compressed clusters may share a host cluster; one may span two.
 */
export function decodeCompressedDescriptor(raw: bigint, clusterBits: number): CompressedDescriptor {
  const x = BigInt(62 - (clusterBits - 8));
  const offset = Number(raw & ((1n << x) - 1n));
  const additionalSectors = Number((raw >> x) & ((1n << BigInt(clusterBits - 8)) - 1n));
  return { offset, additionalSectors, length: (additionalSectors + 1) * 512 - (offset % 512) };
}

export type L2Entry =
  | { type: "unallocated"; copied: boolean; bitmap?: bigint }
  /** v3 "reads as zero" with no host cluster (never with extended L2). */
  | { type: "zero-plain"; copied: boolean; bitmap?: bigint }
  /** A host cluster that holds data ("normal") or is preallocated but reads as zero. */
  | { type: "normal" | "zero-alloc"; offset: number; copied: boolean; bitmap?: bigint }
  | ({ type: "compressed"; copied: boolean; bitmap?: bigint } & CompressedDescriptor);

export interface L2Format {
  clusterBits: number;
  extendedL2: boolean;
  /** With an external data file, host offset 0 with COPIED set is a real mapping. */
  dataFile: boolean;
}

export const l2FormatOf = (h: Qcow2Header): L2Format => ({ clusterBits: h.clusterBits, extendedL2: hasExtendedL2(h), dataFile: hasDataFile(h) });

/** Classifies an L2 entry the way qemu's qcow2_get_cluster_type() does. */
export function decodeL2Entry(raw: bigint, f: L2Format, bitmap?: bigint): L2Entry {
  const copied = (raw & OFLAG_COPIED) !== 0n;
  const extra = bitmap === undefined ? {} : { bitmap };
  if (raw & OFLAG_COMPRESSED) return { type: "compressed", copied, ...extra, ...decodeCompressedDescriptor(raw, f.clusterBits) };
  const offset = Number(raw & L2E_OFFSET_MASK);
  // Bit 0 means "reads as zero" only without extended L2 (there the bitmap says it per subcluster).
  if (raw & OFLAG_ZERO && !f.extendedL2) return offset ? { type: "zero-alloc", offset, copied, ...extra } : { type: "zero-plain", copied, ...extra };
  if (offset === 0 && !(f.dataFile && copied)) return { type: "unallocated", copied, ...extra };
  return { type: "normal", offset, copied, ...extra };
}

/** Decodes a whole L2 table (one cluster). */
/** Shared results for all-zero entries, the vast majority in a sparse table: decoding those
 * through BigInt dominated the cost of reading large (2 MiB-cluster) tables. */
const UNALLOCATED: L2Entry = Object.freeze({ type: "unallocated", copied: false });
const UNALLOCATED_EXTENDED: L2Entry = Object.freeze({ type: "unallocated", copied: false, bitmap: 0n });
const isZero = (buf: Buffer, off: number, bytes: number) => {
  for (let i = off; i < off + bytes; i += 4) if (buf.readUInt32BE(i) !== 0) return false;
  return true;
};

export function decodeL2Table(table: Buffer, f: L2Format): L2Entry[] {
  const step = f.extendedL2 ? 16 : 8;
  const out: L2Entry[] = [];
  for (let off = 0; off + step <= table.length; off += step) {
    if (isZero(table, off, step)) out.push(f.extendedL2 ? UNALLOCATED_EXTENDED : UNALLOCATED);
    else out.push(decodeL2Entry(table.readBigUInt64BE(off), f, f.extendedL2 ? table.readBigUInt64BE(off + 8) : undefined));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Snapshot table
// ---------------------------------------------------------------------------------------------

export interface SnapshotEntry {
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  /** From the 64-bit extra-data field when present, else the 32-bit one. */
  vmStateSize: number;
  /** Virtual disk size at snapshot time (extra data bytes 48-55; required for v3), or null. */
  diskSize: number | null;
  extraData: Buffer;
  /** Entry offset relative to the table start, and its padded length. */
  tableOffset: number;
  entryLength: number;
}

// ---------------------------------------------------------------------------------------------
// Refcount entries
// ---------------------------------------------------------------------------------------------

/** Entries per refcount block: cluster_size * 8 / refcount_bits. */
export function refcountEntriesPerBlock(clusterSize: number, bits: number): number {
  return (clusterSize * 8) / bits;
}

const ZERO_CHUNK = Buffer.alloc(4096);

/**
 * The [start, end) byte ranges of `buf`, from `from` on, that may hold non-zero bytes: 4 KiB-aligned
 * chunks that are all zero are left out, each found with one memcmp. Tables are mostly zero, and
 * reading them entry by entry was most of the structure oracle's time. Entries of 1 to 16 bytes
 * at their natural alignment never straddle two chunks.
 */
export function* nonZeroChunks(buf: Buffer, from = 0): Generator<[number, number]> {
  for (let start = from; start < buf.length; ) {
    const end = Math.min((Math.floor(start / ZERO_CHUNK.length) + 1) * ZERO_CHUNK.length, buf.length);
    if (ZERO_CHUNK.compare(buf, start, end, 0, end - start) !== 0) yield [start, end];
    start = end;
  }
}

function checkBits(bits: number): void {
  if (![1, 2, 4, 8, 16, 32, 64].includes(bits)) throw new RangeError(`bad refcount width ${bits}`);
}

/** Reads entry `index` of a refcount block. Sub-byte widths are packed LSB-first, wider ones big-endian. */
export function getRefcountEntry(block: Buffer, index: number, bits: number): number {
  checkBits(bits);
  switch (bits) {
    case 8:
      return block.readUInt8(index);
    case 16:
      return block.readUInt16BE(index * 2);
    case 32:
      return block.readUInt32BE(index * 4);
    case 64:
      return Number(block.readBigUInt64BE(index * 8));
    default: {
      const perByte = 8 / bits;
      const byte = block[Math.floor(index / perByte)];
      if (byte === undefined) throw new RangeError(`refcount index ${index} out of block`);
      return (byte >> (bits * (index % perByte))) & ((1 << bits) - 1);
    }
  }
}

/** Writes entry `index` of a refcount block in place (same packing as getRefcountEntry). */
export function setRefcountEntry(block: Buffer, index: number, bits: number, value: number): void {
  checkBits(bits);
  if (!Number.isSafeInteger(value) || value < 0 || (bits < 53 && value >= 2 ** bits)) {
    throw new RangeError(`refcount ${value} does not fit in ${bits} bits`);
  }
  switch (bits) {
    case 8:
      block.writeUInt8(value, index);
      return;
    case 16:
      block.writeUInt16BE(value, index * 2);
      return;
    case 32:
      block.writeUInt32BE(value, index * 4);
      return;
    case 64:
      block.writeBigUInt64BE(BigInt(value), index * 8);
      return;
    default: {
      const perByte = 8 / bits;
      const at = Math.floor(index / perByte);
      const byte = block[at];
      if (byte === undefined) throw new RangeError(`refcount index ${index} out of block`);
      const shift = bits * (index % perByte);
      const mask = ((1 << bits) - 1) << shift;
      block[at] = (byte & ~mask) | (value << shift);
    }
  }
}

/** (index, refcount) of every non-zero entry of a block. Skips zero bytes first: most of a block
 * is usually empty, and a damaged reftable can point at many blocks. */
export function* nonZeroRefcounts(block: Buffer, bits: number): Generator<[number, number]> {
  checkBits(bits);
  if (bits < 8) {
    const perByte = 8 / bits;
    for (const [from, to] of nonZeroChunks(block)) {
      for (let b = from; b < to; b++) {
        if (block[b] === 0) continue;
        for (let k = 0; k < perByte; k++) {
          const v = getRefcountEntry(block, b * perByte + k, bits);
          if (v !== 0) yield [b * perByte + k, v];
        }
      }
    }
    return;
  }
  const bytes = bits / 8;
  for (const [from, to] of nonZeroChunks(block)) {
    for (let b = from; b < to; b++) {
      if (block[b] === 0) continue;
      const i = Math.floor(b / bytes);
      const v = getRefcountEntry(block, i, bits);
      if (v !== 0) yield [i, v];
      b = (i + 1) * bytes - 1; // next entry
    }
  }
}

// ---------------------------------------------------------------------------------------------
// File access
// ---------------------------------------------------------------------------------------------

/** Thrown when a header or directory claims a table larger than qemu would ever open. */
export class TableTooLargeError extends Error {
  constructor(readonly table: string, bytes: number, limit: number) {
    super(`${table} of ${bytes} bytes exceeds qemu's limit of ${limit}`);
  }
}

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  // A table that runs past EOF reads as zeros (qemu would fail; callers report what is there).
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  for (let n = -1; done < length && n !== 0; done += n) n = (await fh.read(buf, done, length - done, offset + done)).bytesRead;
  return buf.fill(0, done);
}

async function withFile<T>(path: string, flags: "r" | "r+", fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await open(path, flags);
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

async function headerOf(fh: FileHandle): Promise<Qcow2Header> {
  return parseQcow2Header(await readAt(fh, 0, 112));
}

export async function readQcow2Header(path: string): Promise<Qcow2Header> {
  return withFile(path, "r", headerOf);
}

/**
 * An open qcow2 image. Each method reads one structure at the offset the metadata names; nothing
 * is cached except the header and its extensions. Close it, or use withQcow2().
 */
export class Qcow2Reader {
  private constructor(
    private readonly fh: FileHandle,
    readonly header: Qcow2Header,
    /** File length in bytes when the image was opened. */
    readonly fileLength: number,
    /** The first cluster (header, extensions, backing file name). */
    readonly headerCluster: Buffer,
  ) {}

  static async open(path: string, flags: "r" | "r+" = "r"): Promise<Qcow2Reader> {
    const fh = await open(path, flags);
    try {
      const fileLength = (await fh.stat()).size;
      const header = await headerOf(fh);
      if (header.clusterBits < 9 || header.clusterBits > 21) throw new Error(`cluster_bits ${header.clusterBits} out of range 9..21`);
      return new Qcow2Reader(fh, header, fileLength, await readAt(fh, 0, header.clusterSize));
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  /** Raw bytes at an offset (zeros past EOF). */
  read(offset: number, length: number): Promise<Buffer> {
    return readAt(this.fh, offset, length);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.reftable = undefined; // the write may have changed it
    await this.fh.write(data, 0, data.length, offset);
  }

  extensions(): HeaderExtension[] {
    return parseHeaderExtensions(this.headerCluster, this.header);
  }

  /** The backing file name stored in cluster 0, or null. */
  backingFile(): string | null {
    const h = this.header;
    if (h.backingFileOffset === 0) return null;
    return this.headerCluster.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize).toString("utf8");
  }

  /** Raw u64 entries of an L1 table (the active one by default). */
  async readL1Table(offset = this.header.l1TableOffset, entries = this.header.l1Size): Promise<bigint[]> {
    if (entries * 8 > MAX_L1_BYTES) throw new TableTooLargeError("l1 table", entries * 8, MAX_L1_BYTES);
    const buf = await this.read(offset, entries * 8);
    return Array.from({ length: entries }, (_, i) => buf.readBigUInt64BE(i * 8));
  }

  /** One L2 table as raw bytes (one cluster); decode with decodeL2Table(buf, l2FormatOf(header)). */
  readL2Table(offset: number): Promise<Buffer> {
    return this.read(offset, this.header.clusterSize);
  }

  async readL2Entries(offset: number): Promise<L2Entry[]> {
    return decodeL2Table(await this.readL2Table(offset), l2FormatOf(this.header));
  }

  /** The reftable, read once per reader: several walks need it. */
  private reftable: Promise<{ offsets: Float64Array; blocks: RefcountBlockRef[] }> | undefined;

  /** Reftable entries as offsets by index (0: no block). */
  async readRefcountTable(): Promise<Float64Array> {
    return (await this.loadedRefcountTable()).offsets;
  }

  /** Every non-zero reftable entry, in table order. */
  async refcountBlocks(): Promise<RefcountBlockRef[]> {
    return (await this.loadedRefcountTable()).blocks;
  }

  private loadedRefcountTable() {
    this.reftable ??= this.loadRefcountTable();
    return this.reftable;
  }

  private async loadRefcountTable(): Promise<{ offsets: Float64Array; blocks: RefcountBlockRef[] }> {
    const h = this.header;
    const bytes = h.refcountTableClusters * h.clusterSize;
    if (bytes > MAX_REFTABLE_BYTES) throw new TableTooLargeError("refcount table", bytes, MAX_REFTABLE_BYTES);
    const table = await this.read(h.refcountTableOffset, bytes);
    const offsets = new Float64Array(bytes / 8);
    const blocks: RefcountBlockRef[] = [];
    // most entries are zero: only the others take the BigInt path
    for (const [from, to] of nonZeroChunks(table)) {
      for (let i = from / 8; i < to / 8; i++) {
        if (isZero(table, i * 8, 8)) continue;
        offsets[i] = Number(table.readBigUInt64BE(i * 8) & REFTABLE_OFFSET_MASK);
        if (offsets[i]) blocks.push({ tableIndex: i, offset: offsets[i]! });
      }
    }
    return { offsets, blocks };
  }

  readRefcountBlock(offset: number): Promise<Buffer> {
    return this.read(offset, this.header.clusterSize);
  }

  /** Host cluster index -> stored refcount, non-zero entries only. Reads each block once. */
  async readRefcounts(): Promise<Map<number, number>> {
    const h = this.header;
    const perBlock = refcountEntriesPerBlock(h.clusterSize, h.refcountBits);
    const counts = new Map<number, number>();
    for (const ref of await this.refcountBlocks()) {
      if (ref.offset >= this.fileLength) continue; // reads as zeros: nothing in use
      const block = await this.readRefcountBlock(ref.offset);
      const base = ref.tableIndex * perBlock;
      for (const [i, v] of nonZeroRefcounts(block, h.refcountBits)) counts.set(base + i, v);
    }
    return counts;
  }

  /** The stored refcount of one host cluster (0 when its block is not allocated). */
  async refcountOf(cluster: number): Promise<number> {
    const h = this.header;
    const perBlock = refcountEntriesPerBlock(h.clusterSize, h.refcountBits);
    const blockOffset = (await this.readRefcountTable())[Math.floor(cluster / perBlock)];
    if (!blockOffset) return 0;
    return getRefcountEntry(await this.readRefcountBlock(blockOffset), cluster % perBlock, h.refcountBits);
  }

  /**
   * Sets the stored refcount of one host cluster in place. Returns false, writing nothing, when
   * the refcount block that would hold it is not allocated (this never allocates metadata).
   */
  async setRefcount(cluster: number, value: number): Promise<boolean> {
    const h = this.header;
    const perBlock = refcountEntriesPerBlock(h.clusterSize, h.refcountBits);
    const blockOffset = (await this.readRefcountTable())[Math.floor(cluster / perBlock)];
    if (!blockOffset) return false;
    const block = await this.readRefcountBlock(blockOffset);
    setRefcountEntry(block, cluster % perBlock, h.refcountBits, value);
    await this.write(blockOffset, block);
    return true;
  }

  /**
   * The snapshot table: nb_snapshots variable-length entries (40 fixed bytes, extra data, id,
   * name, padded to 8) starting at snapshots_offset. Returns the entries and the table's byte size.
   */
  async readSnapshots(): Promise<{ entries: SnapshotEntry[]; size: number }> {
    const h = this.header;
    if (h.nbSnapshots > MAX_SNAPSHOTS) throw new TableTooLargeError("snapshot table", h.nbSnapshots, MAX_SNAPSHOTS);
    const entries: SnapshotEntry[] = [];
    let rel = 0;
    for (let i = 0; i < h.nbSnapshots; i++) {
      const fixed = await this.read(h.snapshotsOffset + rel, 40);
      const idSize = fixed.readUInt16BE(12);
      const nameSize = fixed.readUInt16BE(14);
      const extraSize = fixed.readUInt32BE(36);
      if (extraSize > 1024) throw new TableTooLargeError("snapshot extra data", extraSize, 1024); // qemu's limit
      const rest = await this.read(h.snapshotsOffset + rel + 40, extraSize + idSize + nameSize);
      const extraData = Buffer.from(rest.subarray(0, extraSize));
      const entryLength = Math.ceil((40 + extraSize + idSize + nameSize) / 8) * 8;
      entries.push({
        l1TableOffset: u64(fixed, 0),
        l1Size: fixed.readUInt32BE(8),
        id: rest.subarray(extraSize, extraSize + idSize).toString("utf8"),
        name: rest.subarray(extraSize + idSize, extraSize + idSize + nameSize).toString("utf8"),
        dateSec: fixed.readUInt32BE(16),
        dateNsec: fixed.readUInt32BE(20),
        vmClockNsec: u64(fixed, 24),
        vmStateSize: extraSize >= 8 ? u64(extraData, 0) : fixed.readUInt32BE(32),
        diskSize: extraSize >= 16 ? u64(extraData, 8) : null,
        extraData,
        tableOffset: rel,
        entryLength,
      });
      rel += entryLength;
    }
    return { entries, size: rel };
  }

  /**
   * The bitmaps extension and its directory, or null when there is none. Like qemu, an extension
   * without the autoclear "bitmaps" bit is inconsistent and ignored (a writer drops it).
   */
  async readBitmaps(): Promise<{ extension: BitmapsExtension; directory: BitmapDirectoryEntry[] } | null> {
    const ext = this.extensions().find((e) => e.type === EXT_BITMAPS);
    if (!ext || !(this.header.autoclearFeatures & AUTOCLEAR_BITMAPS)) return null;
    const extension = parseBitmapsExtension(ext.data);
    if (extension.nbBitmaps > MAX_BITMAPS) throw new TableTooLargeError("bitmap directory", extension.nbBitmaps, MAX_BITMAPS);
    if (extension.directorySize > 64 * 2 ** 20) throw new TableTooLargeError("bitmap directory", extension.directorySize, 64 * 2 ** 20);
    const dir = await this.read(extension.directoryOffset, extension.directorySize);
    return { extension, directory: parseBitmapDirectory(dir, extension.nbBitmaps) };
  }

  /** Raw u64 entries of one bitmap table. */
  async readBitmapTable(entry: BitmapDirectoryEntry): Promise<bigint[]> {
    if (entry.tableSize * 8 > MAX_L1_BYTES) throw new TableTooLargeError("bitmap table", entry.tableSize * 8, MAX_L1_BYTES);
    const buf = await this.read(entry.tableOffset, entry.tableSize * 8);
    return Array.from({ length: entry.tableSize }, (_, i) => buf.readBigUInt64BE(i * 8));
  }

  /** Rewrites the header extension area (from header_length up to the backing file name). */
  async writeHeaderExtensions(exts: Pick<HeaderExtension, "type" | "data">[]): Promise<void> {
    const h = this.header;
    const area = extensionAreaEnd(h) - h.headerLength;
    const encoded = encodeHeaderExtensions(exts);
    if (encoded.length > area) throw new Error("header extensions do not fit in the first cluster");
    // Zero the whole area so no stale bytes of a removed extension remain after the end marker.
    const buf = Buffer.alloc(area);
    encoded.copy(buf);
    await this.write(h.headerLength, buf);
    buf.copy(this.headerCluster, h.headerLength);
  }
}

/** Opens an image, runs `fn`, closes the image. */
export async function withQcow2<T>(path: string, fn: (r: Qcow2Reader) => Promise<T>, flags: "r" | "r+" = "r"): Promise<T> {
  const r = await Qcow2Reader.open(path, flags);
  try {
    return await fn(r);
  } finally {
    await r.close();
  }
}

/** Every non-zero reftable entry, in table order. Reads only the reftable. */
export async function readRefcountBlocks(path: string): Promise<RefcountBlockRef[]> {
  return withQcow2(path, (r) => r.refcountBlocks());
}

/** Reads one cluster-sized refcount block at a host offset. */
export async function readRefcountBlock(path: string, offset: number, clusterSize: number): Promise<Buffer> {
  return withFile(path, "r", (fh) => readAt(fh, offset, clusterSize));
}

/** Writes one refcount block back at its host offset. */
export async function writeRefcountBlock(path: string, offset: number, block: Buffer): Promise<void> {
  await withFile(path, "r+", async (fh) => {
    await fh.write(block, 0, block.length, offset);
  });
}

/** Host cluster index -> refcount, only non-zero entries. Reads the reftable and each block once. */
export async function readRefcounts(path: string): Promise<Map<number, number>> {
  return withQcow2(path, (r) => r.readRefcounts());
}

/**
 * Calls `transform` on every refcount block and writes back what it returns (if anything).
 * Returns how many blocks were written. Used by fault injection and corruption tests.
 */
export async function rewriteRefcountBlocks(
  path: string,
  transform: (block: Buffer, ref: RefcountBlockRef, header: Qcow2Header) => Buffer | undefined,
): Promise<number> {
  return withQcow2(
    path,
    async (r) => {
      let written = 0;
      for (const ref of await r.refcountBlocks()) {
        const out = transform(await r.readRefcountBlock(ref.offset), ref, r.header);
        if (out === undefined) continue;
        if (out.length !== r.header.clusterSize) throw new Error("refcount block must stay one cluster long");
        await r.write(ref.offset, out);
        written++;
      }
      return written;
    },
    "r+",
  );
}

/** Overwrites the v3 compatible-features field (offset 80). Throws on v2, which has no such field. */
export async function writeCompatibleFeatures(path: string, value: bigint): Promise<void> {
  await withFile(path, "r+", async (fh) => {
    const h = await headerOf(fh);
    if (h.version < 3) throw new Error("compatible features need a version 3 header");
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64BE(value);
    await fh.write(buf, 0, 8, HEADER_OFFSET.compatibleFeatures);
  });
}

/** Header extensions of an image file. */
export async function readHeaderExtensions(path: string): Promise<HeaderExtension[]> {
  return withQcow2(path, async (r) => r.extensions());
}

/**
 * Replaces the header extensions with what `transform` returns (e.g. one removed). Returns
 * whether anything changed. The backing file name, if any, is left where it is.
 */
export async function rewriteHeaderExtensions(path: string, transform: (exts: HeaderExtension[]) => HeaderExtension[]): Promise<boolean> {
  return withQcow2(
    path,
    async (r) => {
      const before = r.extensions();
      const after = transform(before);
      if (encodeHeaderExtensions(after).equals(encodeHeaderExtensions(before))) return false;
      await r.writeHeaderExtensions(after);
      return true;
    },
    "r+",
  );
}

// ---------------------------------------------------------------------------------------------
// Structural check: expected refcounts from the metadata, compared with the stored ones
// ---------------------------------------------------------------------------------------------

/** What a host cluster is referenced as (the first reference found, for reports). */
export type ClusterRole =
  | "header"
  | "l1"
  | "l2"
  | "data"
  | "compressed"
  | "refcount-table"
  | "refcount-block"
  | "snapshot-table"
  | "snapshot-l1"
  | "snapshot-l2"
  | "snapshot-data"
  | "crypto-header"
  | "bitmap-directory"
  | "bitmap-table"
  | "bitmap-data";

/** A mismatch as qemu-img check classifies it: below the references is a corruption, above a leak. */
export type RefcountMismatchClass = "undercounted" | "overcounted" | "leaked";

export interface RefcountMismatch {
  cluster: number;
  stored: number;
  expected: number;
  /** How the cluster is referenced, or null when nothing references it. */
  role: ClusterRole | null;
  class: RefcountMismatchClass;
}

/** Problems found while walking the metadata; `what` is a stable name (no numbers). */
export interface StructureProblem {
  what: string;
  message: string;
}

/** Lists in the observation are capped so a badly broken image still yields a small report. */
export const MAX_LISTED = 50;

/** The header in JSON-safe form (feature fields as hex strings). */
export type HeaderSummary = Omit<Qcow2Header, "incompatibleFeatures" | "compatibleFeatures" | "autoclearFeatures"> & {
  incompatibleFeatures: string;
  compatibleFeatures: string;
  autoclearFeatures: string;
};

export interface ExtensionSummary {
  type: number;
  name: string;
  length: number;
  /**
   * What must survive a resize: the raw data for most extensions; for bitmaps the directory
   * without host offsets; for the crypto header its length (both move legitimately).
   */
  content: string;
}

export type StructureObservation =
  | {
      readable: true;
      fileLength: number;
      header: HeaderSummary;
      /** The backing file name from cluster 0, or null. */
      backingFile: string | null;
      extensions: ExtensionSummary[];
      /** Header extension area could not be parsed (qemu refuses to open such an image). */
      extensionError: string | null;
      snapshots: number;
      bitmaps: number;
      /** false when the dirty bit is set: lazy refcounts legitimately lag behind the tables. */
      refcountsChecked: boolean;
      mismatchCounts: Record<RefcountMismatchClass, number>;
      refcountMismatches: RefcountMismatch[];
      /** Active L1/L2 entries whose COPIED bit disagrees with "stored refcount is exactly 1". */
      copiedMismatchCount: number;
      copiedMismatches: { table: "l1" | "l2" | "compressed"; cluster: number; stored: number }[];
      /** Referenced host clusters at or beyond the end of the file. */
      beyondEofCount: number;
      beyondEof: { role: ClusterRole; cluster: number }[];
      /** Active mappings of guest clusters past the virtual size (a shrink must drop them). */
      mappingsBeyondEndCount: number;
      mappingsBeyondEnd: { table: "l1" | "l2"; index: number }[];
      problems: StructureProblem[];
      /** As `qemu-img check` counts them: active guest clusters with a host cluster or compressed. */
      allocatedClusters: number;
      compressedClusters: number;
      /** Host clusters with an expected (computed) and a stored non-zero refcount. */
      referencedClusters: number;
      storedClusters: number;
    }
  | { readable: false; reason: "missing" | "not-qcow2" | "error"; message: string };

const hex = (n: bigint) => `0x${n.toString(16)}`;

function summariseHeader(h: Qcow2Header): HeaderSummary {
  return { ...h, incompatibleFeatures: hex(h.incompatibleFeatures), compatibleFeatures: hex(h.compatibleFeatures), autoclearFeatures: hex(h.autoclearFeatures) };
}

const MAX_RANGE_BYTES = 64 * 2 ** 20;

/** The refcount bookkeeping of one walk: qemu's inc_refcounts() over byte ranges. */
class Expected {
  readonly counts = new Map<number, number>();
  readonly roles = new Map<number, ClusterRole>();
  readonly beyondEof: { role: ClusterRole; cluster: number }[] = [];
  beyondEofCount = 0;
  constructor(private readonly clusterBits: number, private readonly fileClusters: number) {}

  /** Every host cluster that [offset, offset + length) touches gets one more reference. */
  add(offset: number, length: number, role: ClusterRole): void {
    if (length <= 0) return; // qemu ignores empty ranges (e.g. no snapshot table)
    // No structure qemu writes is this large; a damaged length must not make us loop for ever.
    if (length > MAX_RANGE_BYTES) throw new TableTooLargeError(role, length, MAX_RANGE_BYTES);
    const cs = 2 ** this.clusterBits;
    const last = Math.floor((offset + length - 1) / cs);
    for (let c = Math.floor(offset / cs); c <= last; c++) {
      this.counts.set(c, (this.counts.get(c) ?? 0) + 1);
      if (!this.roles.has(c)) this.roles.set(c, role);
      if (c >= this.fileClusters) {
        this.beyondEofCount++;
        if (this.beyondEof.length < MAX_LISTED) this.beyondEof.push({ role, cluster: c });
      }
    }
  }
}

/** What must survive a resize unchanged, per extension type (see ExtensionSummary.content). */
function extensionContent(e: HeaderExtension): string {
  try {
    if (e.type === EXT_BITMAPS) return `nb=${parseBitmapsExtension(e.data).nbBitmaps}`; // directory compared separately
    if (e.type === EXT_CRYPTO) return `length=${parseCryptoHeaderExtension(e.data).length}`;
  } catch {
    // malformed: fall back to the raw bytes
  }
  return e.data.toString("hex");
}

/**
 * Recomputes every host cluster's refcount from the metadata (header cluster, active and snapshot
 * L1 tables, their L2 tables, data and compressed clusters, refcount table and blocks, snapshot
 * table, crypto header, bitmap directory, tables and data) exactly as qemu's check does, and
 * compares it with the stored refcounts. Also reports COPIED flags that disagree, referenced
 * clusters past EOF and mappings past the virtual size. Reads only metadata; never throws: an
 * unreadable image yields `readable: false`.
 */
export async function structuralCheck(path: string): Promise<StructureObservation> {
  let r: Qcow2Reader;
  try {
    if (!(await stat(path)).isFile()) return { readable: false, reason: "missing", message: `${path} is not a regular file` };
    r = await Qcow2Reader.open(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ENOENT") return { readable: false, reason: "missing", message: err.message };
    if (/not a qcow2|cluster_bits/.test(err.message)) return { readable: false, reason: "not-qcow2", message: err.message };
    return { readable: false, reason: "error", message: err.message };
  }
  try {
    return await walk(r);
  } catch (e) {
    return { readable: false, reason: "error", message: (e as Error).message };
  } finally {
    await r.close();
  }
}

async function walk(r: Qcow2Reader): Promise<StructureObservation> {
  const h = r.header;
  const cs = h.clusterSize;
  const fileClusters = Math.ceil(r.fileLength / cs);
  const exp = new Expected(h.clusterBits, fileClusters);
  const problems: StructureProblem[] = [];
  const problem = (what: string, message: string) => {
    if (!problems.some((p) => p.what === what)) problems.push({ what, message });
  };
  const aligned = (offset: number) => offset % cs === 0;
  const fmt = l2FormatOf(h);
  const l2Step = fmt.extendedL2 ? 16 : 8;
  const dataFile = fmt.dataFile;

  let extensions: HeaderExtension[] = [];
  let extensionError: string | null = null;
  try {
    extensions = r.extensions();
  } catch (e) {
    extensionError = (e as Error).message;
  }

  // Header cluster.
  exp.add(0, cs, "header");

  // Stored refcounts first: the COPIED checks below compare against them, like qemu's.
  let stored = new Map<number, number>();
  let reftable: RefcountBlockRef[] = [];
  try {
    reftable = await r.refcountBlocks();
    stored = await r.readRefcounts();
  } catch (e) {
    problem("refcount-table", (e as Error).message);
  }
  const storedOf = (c: number) => stored.get(c) ?? 0;

  const copiedMismatches: { table: "l1" | "l2" | "compressed"; cluster: number; stored: number }[] = [];
  let copiedMismatchCount = 0;
  const copied = (table: "l1" | "l2" | "compressed", cluster: number) => {
    copiedMismatchCount++;
    if (copiedMismatches.length < MAX_LISTED) copiedMismatches.push({ table, cluster, stored: storedOf(cluster) });
  };
  let allocatedClusters = 0;
  let compressedClusters = 0;
  const mappingsBeyondEnd: { table: "l1" | "l2"; index: number }[] = [];
  let mappingsBeyondEndCount = 0;
  const beyondEnd = (table: "l1" | "l2", index: number) => {
    mappingsBeyondEndCount++;
    if (mappingsBeyondEnd.length < MAX_LISTED) mappingsBeyondEnd.push({ table, index });
  };
  const guestClusters = Math.ceil(h.size / cs);
  const l2Entries = l2EntriesPerTable(cs, fmt.extendedL2);

  // One L1 table and everything it maps (qemu's check_refcounts_l1/l2). Only the active table
  // counts allocated clusters and has meaningful COPIED flags.
  const walkL1 = async (offset: number, entries: number, active: boolean) => {
    if (entries === 0) return;
    if (!aligned(offset)) return problem(active ? "l1-table-offset" : "snapshot-l1-offset", `L1 table at ${offset} is not cluster-aligned`);
    const l1 = await r.readL1Table(offset, entries);
    exp.add(offset, entries * 8, active ? "l1" : "snapshot-l1");
    for (let i = 0; i < l1.length; i++) {
      const { offset: l2Offset, copied: l1Copied } = decodeL1Entry(l1[i]!);
      if (!l2Offset) continue;
      if (active && i * l2Entries >= guestClusters) beyondEnd("l1", i);
      if (!aligned(l2Offset)) {
        problem("l2-offset", `L2 table at ${l2Offset} is not cluster-aligned`);
        continue;
      }
      exp.add(l2Offset, cs, active ? "l2" : "snapshot-l2");
      if (active && l1Copied !== (storedOf(l2Offset / cs) === 1)) copied("l1", l2Offset / cs);
      if (l2Offset >= r.fileLength) continue; // reported as beyond EOF; it would read as zeros
      const table = await r.readL2Table(l2Offset);
      for (const [from, to] of nonZeroChunks(table)) {
        for (let at = from; at < to; at += l2Step) {
          // the common case: an empty entry (and, with extended L2, an empty subcluster bitmap)
          if (isZero(table, at, l2Step)) continue;
          const e = decodeL2Entry(table.readBigUInt64BE(at), fmt);
          const guest = i * l2Entries + at / l2Step;
          // qemu's shrink fully discards these (entry and subcluster bitmap zeroed): any bit left is stale.
          if (active && guest >= guestClusters) beyondEnd("l2", guest);
          if (e.type === "compressed") {
            // qcow2.txt: an image with an external data file has no compressed clusters
            if (dataFile) problem("data-file-compressed", `guest cluster ${guest} is compressed in an image with an external data file`);
            if (active) {
              allocatedClusters++;
              compressedClusters++;
              if (e.copied) copied("compressed", Math.floor(e.offset / cs));
            }
            exp.add(e.offset, e.length, active ? "compressed" : "snapshot-data");
          } else if (e.type === "normal" || e.type === "zero-alloc") {
            if (active) allocatedClusters++;
            if (!aligned(e.offset)) {
              problem("data-offset", `data cluster at ${e.offset} is not cluster-aligned`);
              continue;
            }
            if (dataFile) {
              // qcow2.txt: with an external data file the host offset must be the guest offset (qemu
              // marks the image corrupt when it meets another); those clusters are not refcounted
              if (e.offset !== guest * cs) problem("data-file-offset", `guest cluster ${guest} maps to data file offset ${e.offset}, not to its guest offset`);
              continue;
            }
            exp.add(e.offset, cs, active ? "data" : "snapshot-data");
            if (active && e.copied !== (storedOf(e.offset / cs) === 1)) copied("l2", e.offset / cs);
          }
        }
      }
    }
  };

  try {
    await walkL1(h.l1TableOffset, h.l1Size, true);
  } catch (e) {
    problem("l1-table", (e as Error).message);
  }

  // Snapshots: each L1 table and what it maps, then the snapshot table itself.
  let snapshots = 0;
  if (h.nbSnapshots > 0 && dataFile) problem("data-file-snapshots", "an image with an external data file has internal snapshots");
  if (h.nbSnapshots > 0) {
    try {
      if (!aligned(h.snapshotsOffset)) throw new Error(`snapshot table at ${h.snapshotsOffset} is not cluster-aligned`);
      const { entries, size } = await r.readSnapshots();
      snapshots = entries.length;
      for (const sn of entries) await walkL1(sn.l1TableOffset, sn.l1Size, false);
      exp.add(h.snapshotsOffset, size, "snapshot-table");
    } catch (e) {
      problem("snapshot-table", (e as Error).message);
    }
  }

  // Refcount table and the blocks it points to (an oversized table is a header finding).
  if (h.refcountTableClusters * cs <= MAX_REFTABLE_BYTES) exp.add(h.refcountTableOffset, h.refcountTableClusters * cs, "refcount-table");
  for (const { offset } of reftable) {
    if (!aligned(offset)) problem("refcount-block-offset", `refcount block at ${offset} is not cluster-aligned`);
    else exp.add(offset, cs, "refcount-block");
  }

  // Encryption header (LUKS): a contiguous range named by its extension.
  const crypto = extensions.find((e) => e.type === EXT_CRYPTO);
  if (crypto) {
    try {
      const c = parseCryptoHeaderExtension(crypto.data);
      exp.add(c.offset, c.length, "crypto-header");
    } catch (e) {
      problem("crypto-header", (e as Error).message);
    }
  }

  // Persistent bitmaps: directory, each bitmap table, each allocated bitmap data cluster.
  let bitmaps = 0;
  let bitmapDirectory: BitmapDirectoryEntry[] = [];
  try {
    const bm = extensionError ? null : await r.readBitmaps();
    if (bm) {
      bitmapDirectory = bm.directory;
      bitmaps = bm.directory.length;
      exp.add(bm.extension.directoryOffset, bm.extension.directorySize, "bitmap-directory");
      for (const entry of bm.directory) {
        exp.add(entry.tableOffset, entry.tableSize * 8, "bitmap-table");
        for (const raw of await r.readBitmapTable(entry)) {
          const offset = Number(raw & L1E_OFFSET_MASK);
          if (offset && aligned(offset)) exp.add(offset, cs, "bitmap-data");
          else if (offset) problem("bitmap-data-offset", `bitmap data cluster at ${offset} is not cluster-aligned`);
        }
      }
    }
  } catch (e) {
    problem("bitmaps", (e as Error).message);
  }

  // Compare, in cluster order, every cluster either side says is in use.
  const dirty = (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
  const mismatchCounts: Record<RefcountMismatchClass, number> = { undercounted: 0, overcounted: 0, leaked: 0 };
  const refcountMismatches: RefcountMismatch[] = [];
  if (!dirty) {
    const clusters = [...new Set([...stored.keys(), ...exp.counts.keys()])].sort((a, b) => a - b);
    for (const cluster of clusters) {
      const s = storedOf(cluster);
      const x = exp.counts.get(cluster) ?? 0;
      if (s === x) continue;
      const cls: RefcountMismatchClass = s < x ? "undercounted" : x === 0 ? "leaked" : "overcounted";
      mismatchCounts[cls]++;
      if (refcountMismatches.length < MAX_LISTED) refcountMismatches.push({ cluster, stored: s, expected: x, role: exp.roles.get(cluster) ?? null, class: cls });
    }
  }

  const extSummaries = extensions.map((e) => ({ type: e.type, name: e.name, length: e.length, content: extensionContent(e) }));
  // The bitmap directory without host offsets is what a resize must keep (sizes follow the disk).
  const bmSummary = extSummaries.find((e) => e.type === EXT_BITMAPS);
  if (bmSummary && bitmapDirectory.length > 0) {
    bmSummary.content += `;${JSON.stringify(bitmapDirectory.map((b) => ({ name: b.name, flags: b.flags, type: b.type, granularityBits: b.granularityBits, extraData: b.extraData.toString("hex") })))}`;
  }

  return {
    readable: true,
    fileLength: r.fileLength,
    header: summariseHeader(h),
    backingFile: r.backingFile(),
    extensions: extSummaries,
    extensionError,
    snapshots,
    bitmaps,
    refcountsChecked: !dirty,
    mismatchCounts,
    refcountMismatches,
    copiedMismatchCount: dirty ? 0 : copiedMismatchCount,
    copiedMismatches: dirty ? [] : copiedMismatches,
    beyondEofCount: exp.beyondEofCount,
    beyondEof: exp.beyondEof,
    mappingsBeyondEndCount,
    mappingsBeyondEnd,
    problems,
    allocatedClusters,
    compressedClusters,
    referencedClusters: exp.counts.size,
    storedClusters: stored.size,
  };
}

/**
 * Whether any guest cluster at or past `guestOffset` (rounded up to a cluster) is backed by a host
 * cluster: what a shrink to that size must discard. Reads only the L1 table and the L2 tables that
 * cover the range.
 */
export async function hasHostClustersFrom(path: string, guestOffset: number): Promise<boolean> {
  return withQcow2(path, async (r) => {
    const fmt = l2FormatOf(r.header);
    const perTable = l2EntriesPerTable(r.header.clusterSize, fmt.extendedL2);
    const firstCluster = Math.ceil(guestOffset / r.header.clusterSize);
    const l1 = await r.readL1Table();
    for (let i = Math.floor(firstCluster / perTable); i < l1.length; i++) {
      const { offset } = decodeL1Entry(l1[i]!);
      if (offset === 0) continue;
      // raw scan: a host cluster is a non-zero offset field (bits 9-55) or the compressed bit
      const table = await r.readL2Table(offset);
      const step = fmt.extendedL2 ? 16 : 8;
      const from = i * perTable < firstCluster ? firstCluster - i * perTable : 0;
      for (const [start, end] of nonZeroChunks(table, from * step)) {
        for (let off = start; off + step <= end; off += step) {
          const hi = table.readUInt32BE(off);
          if (hi & 0x40000000 || hi & 0x00ffffff || table.readUInt32BE(off + 4) & 0xfffffe00) return true;
        }
      }
    }
    return false;
  });
}

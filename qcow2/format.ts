// The qcow2 format as this harness reads it: header fields, feature bits, qemu's limits and header
// extensions, decoded from buffers (tables.ts decodes the tables, reader.ts reads them from files).
//
// Layout facts are from qemu's docs/interop/qcow2.txt. All on-disk integers are big-endian.
// Offsets and sizes are JS numbers: the images this harness builds stay far below 2^53 bytes.

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
export function u64(buf: Buffer, off: number): number {
  return Number(buf.readBigUInt64BE(off));
}

/** Parses the first 112 (or fewer for v2: 72) bytes of a qcow2 file. */
export function parseQcow2Header(buf: Buffer): Qcow2Header {
  if (buf.length < V2_HEADER_LENGTH || buf.readUInt32BE(0) !== QCOW2_MAGIC) {
    throw new Error('not a qcow2 image (bad magic or short header)');
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

export const hasExtendedL2 = (h: Qcow2Header) => (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
export const hasDataFile = (h: Qcow2Header) => (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;

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
  [EXT_BACKING_FORMAT]: 'backing-format',
  [EXT_FEATURE_TABLE]: 'feature-name-table',
  [EXT_BITMAPS]: 'bitmaps',
  [EXT_CRYPTO]: 'crypto-header',
  [EXT_DATA_FILE]: 'data-file',
};

/** A stable name for an extension type; unknown types keep their number (it is not a size). */
export const extensionName = (type: number) =>
  EXTENSION_NAMES[type] ?? `unknown-0x${type.toString(16).padStart(8, '0')}`;

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
export function extensionAreaEnd(h: Qcow2Header): number {
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
  for (let off = h.headerLength; off + 8 <= end;) {
    const type = cluster0.readUInt32BE(off);
    const length = cluster0.readUInt32BE(off + 4);
    if (type === EXT_END) break;
    if (off + 8 + length > end) throw new Error(`header extension ${extensionName(type)} runs past the extension area`);
    exts.push({
      type,
      name: extensionName(type),
      offset: off,
      length,
      data: Buffer.from(cluster0.subarray(off + 8, off + 8 + length)),
    });
    off += 8 + Math.ceil(length / 8) * 8; // data is padded to a multiple of 8
  }
  return exts;
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
    out.push({
      type: data[off]!,
      bit: data[off + 1]!,
      name: raw.subarray(0, nul < 0 ? raw.length : nul).toString('latin1'),
    });
  }
  return out;
}

export interface BitmapsExtension {
  nbBitmaps: number;
  directorySize: number;
  directoryOffset: number;
}

export function parseBitmapsExtension(data: Buffer): BitmapsExtension {
  if (data.length < 24) throw new Error('bitmaps extension shorter than 24 bytes');
  return { nbBitmaps: data.readUInt32BE(0), directorySize: u64(data, 8), directoryOffset: u64(data, 16) };
}

export interface CryptoHeaderExtension {
  offset: number;
  length: number;
}

export function parseCryptoHeaderExtension(data: Buffer): CryptoHeaderExtension {
  if (data.length < 16) throw new Error('crypto header extension shorter than 16 bytes');
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
    if (off + 24 > buf.length) throw new Error('bitmap directory entry runs past the directory');
    const nameSize = buf.readUInt16BE(off + 18);
    const extraSize = buf.readUInt32BE(off + 20);
    const end = off + 24 + extraSize + nameSize;
    if (end > buf.length) throw new Error('bitmap directory entry runs past the directory');
    out.push({
      tableOffset: u64(buf, off),
      tableSize: buf.readUInt32BE(off + 8),
      flags: buf.readUInt32BE(off + 12),
      type: buf[off + 16]!,
      granularityBits: buf[off + 17]!,
      extraData: Buffer.from(buf.subarray(off + 24, off + 24 + extraSize)),
      name: buf.subarray(off + 24 + extraSize, end).toString('utf8'),
    });
    off = Math.ceil(end / 8) * 8;
  }
  return out;
}

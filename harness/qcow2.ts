// Minimal qcow2 structure reader/writer: header fields and refcount structures.
// Used by oracles (refcount sanity), tests, and the instar test double (fault injection).
// All on-disk integers are big-endian (docs/interop/qcow2.txt).
import { open, type FileHandle } from "node:fs/promises";

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
  clusterBits: 20,
  size: 24,
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

export interface Qcow2Header {
  version: number;
  clusterBits: number;
  clusterSize: number;
  /** Virtual size in bytes (stays below 2^53 in this harness). */
  size: number;
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
  if (buf.length < 72 || buf.readUInt32BE(0) !== QCOW2_MAGIC) {
    throw new Error("not a qcow2 image (bad magic or short header)");
  }
  const version = buf.readUInt32BE(HEADER_OFFSET.version);
  const clusterBits = buf.readUInt32BE(HEADER_OFFSET.clusterBits);
  const v3 = version >= 3 && buf.length >= 104;
  // v2 has no feature fields and fixed 16-bit refcounts (refcount_order 4).
  const refcountOrder = v3 ? buf.readUInt32BE(HEADER_OFFSET.refcountOrder) : 4;
  const headerLength = v3 ? buf.readUInt32BE(HEADER_OFFSET.headerLength) : 72;
  return {
    version,
    clusterBits,
    clusterSize: 2 ** clusterBits,
    size: u64(buf, HEADER_OFFSET.size),
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

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  // A table that runs past EOF reads as zeros (qemu would fail; we just report what is there).
  return bytesRead === length ? buf : Buffer.concat([buf.subarray(0, bytesRead), Buffer.alloc(length - bytesRead)]);
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

/** Entries per refcount block: cluster_size * 8 / refcount_bits. */
export function refcountEntriesPerBlock(clusterSize: number, bits: number): number {
  return (clusterSize * 8) / bits;
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

// Reftable entries hold the block offset in bits 9-63; the low 9 bits are reserved.
const REFTABLE_OFFSET_MASK = ~0x1ffn & 0xffffffffffffffffn;

async function refcountBlocksOf(fh: FileHandle, h: Qcow2Header): Promise<RefcountBlockRef[]> {
  const table = await readAt(fh, h.refcountTableOffset, h.refcountTableClusters * h.clusterSize);
  const refs: RefcountBlockRef[] = [];
  for (let i = 0; i < table.length / 8; i++) {
    const offset = Number(table.readBigUInt64BE(i * 8) & REFTABLE_OFFSET_MASK);
    if (offset !== 0) refs.push({ tableIndex: i, offset });
  }
  return refs;
}

/** Every non-zero reftable entry, in table order. Reads only the reftable. */
export async function readRefcountBlocks(path: string): Promise<RefcountBlockRef[]> {
  return withFile(path, "r", async (fh) => refcountBlocksOf(fh, await headerOf(fh)));
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
  return withFile(path, "r", async (fh) => {
    const h = await headerOf(fh);
    const perBlock = refcountEntriesPerBlock(h.clusterSize, h.refcountBits);
    const counts = new Map<number, number>();
    for (const ref of await refcountBlocksOf(fh, h)) {
      const block = await readAt(fh, ref.offset, h.clusterSize);
      for (let i = 0; i < perBlock; i++) {
        const v = getRefcountEntry(block, i, h.refcountBits);
        if (v !== 0) counts.set(ref.tableIndex * perBlock + i, v);
      }
    }
    return counts;
  });
}

/**
 * Calls `transform` on every refcount block and writes back what it returns (if anything).
 * Returns how many blocks were written. Used by fault injection and corruption tests.
 */
export async function rewriteRefcountBlocks(
  path: string,
  transform: (block: Buffer, ref: RefcountBlockRef, header: Qcow2Header) => Buffer | undefined,
): Promise<number> {
  return withFile(path, "r+", async (fh) => {
    const h = await headerOf(fh);
    let written = 0;
    for (const ref of await refcountBlocksOf(fh, h)) {
      const out = transform(await readAt(fh, ref.offset, h.clusterSize), ref, h);
      if (out === undefined) continue;
      if (out.length !== h.clusterSize) throw new Error("refcount block must stay one cluster long");
      await fh.write(out, 0, out.length, ref.offset);
      written++;
    }
    return written;
  });
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

// The tables of a qcow2 image, decoded from buffers: L1 and L2 entries (with compressed and
// zero clusters), snapshot table entries and refcount entries of every width.
import { hasDataFile, hasExtendedL2, type Qcow2Header } from './format.ts';

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
  | { type: 'unallocated'; copied: boolean; bitmap?: bigint }
  /** v3 "reads as zero" with no host cluster (never with extended L2). */
  | { type: 'zero-plain'; copied: boolean; bitmap?: bigint }
  /** A host cluster that holds data ("normal") or is preallocated but reads as zero. */
  | { type: 'normal' | 'zero-alloc'; offset: number; copied: boolean; bitmap?: bigint }
  | ({ type: 'compressed'; copied: boolean; bitmap?: bigint } & CompressedDescriptor);

export interface L2Format {
  clusterBits: number;
  extendedL2: boolean;
  /** With an external data file, host offset 0 with COPIED set is a real mapping. */
  dataFile: boolean;
}

export const l2FormatOf = (h: Qcow2Header): L2Format => ({
  clusterBits: h.clusterBits,
  extendedL2: hasExtendedL2(h),
  dataFile: hasDataFile(h),
});

/** Classifies an L2 entry the way qemu's qcow2_get_cluster_type() does. */
export function decodeL2Entry(raw: bigint, f: L2Format, bitmap?: bigint): L2Entry {
  const copied = (raw & OFLAG_COPIED) !== 0n;
  const extra = bitmap === undefined ? {} : { bitmap };
  if (raw & OFLAG_COMPRESSED)
    return { type: 'compressed', copied, ...extra, ...decodeCompressedDescriptor(raw, f.clusterBits) };
  const offset = Number(raw & L2E_OFFSET_MASK);
  // Bit 0 means "reads as zero" only without extended L2 (there the bitmap says it per subcluster).
  if (raw & OFLAG_ZERO && !f.extendedL2)
    return offset ? { type: 'zero-alloc', offset, copied, ...extra } : { type: 'zero-plain', copied, ...extra };
  if (offset === 0 && !(f.dataFile && copied)) return { type: 'unallocated', copied, ...extra };
  return { type: 'normal', offset, copied, ...extra };
}

/** Decodes a whole L2 table (one cluster). */
/** Shared results for all-zero entries, the vast majority in a sparse table: decoding those
 * through BigInt dominated the cost of reading large (2 MiB-cluster) tables. */
const UNALLOCATED: L2Entry = Object.freeze({ type: 'unallocated', copied: false });
const UNALLOCATED_EXTENDED: L2Entry = Object.freeze({ type: 'unallocated', copied: false, bitmap: 0n });
export const isZero = (buf: Buffer, off: number, bytes: number) => {
  for (let i = off; i < off + bytes; i += 4) if (buf.readUInt32BE(i) !== 0) return false;
  return true;
};

export function decodeL2Table(table: Buffer, f: L2Format): L2Entry[] {
  const step = f.extendedL2 ? 16 : 8;
  const out: L2Entry[] = [];
  for (let off = 0; off + step <= table.length; off += step) {
    if (isZero(table, off, step)) out.push(f.extendedL2 ? UNALLOCATED_EXTENDED : UNALLOCATED);
    else
      out.push(decodeL2Entry(table.readBigUInt64BE(off), f, f.extendedL2 ? table.readBigUInt64BE(off + 8) : undefined));
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
  for (let start = from; start < buf.length;) {
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

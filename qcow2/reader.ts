// Reads a qcow2 image from its file, one structure at a time: the header cluster, then single
// tables (L1, L2, refcount table and blocks, snapshot table, bitmap directory and tables) at the
// offsets the image names, never the whole file. Read-only: the writers are qcow2/edit.ts.
import { open, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import {
  AUTOCLEAR_BITMAPS,
  EXT_BITMAPS,
  MAX_BITMAPS,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  MAX_SNAPSHOTS,
  parseBitmapDirectory,
  parseBitmapsExtension,
  parseHeaderExtensions,
  parseQcow2Header,
  u64,
  type BitmapDirectoryEntry,
  type BitmapsExtension,
  type HeaderExtension,
  type Qcow2Header,
  type RefcountBlockRef,
} from './format.ts';
import {
  REFTABLE_OFFSET_MASK,
  decodeL1Entry,
  decodeL2Table,
  getRefcountEntry,
  isZero,
  l2EntriesPerTable,
  l2FormatOf,
  nonZeroChunks,
  nonZeroRefcounts,
  refcountEntriesPerBlock,
  type L2Entry,
  type SnapshotEntry,
} from './tables.ts';

/** Thrown when a header or directory claims a table larger than qemu would ever open. */
export class TableTooLargeError extends Error {
  constructor(
    readonly table: string,
    bytes: number,
    limit: number,
  ) {
    super(`${table} of ${bytes} bytes exceeds qemu's limit of ${limit}`);
  }
}

export async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  // A table that runs past EOF reads as zeros (qemu would fail; callers report what is there).
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  for (let n = -1; done < length && n !== 0; done += n)
    n = (await fh.read(buf, done, length - done, offset + done)).bytesRead;
  return buf.fill(0, done);
}

async function withFile<T>(path: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await open(path, 'r');
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

export async function headerOf(fh: FileHandle): Promise<Qcow2Header> {
  return parseQcow2Header(await readAt(fh, 0, 112));
}

export async function readQcow2Header(path: string): Promise<Qcow2Header> {
  return withFile(path, headerOf);
}

/**
 * An open qcow2 image. Each method reads one structure at the offset the metadata names; nothing
 * is cached except the header and its extensions. Close it, or use withQcow2().
 */
/** `name` as copies of the image at `imagePath` in other directories compare it: an absolute name
 * below the image's own directory is written `<image dir>/…`; any other name is kept. */
export function portableBackingName(name: string | null, imagePath: string): string | null {
  if (name === null || !isAbsolute(name)) return name;
  const rest = relative(resolve(dirname(imagePath)), name);
  return rest.startsWith('..') || isAbsolute(rest) ? name : `<image dir>/${rest}`;
}

export class Qcow2Reader {
  private constructor(
    private readonly fh: FileHandle,
    /** The image's path as opened. */
    readonly path: string,
    readonly header: Qcow2Header,
    /** File length in bytes when the image was opened. */
    readonly fileLength: number,
    /** The first cluster (header, extensions, backing file name). */
    readonly headerCluster: Buffer,
  ) {}

  static async open(path: string): Promise<Qcow2Reader> {
    const fh = await open(path, 'r');
    try {
      const fileLength = (await fh.stat()).size;
      const header = await headerOf(fh);
      if (header.clusterBits < 9 || header.clusterBits > 21)
        throw new Error(`cluster_bits ${header.clusterBits} out of range 9..21`);
      return new Qcow2Reader(fh, path, header, fileLength, await readAt(fh, 0, header.clusterSize));
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

  extensions(): HeaderExtension[] {
    return parseHeaderExtensions(this.headerCluster, this.header);
  }

  /** The backing file name stored in cluster 0, or null. */
  backingFile(): string | null {
    const h = this.header;
    if (h.backingFileOffset === 0) return null;
    return this.headerCluster.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize).toString('utf8');
  }

  /** The backing file name as copies of an image in other directories compare it: an absolute
   * name below the image's own directory is written `<image dir>/…` (each copy names its own). */
  portableBackingFile(): string | null {
    return portableBackingName(this.backingFile(), this.path);
  }

  /** Raw u64 entries of an L1 table (the active one by default). */
  async readL1Table(offset = this.header.l1TableOffset, entries = this.header.l1Size): Promise<bigint[]> {
    if (entries * 8 > MAX_L1_BYTES) throw new TableTooLargeError('l1 table', entries * 8, MAX_L1_BYTES);
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
    if (bytes > MAX_REFTABLE_BYTES) throw new TableTooLargeError('refcount table', bytes, MAX_REFTABLE_BYTES);
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
   * The snapshot table: nb_snapshots variable-length entries (40 fixed bytes, extra data, id,
   * name, padded to 8) starting at snapshots_offset. Returns the entries and the table's byte size.
   */
  async readSnapshots(): Promise<{ entries: SnapshotEntry[]; size: number }> {
    const h = this.header;
    if (h.nbSnapshots > MAX_SNAPSHOTS) throw new TableTooLargeError('snapshot table', h.nbSnapshots, MAX_SNAPSHOTS);
    const entries: SnapshotEntry[] = [];
    let rel = 0;
    for (let i = 0; i < h.nbSnapshots; i++) {
      const fixed = await this.read(h.snapshotsOffset + rel, 40);
      const idSize = fixed.readUInt16BE(12);
      const nameSize = fixed.readUInt16BE(14);
      const extraSize = fixed.readUInt32BE(36);
      if (extraSize > 1024) throw new TableTooLargeError('snapshot extra data', extraSize, 1024); // qemu's limit
      const rest = await this.read(h.snapshotsOffset + rel + 40, extraSize + idSize + nameSize);
      const extraData = Buffer.from(rest.subarray(0, extraSize));
      const entryLength = Math.ceil((40 + extraSize + idSize + nameSize) / 8) * 8;
      entries.push({
        l1TableOffset: u64(fixed, 0),
        l1Size: fixed.readUInt32BE(8),
        id: rest.subarray(extraSize, extraSize + idSize).toString('utf8'),
        name: rest.subarray(extraSize + idSize, extraSize + idSize + nameSize).toString('utf8'),
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
    if (extension.nbBitmaps > MAX_BITMAPS)
      throw new TableTooLargeError('bitmap directory', extension.nbBitmaps, MAX_BITMAPS);
    if (extension.directorySize > 64 * 2 ** 20)
      throw new TableTooLargeError('bitmap directory', extension.directorySize, 64 * 2 ** 20);
    const dir = await this.read(extension.directoryOffset, extension.directorySize);
    return { extension, directory: parseBitmapDirectory(dir, extension.nbBitmaps) };
  }

  /** Raw u64 entries of one bitmap table. */
  async readBitmapTable(entry: BitmapDirectoryEntry): Promise<bigint[]> {
    if (entry.tableSize * 8 > MAX_L1_BYTES)
      throw new TableTooLargeError('bitmap table', entry.tableSize * 8, MAX_L1_BYTES);
    const buf = await this.read(entry.tableOffset, entry.tableSize * 8);
    return Array.from({ length: entry.tableSize }, (_, i) => buf.readBigUInt64BE(i * 8));
  }
}

/** Opens an image, runs `fn`, closes the image. */
export async function withQcow2<T>(path: string, fn: (r: Qcow2Reader) => Promise<T>): Promise<T> {
  const r = await Qcow2Reader.open(path);
  try {
    return await fn(r);
  } finally {
    await r.close();
  }
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

/** How the guest clusters wholly inside [from, to) are mapped, counted by L2 entry type
 * (unallocated, zero-plain, zero-alloc, normal, compressed): the allocation status of a grown
 * range, never its host offsets. Only the L2 tables that range touches are read. */
export async function guestAllocation(
  path: string,
  from: number,
  to: number,
): Promise<Record<L2Entry['type'], number>> {
  return withQcow2(path, async (r) => {
    const counts: Record<L2Entry['type'], number> = {
      unallocated: 0,
      'zero-plain': 0,
      'zero-alloc': 0,
      normal: 0,
      compressed: 0,
    };
    const fmt = l2FormatOf(r.header);
    const perTable = l2EntriesPerTable(r.header.clusterSize, fmt.extendedL2);
    const first = Math.ceil(from / r.header.clusterSize);
    const end = Math.floor(to / r.header.clusterSize);
    if (end <= first) return counts;
    const l1 = await r.readL1Table();
    for (let i = Math.floor(first / perTable); i * perTable < end; i++) {
      const lo = Math.max(first, i * perTable);
      const hi = Math.min(end, (i + 1) * perTable);
      const { offset } = decodeL1Entry(l1[i] ?? 0n);
      if (offset === 0) {
        counts.unallocated += hi - lo;
        continue;
      }
      const entries = decodeL2Table(await r.readL2Table(offset), fmt);
      for (let c = lo; c < hi; c++) counts[entries[c - i * perTable]!.type]++;
    }
    return counts;
  });
}

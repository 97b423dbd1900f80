// The structural check: every host cluster's refcount recomputed from the metadata alone, the way
// qemu's `qemu-img check` does (block/qcow2-refcount.c), and compared with the stored refcounts:
// an independent second opinion beside qemu-img check. Also COPIED flags, references past the end
// of the file, mappings past the virtual size, and what a resize must keep of the header.
import { stat } from 'node:fs/promises';
import {
  EXT_BITMAPS,
  EXT_CRYPTO,
  INCOMPAT_DIRTY,
  MAX_REFTABLE_BYTES,
  parseBitmapsExtension,
  parseCryptoHeaderExtension,
  type BitmapDirectoryEntry,
  type HeaderExtension,
  type Qcow2Header,
  type RefcountBlockRef,
} from './format.ts';
import { readBitmapBits, type BitmapBits } from './bitmaps.ts';
import { Qcow2Reader, TableTooLargeError } from './reader.ts';
import {
  L1E_OFFSET_MASK,
  decodeL1Entry,
  decodeL2Entry,
  isZero,
  l2EntriesPerTable,
  l2FormatOf,
  nonZeroChunks,
  type L2Format,
} from './tables.ts';

/** What a host cluster is referenced as (the first reference found, for reports). */
export type ClusterRole =
  | 'header'
  | 'l1'
  | 'l2'
  | 'data'
  /** A data cluster behind a zero-flag entry (preallocated, reads as zero). */
  | 'data-zero'
  | 'compressed'
  | 'refcount-table'
  | 'refcount-block'
  | 'snapshot-table'
  | 'snapshot-l1'
  | 'snapshot-l2'
  | 'snapshot-data'
  | 'crypto-header'
  | 'bitmap-directory'
  | 'bitmap-table'
  | 'bitmap-data';

/** A mismatch as qemu-img check classifies it: below the references is a corruption, above a leak. */
export type RefcountMismatchClass = 'undercounted' | 'overcounted' | 'leaked';

export interface RefcountMismatch {
  cluster: number;
  stored: number;
  expected: number;
  /** How the cluster is referenced, or null when nothing references it. */
  role: ClusterRole | null;
  class: RefcountMismatchClass;
}

/** Consecutive host clusters referenced the same way: what `qemu-img check`'s cluster numbers
 * are looked up in. `shared`: referenced more than once (by a snapshot, say). */
export interface RoleRun {
  first: number;
  last: number;
  role: ClusterRole;
  shared: boolean;
}

/** How many mismatched clusters there are of one class, role and sharing: every mismatch is
 * counted, not only the listed ones, so a signature can rest on them. */
export interface MismatchGroup {
  class: RefcountMismatchClass;
  role: ClusterRole | null;
  shared: boolean;
  count: number;
}

/** Problems found while walking the metadata; `what` is a stable name (no numbers). */
export interface StructureProblem {
  what: string;
  message: string;
}

/** Lists in the observation are capped so a badly broken image still yields a small report. */
export const MAX_LISTED = 50;
export const MAX_BLOCKS_LISTED = 1024;

/** The header in JSON-safe form (feature fields as hex strings). */
export type HeaderSummary = Omit<Qcow2Header, 'incompatibleFeatures' | 'compatibleFeatures' | 'autoclearFeatures'> & {
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

/** A snapshot table entry's fields that say which snapshot it is and what it holds (not where:
 * host offsets move legitimately; not when: dates and clocks differ run to run). `diskSize` is
 * null in an entry without that extra data (a v2 image's). */
export interface SnapshotSummary {
  id: string;
  name: string;
  l1Size: number;
  diskSize: number | null;
  vmStateSize: number;
}

export type StructureObservation =
  | {
      readable: true;
      fileLength: number;
      header: HeaderSummary;
      /** The backing file name from cluster 0 (an absolute one below the image's directory as
       * `<image dir>/…`: Qcow2Reader.portableBackingFile), or null. */
      backingFile: string | null;
      extensions: ExtensionSummary[];
      /** Header extension area could not be parsed (qemu refuses to open such an image). */
      extensionError: string | null;
      snapshots: number;
      /** The snapshot table as a guest tool lists it, in table order (empty without snapshots). */
      snapshotTable: SnapshotSummary[];
      bitmaps: number;
      /** Each persistent bitmap's name, granularity, flags and dirty bits, in directory order
       * (absent in steps recorded before they were read). */
      bitmapBits?: BitmapBits[];
      /** false when the dirty bit is set: lazy refcounts legitimately lag behind the tables. */
      refcountsChecked: boolean;
      mismatchCounts: Record<RefcountMismatchClass, number>;
      refcountMismatches: RefcountMismatch[];
      mismatchGroups: MismatchGroup[];
      /** How every referenced host cluster is referenced, in cluster order. */
      clusterRoles: RoleRun[];
      /** The refcount blocks by refcount table index, as host clusters (the first MAX_BLOCKS_LISTED):
       * which block holds a cluster's refcount (absent in steps recorded before they were kept). */
      refcountBlocks?: { tableIndex: number; cluster: number }[];
      /** Active L1/L2 entries whose COPIED bit disagrees with "stored refcount is exactly 1". */
      copiedMismatchCount: number;
      copiedMismatches: { table: 'l1' | 'l2' | 'compressed'; cluster: number; stored: number }[];
      /** Referenced host clusters at or beyond the end of the file. */
      beyondEofCount: number;
      beyondEof: { role: ClusterRole; cluster: number }[];
      /** Active mappings of guest clusters past the virtual size (a shrink must drop them). */
      mappingsBeyondEndCount: number;
      mappingsBeyondEnd: { table: 'l1' | 'l2'; index: number; cluster?: number }[];
      problems: StructureProblem[];
      /** As `qemu-img check` counts them: active guest clusters with a host cluster or compressed. */
      allocatedClusters: number;
      compressedClusters: number;
      /** Host clusters with an expected (computed) and a stored non-zero refcount. */
      referencedClusters: number;
      storedClusters: number;
    }
  | { readable: false; reason: 'missing' | 'not-qcow2' | 'error'; message: string };

/** What a picture of an image's host clusters needs of its observation (reporting/damage-picture.ts):
 * small enough to keep in every report's step records. */
export interface StructureSketch {
  clusterSize: number;
  refcountBits: number;
  fileLength: number;
  clusterRoles: RoleRun[];
  refcountBlocks: { tableIndex: number; cluster: number }[];
  refcountMismatches: RefcountMismatch[];
  mismatchCounts: Record<RefcountMismatchClass, number>;
  copiedMismatches: { table: 'l1' | 'l2' | 'compressed'; cluster: number; stored: number }[];
  copiedMismatchCount: number;
  beyondEof: { role: ClusterRole; cluster: number }[];
  beyondEofCount: number;
  /** Mappings of guest clusters past the virtual size, with the L2 table's cluster (absent in
   * steps recorded before they were kept). */
  mappingsBeyondEnd?: { table: 'l1' | 'l2'; index: number; cluster?: number }[];
  mappingsBeyondEndCount?: number;
}

/** The sketch of a readable observation; null for an unreadable one. */
export function sketchOf(o: StructureObservation): StructureSketch | null {
  if (!o.readable) return null;
  return {
    clusterSize: o.header.clusterSize,
    refcountBits: o.header.refcountBits,
    fileLength: o.fileLength,
    clusterRoles: o.clusterRoles,
    refcountBlocks: o.refcountBlocks ?? [],
    refcountMismatches: o.refcountMismatches,
    mismatchCounts: o.mismatchCounts,
    copiedMismatches: o.copiedMismatches,
    copiedMismatchCount: o.copiedMismatchCount,
    beyondEof: o.beyondEof,
    beyondEofCount: o.beyondEofCount,
    mappingsBeyondEnd: o.mappingsBeyondEnd,
    mappingsBeyondEndCount: o.mappingsBeyondEndCount,
  };
}

const hex = (n: bigint) => `0x${n.toString(16)}`;

function summariseHeader(h: Qcow2Header): HeaderSummary {
  return {
    ...h,
    incompatibleFeatures: hex(h.incompatibleFeatures),
    compatibleFeatures: hex(h.compatibleFeatures),
    autoclearFeatures: hex(h.autoclearFeatures),
  };
}

const MAX_RANGE_BYTES = 64 * 2 ** 20;

/** The refcount bookkeeping of one walk: qemu's inc_refcounts() over byte ranges. */
class Expected {
  readonly counts = new Map<number, number>();
  readonly roles = new Map<number, ClusterRole>();
  readonly beyondEof: { role: ClusterRole; cluster: number }[] = [];
  beyondEofCount = 0;
  constructor(
    private readonly clusterBits: number,
    private readonly fileClusters: number,
  ) {}

  /** Runs of consecutive referenced clusters with the same role and sharing. */
  roleRuns(): RoleRun[] {
    const runs: RoleRun[] = [];
    for (const cluster of [...this.counts.keys()].sort((a, b) => a - b)) {
      const role = this.roles.get(cluster)!;
      const shared = this.counts.get(cluster)! > 1;
      const last = runs.at(-1);
      if (last && last.last === cluster - 1 && last.role === role && last.shared === shared) last.last = cluster;
      else runs.push({ first: cluster, last: cluster, role, shared });
    }
    return runs;
  }

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
  return e.data.toString('hex');
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
    if (!(await stat(path)).isFile())
      return { readable: false, reason: 'missing', message: `${path} is not a regular file` };
    r = await Qcow2Reader.open(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') return { readable: false, reason: 'missing', message: err.message };
    if (/not a qcow2|cluster_bits/.test(err.message))
      return { readable: false, reason: 'not-qcow2', message: err.message };
    return { readable: false, reason: 'error', message: err.message };
  }
  try {
    return await new StructureWalk(r).run();
  } catch (e) {
    return { readable: false, reason: 'error', message: (e as Error).message };
  } finally {
    await r.close();
  }
}

type CopiedTable = 'l1' | 'l2' | 'compressed';

/** One walk over an image's metadata, in qemu's order (qcow2-refcount.c check_refcounts): each
 * structure adds its references to `expected`; what does not add up is collected on the way. */
class StructureWalk {
  private readonly h: Qcow2Header;
  private readonly cs: number;
  private readonly fmt: L2Format;
  private readonly expected: Expected;
  private readonly problems: StructureProblem[] = [];
  private extensions: HeaderExtension[] = [];
  private extensionError: string | null = null;
  private stored = new Map<number, number>();
  private reftable: RefcountBlockRef[] = [];
  private readonly copiedMismatches: { table: CopiedTable; cluster: number; stored: number }[] = [];
  private copiedMismatchCount = 0;
  private readonly mappingsBeyondEnd: { table: 'l1' | 'l2'; index: number; cluster?: number }[] = [];
  private mappingsBeyondEndCount = 0;
  private allocatedClusters = 0;
  private compressedClusters = 0;
  private snapshots = 0;
  private snapshotTable: SnapshotSummary[] = [];
  private bitmapDirectory: BitmapDirectoryEntry[] = [];
  private bitmapBits: BitmapBits[] = [];

  constructor(private readonly r: Qcow2Reader) {
    this.h = r.header;
    this.cs = r.header.clusterSize;
    this.fmt = l2FormatOf(r.header);
    this.expected = new Expected(r.header.clusterBits, Math.ceil(r.fileLength / r.header.clusterSize));
  }

  async run(): Promise<StructureObservation> {
    try {
      this.extensions = this.r.extensions();
    } catch (e) {
      this.extensionError = (e as Error).message;
    }
    this.expected.add(0, this.cs, 'header');
    // stored refcounts first: the COPIED checks compare against them, like qemu's
    await this.guarded('refcount-table', () => this.readStoredRefcounts());
    await this.guarded('l1-table', () => this.walkL1(this.h.l1TableOffset, this.h.l1Size, true));
    await this.walkSnapshots();
    this.addRefcountStructures();
    this.addCryptoHeader();
    await this.guarded('bitmaps', () => this.walkBitmaps());
    return this.observation();
  }

  /** Runs one part of the walk; an error there is a problem of that name, not the end. */
  private async guarded(what: string, part: () => Promise<void>) {
    try {
      await part();
    } catch (e) {
      this.problem(what, (e as Error).message);
    }
  }

  private problem(what: string, message: string) {
    if (!this.problems.some((p) => p.what === what)) this.problems.push({ what, message });
  }

  private aligned(offset: number) {
    return offset % this.cs === 0;
  }

  private storedOf(cluster: number) {
    return this.stored.get(cluster) ?? 0;
  }

  private copied(table: CopiedTable, cluster: number) {
    this.copiedMismatchCount++;
    if (this.copiedMismatches.length < MAX_LISTED)
      this.copiedMismatches.push({ table, cluster, stored: this.storedOf(cluster) });
  }

  /** `cluster`: the host cluster of the L2 table that maps past the end (a whole one, for an L1
   * entry), for the picture of the damage. */
  private beyondEnd(table: 'l1' | 'l2', index: number, cluster: number) {
    this.mappingsBeyondEndCount++;
    if (this.mappingsBeyondEnd.length < MAX_LISTED) this.mappingsBeyondEnd.push({ table, index, cluster });
  }

  private async readStoredRefcounts() {
    this.reftable = await this.r.refcountBlocks();
    this.stored = await this.r.readRefcounts();
  }

  /** One L1 table and everything it maps (qemu's check_refcounts_l1). Only the active table
   * counts allocated clusters and has meaningful COPIED flags. */
  private async walkL1(offset: number, entries: number, active: boolean) {
    if (entries === 0) return;
    if (!this.aligned(offset)) {
      return this.problem(
        active ? 'l1-table-offset' : 'snapshot-l1-offset',
        `L1 table at ${offset} is not cluster-aligned`,
      );
    }
    const l1 = await this.r.readL1Table(offset, entries);
    this.expected.add(offset, entries * 8, active ? 'l1' : 'snapshot-l1');
    const guestClusters = Math.ceil(this.h.size / this.cs);
    const l2Entries = l2EntriesPerTable(this.cs, this.fmt.extendedL2);
    for (let i = 0; i < l1.length; i++) {
      const { offset: l2Offset, copied } = decodeL1Entry(l1[i]!);
      if (!l2Offset) continue;
      if (active && i * l2Entries >= guestClusters) this.beyondEnd('l1', i, Math.floor(l2Offset / this.cs));
      if (!this.aligned(l2Offset)) {
        this.problem('l2-offset', `L2 table at ${l2Offset} is not cluster-aligned`);
        continue;
      }
      this.expected.add(l2Offset, this.cs, active ? 'l2' : 'snapshot-l2');
      if (active && copied !== (this.storedOf(l2Offset / this.cs) === 1)) this.copied('l1', l2Offset / this.cs);
      // past EOF it is reported as beyond EOF; it would read as zeros
      if (l2Offset < this.r.fileLength) await this.walkL2(l2Offset, i * l2Entries, guestClusters, active);
    }
  }

  /** One L2 table (qemu's check_refcounts_l2): data and compressed clusters, and mappings past
   * the virtual size, which qemu's shrink fully discards (entry and subcluster bitmap zeroed). */
  private async walkL2(offset: number, firstGuest: number, guestClusters: number, active: boolean) {
    const table = await this.r.readL2Table(offset);
    const step = this.fmt.extendedL2 ? 16 : 8;
    const dataFile = this.fmt.dataFile;
    for (const [from, to] of nonZeroChunks(table)) {
      for (let at = from; at < to; at += step) {
        // the common case: an empty entry (and, with extended L2, an empty subcluster bitmap)
        if (isZero(table, at, step)) continue;
        const e = decodeL2Entry(table.readBigUInt64BE(at), this.fmt);
        const guest = firstGuest + at / step;
        // qcow2.txt: bit 0 (reads as zero) is a version 3 feature; in a version 2 image it is
        // reserved, and readers that know v2 only read the cluster behind it (or the backing file)
        // (in a compressed entry bit 0 is part of the host offset)
        if (this.h.version < 3 && e.type !== 'compressed' && table.readUInt32BE(at + 4) & 1)
          this.problem(
            'zero-flag-in-v2',
            `guest cluster ${guest} has the zero flag (bit 0) set in a version 2 image` +
              (active ? '' : " (a snapshot's table)"),
          );
        if (active && guest >= guestClusters) this.beyondEnd('l2', guest, Math.floor(offset / this.cs));
        if (e.type === 'compressed') {
          // qcow2.txt: an image with an external data file has no compressed clusters
          if (dataFile)
            this.problem(
              'data-file-compressed',
              `guest cluster ${guest} is compressed in an image with an external data file`,
            );
          if (active) {
            this.allocatedClusters++;
            this.compressedClusters++;
            if (e.copied) this.copied('compressed', Math.floor(e.offset / this.cs));
          }
          this.expected.add(e.offset, e.length, active ? 'compressed' : 'snapshot-data');
        } else if (e.type === 'normal' || e.type === 'zero-alloc') {
          if (active) this.allocatedClusters++;
          if (!this.aligned(e.offset)) {
            this.problem('data-offset', `data cluster at ${e.offset} is not cluster-aligned`);
            continue;
          }
          if (dataFile) {
            // qcow2.txt: with an external data file the host offset must be the guest offset (qemu
            // marks the image corrupt when it meets another); those clusters are not refcounted
            if (e.offset !== guest * this.cs) {
              this.problem(
                'data-file-offset',
                `guest cluster ${guest} maps to data file offset ${e.offset}, not to its guest offset`,
              );
            }
            continue;
          }
          const role = active ? (e.type === 'zero-alloc' ? 'data-zero' : 'data') : 'snapshot-data';
          this.expected.add(e.offset, this.cs, role);
          if (active && e.copied !== (this.storedOf(e.offset / this.cs) === 1)) this.copied('l2', e.offset / this.cs);
        }
      }
    }
  }

  /** Each snapshot's L1 table and what it maps, then the snapshot table itself. */
  private async walkSnapshots() {
    if (this.h.nbSnapshots === 0) return;
    if (this.fmt.dataFile)
      this.problem('data-file-snapshots', 'an image with an external data file has internal snapshots');
    await this.guarded('snapshot-table', async () => {
      if (!this.aligned(this.h.snapshotsOffset))
        throw new Error(`snapshot table at ${this.h.snapshotsOffset} is not cluster-aligned`);
      const { entries, size } = await this.r.readSnapshots();
      this.snapshots = entries.length;
      this.snapshotTable = entries.map((e) => ({
        id: e.id,
        name: e.name,
        l1Size: e.l1Size,
        diskSize: e.diskSize,
        vmStateSize: e.vmStateSize,
      }));
      for (const sn of entries) await this.walkL1(sn.l1TableOffset, sn.l1Size, false);
      this.expected.add(this.h.snapshotsOffset, size, 'snapshot-table');
    });
  }

  /** The refcount table and the blocks it points to (an oversized table is a header finding). */
  private addRefcountStructures() {
    const bytes = this.h.refcountTableClusters * this.cs;
    if (bytes <= MAX_REFTABLE_BYTES) this.expected.add(this.h.refcountTableOffset, bytes, 'refcount-table');
    for (const { offset } of this.reftable) {
      if (!this.aligned(offset))
        this.problem('refcount-block-offset', `refcount block at ${offset} is not cluster-aligned`);
      else this.expected.add(offset, this.cs, 'refcount-block');
    }
  }

  /** The encryption header (LUKS): a contiguous range named by its extension. */
  private addCryptoHeader() {
    const crypto = this.extensions.find((e) => e.type === EXT_CRYPTO);
    if (!crypto) return;
    try {
      const c = parseCryptoHeaderExtension(crypto.data);
      this.expected.add(c.offset, c.length, 'crypto-header');
    } catch (e) {
      this.problem('crypto-header', (e as Error).message);
    }
  }

  /** Persistent bitmaps: the directory, each bitmap table, each allocated bitmap data cluster. */
  private async walkBitmaps() {
    const bm = this.extensionError ? null : await this.r.readBitmaps();
    if (!bm) return;
    this.bitmapDirectory = bm.directory;
    this.expected.add(bm.extension.directoryOffset, bm.extension.directorySize, 'bitmap-directory');
    for (const entry of bm.directory) {
      this.expected.add(entry.tableOffset, entry.tableSize * 8, 'bitmap-table');
      const table = await this.r.readBitmapTable(entry);
      for (const raw of table) {
        const offset = Number(raw & L1E_OFFSET_MASK);
        if (offset && this.aligned(offset)) this.expected.add(offset, this.cs, 'bitmap-data');
        else if (offset) this.problem('bitmap-data-offset', `bitmap data cluster at ${offset} is not cluster-aligned`);
      }
      const read = (offset: number, length: number) => this.r.read(offset, length);
      this.bitmapBits.push(await readBitmapBits(entry, table, this.h.size, this.cs, read));
    }
  }

  /** Every cluster either side says is in use, in cluster order, where stored and expected
   * refcounts differ. A dirty image's refcounts legitimately lag: not compared. */
  private refcountMismatches(dirty: boolean) {
    const counts: Record<RefcountMismatchClass, number> = { undercounted: 0, overcounted: 0, leaked: 0 };
    const listed: RefcountMismatch[] = [];
    const groups = new Map<string, MismatchGroup>();
    if (dirty) return { counts, listed, groups: [] };
    const clusters = [...new Set([...this.stored.keys(), ...this.expected.counts.keys()])].sort((a, b) => a - b);
    for (const cluster of clusters) {
      const stored = this.storedOf(cluster);
      const expected = this.expected.counts.get(cluster) ?? 0;
      if (stored === expected) continue;
      const cls: RefcountMismatchClass = stored < expected ? 'undercounted' : expected === 0 ? 'leaked' : 'overcounted';
      counts[cls]++;
      const role = this.expected.roles.get(cluster) ?? null;
      if (listed.length < MAX_LISTED) listed.push({ cluster, stored, expected, role, class: cls });
      const shared = expected > 1;
      const key = `${cls}:${role}:${shared}`;
      const group = groups.get(key) ?? { class: cls, role, shared, count: 0 };
      group.count++;
      groups.set(key, group);
    }
    return { counts, listed, groups: [...groups.values()] };
  }

  /** What a resize must keep of the extensions (the bitmap directory and bits are the bitmaps
   * oracle's, by name). */
  private extensionSummaries(): ExtensionSummary[] {
    return this.extensions.map((e) => ({ type: e.type, name: e.name, length: e.length, content: extensionContent(e) }));
  }

  private observation(): StructureObservation {
    const dirty = (this.h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
    const mismatches = this.refcountMismatches(dirty);
    return {
      readable: true,
      fileLength: this.r.fileLength,
      header: summariseHeader(this.h),
      backingFile: this.r.portableBackingFile(),
      extensions: this.extensionSummaries(),
      extensionError: this.extensionError,
      snapshots: this.snapshots,
      snapshotTable: this.snapshotTable,
      bitmaps: this.bitmapDirectory.length,
      bitmapBits: this.bitmapBits,
      refcountsChecked: !dirty,
      mismatchCounts: mismatches.counts,
      refcountMismatches: mismatches.listed,
      mismatchGroups: mismatches.groups,
      clusterRoles: this.expected.roleRuns(),
      refcountBlocks: this.reftable
        .slice(0, MAX_BLOCKS_LISTED)
        .map((b) => ({ tableIndex: b.tableIndex, cluster: Math.floor(b.offset / this.cs) })),
      copiedMismatchCount: dirty ? 0 : this.copiedMismatchCount,
      copiedMismatches: dirty ? [] : this.copiedMismatches,
      beyondEofCount: this.expected.beyondEofCount,
      beyondEof: this.expected.beyondEof,
      mappingsBeyondEndCount: this.mappingsBeyondEndCount,
      mappingsBeyondEnd: this.mappingsBeyondEnd,
      problems: this.problems,
      allocatedClusters: this.allocatedClusters,
      compressedClusters: this.compressedClusters,
      referencedClusters: this.expected.counts.size,
      storedClusters: this.stored.size,
    };
  }
}

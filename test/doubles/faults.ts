// The faults the instar test double (instar-double.ts) can inject, one entry per
// test/doubles/instar-<name> wrapper. Each fault hooks into the double's run: before qemu-img
// runs, after it refused, or after it succeeded. A hook that returns a number ends the double with
// that exit code right there (no "Image resized." / JSON output); returning nothing carries on.
import { spawn } from 'node:child_process';
import {
  appendFile,
  chmod,
  copyFile,
  open,
  rename,
  stat,
  truncate,
  unlink,
  writeFile,
  type FileHandle,
} from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { execa } from 'execa';
import { openImage } from '../../model/commands.ts';
import type { AmendArgs, CheckArgs, OpHooks, SnapshotArgs } from './ops.ts';
import type { BitmapHooks } from './bitmap-op.ts';
import { BITMAP_FAULTS } from './bitmap-faults.ts';
import type { ChainHooks } from './chain-op.ts';
import { CHAIN_FAULTS } from './chain-faults.ts';
import { activeL2Entries } from '../../operations/repair/damage.ts';
import { OFLAG_COPIED } from '../../qcow2/tables.ts';
import {
  COMPAT_LAZY_REFCOUNTS,
  EXT_CRYPTO,
  EXT_DATA_FILE,
  EXT_FEATURE_TABLE,
  HEADER_OFFSET,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  type Qcow2Header,
} from '../../qcow2/format.ts';
import { guestAllocation, withQcow2 } from '../../qcow2/reader.ts';
import { structuralCheck } from '../../qcow2/structure.ts';
import { getRefcountEntry, refcountEntriesPerBlock } from '../../qcow2/tables.ts';
import {
  downgradeHeaderOnly,
  rewriteHeaderExtensions,
  rewriteRefcountBlocks,
  setRefcount,
  writeBytes,
  writeCompatibleFeatures,
  writeVirtualSize,
} from '../../qcow2/edit.ts';
import {
  VHDX_HEADER,
  VPC_DYNAMIC,
  currentVhdxHeader,
  editVhdxHeader,
  editVpcDynamicHeader,
  setVmdkDirectoryEntry,
  vmdkDirectories,
  vpcLayout,
} from './format-edit.ts';

export interface Context {
  file: string;
  /** -f, or "qcow2" when probed; undefined when the format is unknown. */
  format: string | undefined;
  /** Header before the resize (qcow2 only). */
  before: Qcow2Header | undefined;
  oldSize: number | undefined;
  /** The size the request asks for, when it parses. */
  wanted: number | undefined;
  /** Whether --shrink was given. */
  shrink: boolean;
  /** --preallocation, when given. */
  preallocation: string | undefined;
}

export interface AfterContext extends Context {
  /** Header after qemu-img's successful resize (qcow2 only). */
  after: Qcow2Header | undefined;
  newSize: number;
}

type Exit = number | void;

export interface Fault {
  /** What the fault does, for people. */
  what: string;
  /** Images instar documents refusing that this fault accepts (the double refuses them otherwise). */
  accepts?: ('backing-file' | 'data-file')[];
  before?: (c: Context) => Exit | Promise<Exit>;
  refused?: (c: Context, exitCode: number) => Exit | Promise<Exit>;
  after?: (c: AfterContext) => Exit | Promise<Exit>;
  /** Changes the words of a refusal of this image (INSTAR_DOUBLE_CLI=real). */
  reword?: (message: string, image: Qcow2Header | undefined) => string;
  /** vhdx, vmdk, vpc: changes the options the double converts the resized image back with. */
  convertBack?: (own: Record<string, string>) => Record<string, string>;
  /** Hooks into `instar amend` and `instar snapshot` (ops.ts). */
  amend?: OpHooks;
  snapshot?: OpHooks;
  /** Hooks into `instar check` (ops.ts): a repair. */
  check?: OpHooks;
  /** Hooks into `instar bitmap` (bitmap-op.ts). */
  bitmap?: BitmapHooks;
  /** Hooks into `instar commit` and `instar rebase` (chain-op.ts). */
  chain?: ChainHooks;
  /** Changes what --output json prints, and the human output. */
  json?: (r: JsonReport) => JsonReport;
  human?: (text: string) => string;
}

/** What `instar resize --output json` prints. */
export interface JsonReport {
  filename: string;
  format: string;
  action: 'grow' | 'shrink' | 'noop';
  old_virtual_size: number | null;
  new_virtual_size: number;
  new_file_size: number | null;
}

const SUB_BYTE = [1, 2, 4];
const MiB = 2 ** 20;
const isShrink = (c: Context) => c.oldSize !== undefined && c.wanted !== undefined && c.wanted < c.oldSize;
const isGrow = (c: Context) => c.oldSize !== undefined && c.wanted !== undefined && c.wanted > c.oldSize;
const resized = (c: AfterContext) => c.before !== undefined && c.after !== undefined && c.after.size !== c.before.size;
const never = () => new Promise<never>(() => setInterval(() => {}, 1 << 30)); // keep the event loop alive

// 365 defect 2: entries decoded at their true width, re-encoded at a hard-coded 16-bit stride.
function restride16(block: Buffer, h: Qcow2Header): Buffer {
  const out = Buffer.alloc(block.length);
  const n = Math.min(refcountEntriesPerBlock(h.clusterSize, h.refcountBits), block.length / 2);
  for (let i = 0; i < n; i++) out.writeUInt16BE(getRefcountEntry(block, i, h.refcountBits), i * 2);
  return out;
}

// 365 defect 1: sub-byte fields packed from the most significant bit (reverse the fields in each byte).
function msbFirst(block: Buffer, bits: number): Buffer {
  const mask = (1 << bits) - 1;
  return Buffer.from(
    block.map((byte) => {
      let out = 0;
      for (let j = 0; j < 8 / bits; j++) out |= ((byte >> (j * bits)) & mask) << (8 - bits * (j + 1));
      return out;
    }),
  );
}

/**
 * Marks the first cluster at or past the end of the file that an allocated refcount block covers as
 * used (refcount 1), extending the file to include it: qemu-img check only looks at clusters inside
 * the file. Nothing references such a cluster, whatever state the refcounts are in: the result is a
 * pure leak (check exit 3). Returns the cluster, or undefined if no block covers one.
 */
export async function leakOneCluster(file: string): Promise<number | undefined> {
  const free = await withQcow2(file, async (r) => {
    const h = r.header;
    const perBlock = refcountEntriesPerBlock(h.clusterSize, h.refcountBits);
    const end = Math.ceil(r.fileLength / h.clusterSize);
    const used = await r.readRefcounts();
    for (const block of await r.refcountBlocks()) {
      for (
        let cluster = Math.max(end, block.tableIndex * perBlock);
        cluster < (block.tableIndex + 1) * perBlock;
        cluster++
      ) {
        if (!used.has(cluster)) return { cluster, end: (cluster + 1) * h.clusterSize };
      }
    }
    return undefined;
  });
  if (free === undefined) return undefined;
  await truncate(file, free.end);
  await setRefcount(file, free.cluster, 1);
  return free.cluster;
}

/** Appends `bytes` of non-zero data (really written, not a sparse hole) in 1 MiB chunks. */
async function appendData(file: string, bytes: number): Promise<void> {
  const fh = await open(file, 'a');
  try {
    const chunk = Buffer.alloc(MiB, 0x5a);
    for (let done = 0; done < bytes; done += MiB) await fh.write(chunk, 0, Math.min(MiB, bytes - done));
  } finally {
    await fh.close();
  }
}

/** Replaces the file (a new inode, by rename) with a fresh `qemu-img create -f qcow2` image. */
async function replaceWithFresh(file: string, size: number): Promise<void> {
  const tmp = `${file}.instar-double-new`;
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, String(size)]);
  await rename(tmp, file);
}

/** The external data file an image names (relative to the image's directory), or undefined. */
async function dataFileOf(c: Context): Promise<string | undefined> {
  if (!c.before || !(c.before.incompatibleFeatures & INCOMPAT_DATA_FILE)) return undefined;
  const ext = await withQcow2(c.file, async (r) => r.extensions().find((e) => e.type === EXT_DATA_FILE));
  return ext ? resolve(dirname(c.file), ext.data.toString('utf8')) : undefined;
}

/** The bytes of a data file past the new end of a shrink, kept by the keep-data-file-tail fault
 * between its before and after hooks (one resize per process). */
let dataFileTail: { file: string; from: number; length: number; blocks: { at: number; data: Buffer }[] } | undefined;

/** Virtual size now on disk (after qemu-img ran or refused), falling back to the old one. */
async function currentSize(c: Context): Promise<number> {
  const size = await withQcow2(c.file, async (r) => r.header.size).catch(() => undefined);
  return size ?? c.oldSize ?? MiB;
}

/** Host clusters of an image referenced more than once (shared with a snapshot), and those only
 * snapshots reference, as the qcow2 reader sees them. */
async function sharing(file: string): Promise<{ shared: Set<number>; snapshotOnly: Set<number> }> {
  const o = await structuralCheck(file);
  const out = { shared: new Set<number>(), snapshotOnly: new Set<number>() };
  if (!o.readable) return out;
  for (const run of o.clusterRoles) {
    for (let c = run.first; c <= run.last; c++) {
      if (run.shared) out.shared.add(c);
      if (run.role === 'snapshot-data') out.snapshotOnly.add(c);
    }
  }
  return out;
}

/** The image file's length before the resize, kept by the json-old-size-from-file fault. */
let fileLengthBefore: number | undefined;

/** Whether the shrink the zero-flag-header-refcount fault watches discards zero-flag L2 entries,
 * kept between its hooks. */
let discardsZeroFlags = false;

/** The snapshot count the accept-v2-snapshots fault hid from qemu-img, kept between its hooks. */
let hiddenSnapshots: { count: number } | undefined;

/** Every refcount before a snapshot delete, kept by the delete-frees-shared fault between its hooks. */
let refcountsBefore: Map<number, number> | undefined;
/** A repair's input as the repair faults saw it before qemu-img ran. */
let blocksBefore: Map<number, Buffer> | undefined;
let overcountedBefore: number[] = [];
let copiedBefore: { at: number; raw: bigint }[] = [];
let corruptBefore = false;
const repairTier = (c: { args: unknown }) => (c.args as CheckArgs).repair;

/** Clusters shared before a shrink, kept by the drop-shared-on-shrink fault between its hooks. */
let sharedBefore: Set<number> | undefined;

export const FAULTS = {
  none: { what: 'none: qemu-img resize, faithfully' },
  exact: {
    what: 'none: qemu-img resize, faithfully, images with a backing or data file too (no refusal of its own)',
    accepts: ['backing-file', 'data-file'],
  },
  '365-stride': {
    what: 'bug #365: after a shrink of a 1/2/4-bit image, refblock entries rewritten at a 16-bit stride',
    after: async (c) => {
      if (c.before && c.after && SUB_BYTE.includes(c.after.refcountBits) && c.after.size < c.before.size) {
        await rewriteRefcountBlocks(c.file, (block, _ref, h) => restride16(block, h));
      }
    },
  },
  'msb-first': {
    what: 'sub-byte refcounts packed MSB-first after a resize',
    after: async (c) => {
      if (c.after && SUB_BYTE.includes(c.after.refcountBits) && resized(c)) {
        await rewriteRefcountBlocks(c.file, (block, _ref, h) => msbFirst(block, h.refcountBits));
      }
    },
  },
  'refuse-unaligned-shrink': {
    what: 'refuses shrinks to sizes off the cluster grid',
    before: (c) => {
      if (c.before && c.wanted !== undefined && isShrink(c) && c.wanted % c.before.clusterSize !== 0) {
        process.stderr.write(
          `instar-double: refusing to shrink to ${c.wanted}: ` +
            `not a multiple of the cluster size ${c.before.clusterSize}\n`,
        );
        return 1;
      }
    },
  },
  'touch-on-refusal': {
    what: 'appends 512 bytes to the image when qemu-img refuses',
    refused: async (c) => {
      if ((await stat(c.file).catch(() => undefined))?.isFile()) await appendFile(c.file, Buffer.alloc(512));
    },
  },
  'drop-lazy-refcounts': {
    what: 'clears the lazy_refcounts feature bit after a successful resize',
    after: async (c) => {
      if (c.after && c.after.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) {
        await writeCompatibleFeatures(c.file, c.after.compatibleFeatures & ~COMPAT_LAZY_REFCOUNTS);
      }
    },
  },
  'stale-grow-tail': {
    what: 'writes 512 bytes of 0xa5 at the old end after a grow',
    after: async (c) => {
      if (c.format && c.oldSize !== undefined && c.newSize > c.oldSize) {
        const off = Math.floor(c.oldSize / 512) * 512;
        await execa('qemu-io', ['-f', c.format, '-c', `write -P 0xa5 ${off} 512`, c.file], {
          stdout: 'ignore',
          reject: false,
        });
      }
    },
  },
  'crash-on-shrink': {
    what: 'dies by SIGSEGV on any shrink request, before touching the image',
    before: (c) => {
      if (!isShrink(c)) return;
      process.kill(process.pid, 'SIGSEGV');
      return never(); // never run qemu-img while the signal is on its way
    },
  },
  'hang-on-grow': {
    what: 'hangs on a grow request, with a child process, before touching the image',
    before: (c) => {
      if (!isGrow(c)) return;
      spawn('sleep', ['3600'], { stdio: 'ignore' }); // a process tree for the harness to kill
      return never(); // keeps running even if the child is killed alone
    },
  },
  'leak-on-shrink': {
    what: 'after a successful shrink, marks one free host cluster as used (refcount 1): a leak',
    after: async (c) => {
      if (c.before && c.after && c.after.size < c.before.size) await leakOneCluster(c.file);
    },
  },
  'header-only-shrink': {
    what: 'shrinks by rewriting only the virtual size in the header: nothing is discarded',
    before: async (c) => {
      if (!c.before || c.wanted === undefined || !isShrink(c) || !c.shrink || c.wanted <= 0 || c.wanted % 512 !== 0)
        return;
      await writeVirtualSize(c.file, c.wanted);
      return 0;
    },
  },
  'zero-regrow-tail': {
    what: 'after a grow from a size inside a cluster, zeroes the rest of that cluster (qemu shows old bytes there)',
    after: async (c) => {
      if (!c.format || !c.before || c.oldSize === undefined || c.newSize <= c.oldSize) return;
      const end = Math.min(Math.ceil(c.oldSize / c.before.clusterSize) * c.before.clusterSize, c.newSize);
      if (end > c.oldSize)
        await execa('qemu-io', ['-f', c.format, '-c', `write -z ${c.oldSize} ${end - c.oldSize}`, c.file], {
          stdout: 'ignore',
          reject: false,
        });
    },
  },
  'keep-data-file-tail': {
    what:
      'accepts images with an external data file (instar documents refusing them) and, on a shrink, ' +
      'leaves the data file at its old length: the bytes past the new end stay in the data file',
    accepts: ['data-file'],
    before: async (c) => {
      const file = await dataFileOf(c);
      if (!file || c.wanted === undefined || !isShrink(c) || !c.shrink || c.wanted <= 0) return;
      const fh = await open(file, 'r');
      try {
        const length = (await fh.stat()).size;
        const blocks: { at: number; data: Buffer }[] = [];
        const BLOCK = 64 * 1024;
        for (let at = c.wanted; at < length; at += BLOCK) {
          const data = Buffer.alloc(Math.min(BLOCK, length - at));
          await fh.read(data, 0, data.length, at);
          if (data.some((b) => b !== 0)) blocks.push({ at, data });
        }
        dataFileTail = { file, from: c.wanted, length, blocks };
      } finally {
        await fh.close();
      }
    },
    after: async (c) => {
      // qemu-img truncated the data file to the new size; put back what was past it
      if (!dataFileTail || c.newSize >= (c.oldSize ?? 0)) return;
      const { file, length, blocks } = dataFileTail;
      await truncate(file, length);
      await editFile(file, async (fh) => {
        for (const b of blocks) await fh.write(b.data, 0, b.data.length, b.at);
      });
    },
  },
  'encrypted-as-plain': {
    what: 'after resizing an encrypted image, rebuilds its header as plain: crypt_method 0, no crypto header extension',
    after: async (c) => {
      if (!c.after || c.after.cryptMethod === 0) return;
      await writeBytes(c.file, HEADER_OFFSET.cryptMethod, Buffer.alloc(4));
      await rewriteHeaderExtensions(c.file, (exts) => exts.filter((e) => e.type !== EXT_CRYPTO));
    },
  },
  'drop-snapshot-table': {
    what: 'after a resize, rebuilds the header without its snapshot table (nb_snapshots 0, snapshots_offset 0)',
    after: async (c) => {
      if (!c.after || c.after.nbSnapshots === 0) return;
      await writeBytes(c.file, HEADER_OFFSET.nbSnapshots, Buffer.alloc(4));
      await writeBytes(c.file, HEADER_OFFSET.snapshotsOffset, Buffer.alloc(8));
    },
  },
  'accept-v2-snapshots': {
    what: 'resizes a v2 image with internal snapshots, which qemu-img refuses (instar never checks for them)',
    before: async (c) => {
      if (!c.before || c.before.version !== 2 || c.before.nbSnapshots === 0) return;
      // qemu-img underneath resizes the image it sees without snapshots; they are put back after
      hiddenSnapshots = { count: c.before.nbSnapshots };
      await writeBytes(c.file, HEADER_OFFSET.nbSnapshots, Buffer.alloc(4));
    },
    after: async (c) => {
      if (!hiddenSnapshots) return;
      const count = Buffer.alloc(4);
      count.writeUInt32BE(hiddenSnapshots.count);
      await writeBytes(c.file, HEADER_OFFSET.nbSnapshots, count);
    },
    refused: async (c) => {
      if (!hiddenSnapshots) return;
      const count = Buffer.alloc(4);
      count.writeUInt32BE(hiddenSnapshots.count);
      await writeBytes(c.file, HEADER_OFFSET.nbSnapshots, count);
    },
  },
  'round-shrink-to-cluster': {
    what: "rounds a shrink's new size down to a cluster boundary (instar's documented behaviour)",
    before: async (c) => {
      if (!c.before || c.wanted === undefined || !isShrink(c) || !c.shrink || c.preallocation !== undefined) return;
      const cs = c.before.clusterSize;
      if (c.wanted % cs === 0 || c.wanted < cs) return;
      const rounded = Math.floor(c.wanted / cs) * cs;
      // instar needs no key for an encrypted image; qemu-img underneath does: the harness's
      const { options, image } = openImage(c.file, { format: 'qcow2' }, c.before.cryptMethod !== 0);
      const r = await execa('qemu-img', ['resize', '-q', ...options, '--shrink', image, String(rounded)], {
        reject: false,
      });
      process.stderr.write(r.stderr);
      return r.exitCode === 0 ? 0 : 1;
    },
  },
  'zero-flag-header-refcount': {
    what: "on a shrink that discards zero-flag L2 entries, sets the header cluster's refcount to 0",
    before: async (c) => {
      discardsZeroFlags = false;
      if (!c.before || c.wanted === undefined || c.oldSize === undefined || !isShrink(c)) return;
      const from = Math.ceil(c.wanted / c.before.clusterSize) * c.before.clusterSize;
      const counts = await guestAllocation(c.file, from, c.oldSize).catch(() => null);
      discardsZeroFlags = counts !== null && counts['zero-plain'] + counts['zero-alloc'] > 0;
    },
    after: async (c) => {
      if (discardsZeroFlags && c.after && c.after.size < (c.before?.size ?? 0)) await setRefcount(c.file, 0, 0);
    },
  },
  // ---- amend and snapshot (ops.ts) ----
  'downgrade-keeps-zero-flags': {
    what: 'downgrades to compat=0.10 by rebuilding the header only: zero-flag L2 entries stay (active and snapshot)',
    amend: {
      before: async (c) => {
        const a = c.args as AmendArgs;
        const toV2 = a.options.some((o) => /(^|,)compat=(0\.10|v2)(,|$)/.test(o));
        const h = c.before;
        const v3Only = INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
        // what qemu refuses it leaves to qemu-img underneath, and a dirty image too (instar refuses it)
        const refused = h && (h.refcountBits !== 16 || h.incompatibleFeatures & (v3Only | INCOMPAT_DIRTY));
        if (!toV2 || !h || h.version < 3 || refused) return;
        if (a.options.some((o) => /refcount_bits|size=/.test(o))) return;
        await downgradeHeaderOnly(c.file);
        return 0;
      },
    },
  },
  'snapshot-msb-first': {
    what: 'after creating a snapshot of an image with 1, 2 or 4-bit refcounts, rewrites its refcount blocks MSB-first',
    snapshot: {
      after: async (c) => {
        const a = c.args as SnapshotArgs;
        if (a.mode !== 'create' || !c.after || !SUB_BYTE.includes(c.after.refcountBits)) return;
        await rewriteRefcountBlocks(c.file, (block, _ref, h) => msbFirst(block, h.refcountBits));
      },
    },
  },
  'repair-msb-first': {
    what:
      'a repair at 1, 2 or 4-bit refcounts writes the refcount blocks it corrects MSB-first ' +
      "(#365's accessor, which instar's own fuzzer never reaches: it repairs 16-bit images only)",
    check: {
      before: async (c) => {
        blocksBefore = undefined;
        if (!repairTier(c) || !c.before || !SUB_BYTE.includes(c.before.refcountBits)) return;
        blocksBefore = await withQcow2(c.file, async (r) => {
          const blocks = new Map<number, Buffer>();
          for (const b of await r.refcountBlocks()) blocks.set(b.offset, await r.readRefcountBlock(b.offset));
          return blocks;
        });
      },
      after: async (c) => {
        if (!blocksBefore) return;
        const before = blocksBefore;
        await rewriteRefcountBlocks(c.file, (block, ref, h) =>
          before.get(ref.offset)?.equals(block) ? undefined : msbFirst(block, h.refcountBits),
        );
      },
    },
  },
  'repair-leaks-frees-overcounted': {
    what:
      'a repair of tier leaks that takes a live over-counted cluster for a leaked one and frees it ' +
      '(refcount 0), where qemu lowers it to its references',
    check: {
      before: async (c) => {
        overcountedBefore = [];
        if (repairTier(c) !== 'leaks') return;
        const s = await structuralCheck(c.file);
        if (s.readable)
          overcountedBefore = s.refcountMismatches.filter((m) => m.class === 'overcounted').map((m) => m.cluster);
      },
      after: async (c) => {
        for (const cluster of overcountedBefore) await setRefcount(c.file, cluster, 0);
      },
    },
  },
  'repair-skips-copied': {
    what:
      'a repair of tier all that clears the corrupt bit and exits before its OFLAG_COPIED pass: the ' +
      "active L2 entries keep the COPIED flags they had, where qemu's repair sets them to the refcounts",
    check: {
      before: async (c) => {
        copiedBefore = repairTier(c) === 'all' ? await withQcow2(c.file, activeL2Entries) : [];
      },
      after: async (c) => {
        const now = new Map((await withQcow2(c.file, activeL2Entries)).map((e) => [e.at, e.raw]));
        for (const { at, raw } of copiedBefore) {
          const after = now.get(at);
          if (after === undefined || (after & OFLAG_COPIED) === (raw & OFLAG_COPIED)) continue;
          const b = Buffer.alloc(8);
          b.writeBigUInt64BE((after & ~OFLAG_COPIED) | (raw & OFLAG_COPIED));
          await writeBytes(c.file, at, b);
        }
      },
    },
  },
  'repair-exit-counts-fixed': {
    what:
      'a repair of tier all that counts the corruptions it fixed as remaining: exit 2 on an image it ' +
      "left clean (instar's test_check_repair.py records this; the registry holds it as documented)",
    check: {
      before: async (c) => {
        corruptBefore = false;
        if (repairTier(c) !== 'all') return;
        const s = await structuralCheck(c.file);
        // any corruption before the repair: what instar's guest does not subtract
        corruptBefore = s.readable && s.mismatchCounts.undercounted + s.copiedMismatchCount > 0;
      },
      after: () => (corruptBefore ? 2 : undefined),
    },
  },
  'delete-frees-shared': {
    what: 'deleting a snapshot frees the clusters it shared with the image or another snapshot (refcount 0)',
    snapshot: {
      before: async (c) => {
        refcountsBefore = undefined;
        if ((c.args as SnapshotArgs).mode === 'delete')
          refcountsBefore = await withQcow2(c.file, (r) => r.readRefcounts());
      },
      after: async (c) => {
        if (!refcountsBefore) return;
        const after = await withQcow2(c.file, (r) => r.readRefcounts());
        for (const [cluster, was] of refcountsBefore) {
          const now = after.get(cluster) ?? 0;
          // shared before, one reference fewer now (the deleted snapshot's), still referenced
          if (was >= 2 && now >= 1 && now < was) await setRefcount(c.file, cluster, 0);
        }
      },
    },
  },
  'apply-keeps-l1-size': {
    what:
      "applying a snapshot taken at another size keeps the image's size and L1 size, where qemu " +
      "sets the snapshot's size (instar's planner refuses such an apply, error 9)",
    snapshot: {
      after: async (c) => {
        if ((c.args as SnapshotArgs).mode !== 'apply' || !c.before || !c.after) return;
        if (c.after.size === c.before.size) return;
        await writeVirtualSize(c.file, c.before.size);
      },
    },
  },
  'snapshot-keeps-full-table': {
    what:
      'a snapshot creation that never grows the refcount table: where qemu grew it, the header keeps ' +
      'pointing at the old one, and the clusters past its reach go without refcounts',
    snapshot: {
      after: async (c) => {
        if ((c.args as SnapshotArgs).mode !== 'create' || !c.before || !c.after) return;
        if (c.after.refcountTableClusters <= c.before.refcountTableClusters) return;
        const old = Buffer.alloc(12);
        old.writeBigUInt64BE(BigInt(c.before.refcountTableOffset));
        old.writeUInt32BE(c.before.refcountTableClusters, 8);
        await writeBytes(c.file, HEADER_OFFSET.refcountTableOffset, old);
      },
    },
  },
  'snapshot-id-by-count': {
    what:
      'a snapshot creation that numbers the new snapshot by how many the image has, where qemu takes ' +
      'the highest id plus one: after a delete, two snapshots share an id',
    snapshot: {
      after: async (c) => {
        if ((c.args as SnapshotArgs).mode !== 'create' || !c.after) return;
        const offset = c.after.snapshotsOffset;
        const last = await withQcow2(c.file, async (r) => (await r.readSnapshots()).entries.at(-1));
        const counted = String(c.after.nbSnapshots);
        // an id of another length would move the entries after it: those cases are left alone
        if (!last || last.id === counted || last.id.length !== counted.length) return;
        await writeBytes(c.file, offset + last.tableOffset + 40 + last.extraData.length, Buffer.from(counted));
      },
    },
  },
  'amend-leaves-dirty': {
    what: 'an amend that rewrites the header (compat, refcount width) leaves the dirty bit it set while it worked',
    amend: {
      after: async (c) => {
        if (!c.before || !c.after || c.after.version < 3) return;
        const rewritten = c.before.version !== c.after.version || c.before.refcountBits !== c.after.refcountBits;
        if (!rewritten) return;
        const b = Buffer.alloc(8);
        b.writeBigUInt64BE(c.after.incompatibleFeatures | INCOMPAT_DIRTY);
        await writeBytes(c.file, HEADER_OFFSET.incompatibleFeatures, b);
      },
    },
  },
  'drop-feature-table': {
    what: 'after a successful grow or shrink, removes the feature name table header extension',
    after: async (c) => {
      if (resized(c)) await rewriteHeaderExtensions(c.file, (exts) => exts.filter((e) => e.type !== EXT_FEATURE_TABLE));
    },
  },
  'exit0-untouched': {
    what: "exits 0 (and says 'Image resized.') without running qemu-img or touching the image",
    before: () => 0,
  },
  'delete-image': {
    what: 'runs qemu-img resize, then deletes the image file and exits 0, whatever qemu-img did',
    refused: async (c) => (await unlink(c.file), 0),
    after: async (c) => (await unlink(c.file), 0),
  },
  'replace-image': {
    what:
      'runs qemu-img resize, then replaces the image with a fresh empty qcow2 image ' +
      'of the resulting virtual size (default options) and exits 0',
    refused: async (c) => (await replaceWithFresh(c.file, await currentSize(c)), 0),
    after: async (c) => (await replaceWithFresh(c.file, c.newSize), 0),
  },
  'truncate-zero': {
    what: 'runs qemu-img resize, then truncates the image file to 0 bytes and exits 0, whatever qemu-img did',
    refused: async (c) => (await truncate(c.file, 0), 0),
    after: async (c) => (await truncate(c.file, 0), 0),
  },
  'huge-file': {
    what:
      'runs qemu-img resize, then appends 200 MiB of real (non-zero, non-sparse) data to the image file ' +
      'and exits 0, whatever qemu-img did',
    refused: async (c) => (await appendData(c.file, 200 * MiB), 0),
    after: async (c) => (await appendData(c.file, 200 * MiB), 0),
  },
  'stderr-flood': {
    what: 'writes 20 MiB to stderr before doing anything, then behaves faithfully',
    before: () => {
      const line = Buffer.from(`${'instar-double: stderr flood '.repeat(36)}\n`); // 1009 bytes
      const chunk = Buffer.concat(Array.from({ length: 1039 }, () => line)); // about 1 MiB
      // Synchronous on pipes and files: blocks until the reader takes it, as a real flood does.
      for (let done = 0; done < 20 * MiB; done += chunk.length)
        process.stderr.write(chunk.subarray(0, Math.min(chunk.length, 20 * MiB - done)));
    },
  },
  'sigkill-self': {
    what: 'kills itself with SIGKILL before touching the image',
    before: () => {
      process.kill(process.pid, 'SIGKILL');
      return never();
    },
  },
  'refuse-full-preallocation': {
    what: 'refuses --preallocation full (qemu-img accepts it on a grow)',
    before: (c) => {
      if (c.preallocation !== 'full') return;
      process.stderr.write('instar-double: full preallocation is not implemented\n');
      return 1;
    },
  },
  'unrefcounted-l1-grow': {
    what: "after a grow that moved the L1 table to a new place, leaves the new table's clusters at refcount 0",
    after: async (c) => {
      if (!c.before || !c.after || c.after.l1TableOffset === c.before.l1TableOffset) return;
      const { clusterSize, l1TableOffset, l1Size } = c.after;
      const first = l1TableOffset / clusterSize;
      for (let i = 0; i < Math.max(1, Math.ceil((l1Size * 8) / clusterSize)); i++)
        await setRefcount(c.file, first + i, 0);
    },
  },
  'drop-shared-on-shrink': {
    what: 'a shrink frees the discarded clusters a snapshot still shares (refcount 0) instead of decrementing them',
    before: async (c) => {
      if (c.before && c.before.nbSnapshots > 0 && isShrink(c) && c.shrink)
        sharedBefore = (await sharing(c.file)).shared;
    },
    after: async (c) => {
      if (!sharedBefore || !c.after || c.after.size >= (c.before?.size ?? 0)) return;
      const { snapshotOnly } = await sharing(c.file);
      for (const cluster of sharedBefore) if (snapshotOnly.has(cluster)) await setRefcount(c.file, cluster, 0);
    },
  },
  'json-old-size-from-file': {
    what: "--output json reports the file's length before the resize as old_virtual_size",
    before: async (c) => {
      fileLengthBefore = (await stat(c.file).catch(() => undefined))?.size;
    },
    json: (r) => ({ ...r, old_virtual_size: fileLengthBefore ?? r.old_virtual_size }),
  },
  'human-output-differs': {
    what: "prints 'Image resized successfully.' instead of qemu-img's 'Image resized.'",
    human: () => 'Image resized successfully.\n',
  },
  'reword-zstd-refusal': {
    what: 'refuses zstd images with other words than instar documents (INSTAR_DOUBLE_CLI=real)',
    reword: (m, h) =>
      h?.compressionType === 1 ? m.replace('format does not support resize', 'zstd compression is not supported') : m,
  },
  'ignore-preallocation': {
    what: 'grows without the preallocation asked for (as if --preallocation were off)',
    before: async (c) => {
      if (!c.format || c.wanted === undefined || !isGrow(c) || !c.preallocation || c.preallocation === 'off') return;
      const run = await execa('qemu-img', ['resize', '-q', '-f', c.format, c.file, String(c.wanted)], {
        reject: false,
      });
      return run.exitCode ?? 1;
    },
  },
  'blow-up-grow': {
    what: 'after a grow, keeps 64 MiB of host blocks allocated past the end of the file (fallocate --keep-size)',
    after: async (c) => {
      if (c.oldSize === undefined || c.newSize <= c.oldSize) return;
      const end = (await stat(c.file)).size;
      await execa('fallocate', ['-n', '-o', String(end), '-l', String(64 * 2 ** 20), c.file]);
    },
  },
  'replace-by-rename': {
    what: 'writes the resized image to a new file and renames it over the old one: a new inode, the same bytes',
    after: async (c) => {
      if (!resized(c)) return;
      await copyFile(c.file, `${c.file}.resizing`);
      await rename(`${c.file}.resizing`, c.file);
    },
  },
  'chmod-result': {
    what: 'leaves the resized image readable by its owner only (mode 600)',
    after: async (c) => {
      if (resized(c)) await chmod(c.file, 0o600);
    },
  },
  'leave-journal': {
    what: 'leaves a journal file next to the image after a resize',
    after: async (c) => {
      if (resized(c)) await writeFile(`${c.file}.journal-${process.pid}`, 'resize journal\n');
    },
  },
  'raw-sector-rounding': {
    what: 'resizes a raw image to whole 512-byte sectors: a size off the sector grid is rounded up',
    before: async (c) => {
      if (c.format !== 'raw' || c.wanted === undefined || c.wanted % 512 === 0) return;
      const args = ['resize', '-q', '-f', 'raw', ...(c.shrink ? ['--shrink'] : [])];
      if (c.preallocation) args.push(`--preallocation=${c.preallocation}`);
      const run = await execa('qemu-img', [...args, c.file, String(Math.ceil(c.wanted / 512) * 512)], {
        reject: false,
      });
      return run.exitCode ?? 1;
    },
  },
  'raw-grow-writes-zeros': {
    what: 'grows a raw image by writing zeros over the new range (allocating it) where no preallocation was asked',
    after: async (c) => {
      if (c.format !== 'raw' || c.oldSize === undefined || c.newSize <= c.oldSize) return;
      if (c.preallocation && c.preallocation !== 'off') return;
      const end = (await stat(c.file)).size;
      await editFile(c.file, async (file) => {
        const chunk = Buffer.alloc(MiB);
        for (let at = c.oldSize!; at < end; at += chunk.length)
          await file.write(chunk, 0, Math.min(chunk.length, end - at), at);
      });
    },
  },
  'vpc-stale-checksum': {
    what: 'grows a vpc image but leaves the footer checksum as it was before the new size was written',
    after: async (c) => {
      if (c.format !== 'vpc' || !grown(c)) return;
      await editFile(c.file, async (file) => {
        const length = (await file.stat()).size;
        // the footer at the end, and its copy at the start of a dynamic image
        for (const at of [0, length - 512]) {
          const footer = Buffer.alloc(512);
          await file.read(footer, 0, 512, at);
          if (footer.toString('latin1', 0, 8) !== 'conectix') continue;
          footer.writeUInt32BE((footer.readUInt32BE(64) ^ 0x5a5a) >>> 0, 64);
          await file.write(footer, 0, 512, at);
        }
      });
    },
  },
  'vmdk-descriptor-old-size': {
    what: "grows a vmdk image's header capacity and grain tables but leaves its descriptor's extent at the old size",
    after: async (c) => {
      if (c.format !== 'vmdk' || !grown(c)) return;
      await editFile(c.file, async (file) => {
        const head = Buffer.alloc(64 * 1024);
        await file.read(head, 0, head.length, 0);
        const text = head.toString('latin1');
        const extent = /RW (\d+) /.exec(text);
        if (!extent) return;
        const old = `RW ${c.oldSize! / 512} `;
        // the descriptor area is zero-filled past its text: the same bytes, one extent line changed
        const rest = text.slice(extent.index + extent[0].length, text.indexOf('\0', extent.index));
        const rewritten = Buffer.from(`${old}${rest}`.padEnd(extent[0].length + rest.length, '\0'), 'latin1');
        await file.write(rewritten, 0, rewritten.length, extent.index);
      });
    },
  },
  'vhdx-default-layout': {
    what: "rebuilds a grown vhdx with qemu's default block and log sizes instead of the image's own",
    convertBack: ({ subformat }) => ({ subformat: subformat! }),
  },
  'vpc-stale-dynamic-checksum': {
    what: "grows a dynamic vpc and writes its dynamic header's new BAT size, but keeps the header's old checksum",
    before: async (c) => {
      staleVpcChecksum = undefined;
      if (c.format !== 'vpc') return;
      const { header } = await vpcLayout(c.file).catch(() => ({ header: null }));
      if (header) staleVpcChecksum = header.checksum;
    },
    after: async (c) => {
      if (c.format !== 'vpc' || !grown(c) || staleVpcChecksum === undefined) return;
      const old = staleVpcChecksum;
      await editVpcDynamicHeader(c.file, (b) => b.writeUInt32BE(old, VPC_DYNAMIC.checksum), true);
    },
  },
  'vmdk-stale-redundant-gd': {
    what: 'grows a vmdk and gives the grown range grain tables in its grain directory, not in the redundant one',
    after: async (c) => {
      if (c.format !== 'vmdk' || !grown(c)) return;
      const { header, rgd } = await vmdkDirectories(c.file);
      if (!rgd.sector) return;
      const oldEntries = Math.ceil(c.oldSize! / 512 / (header.grainSize * header.numGTEsPerGT));
      for (let i = oldEntries; i < rgd.entries.length; i++) await setVmdkDirectoryEntry(c.file, rgd.sector, i, 0);
    },
  },
  'vhdx-stale-header-checksum': {
    what: "grows a vhdx and writes a new data write GUID into its older header, keeping that header's old checksum",
    after: async (c) => {
      if (c.format !== 'vhdx' || !grown(c)) return;
      const older = (await currentVhdxHeader(c.file)) === 0 ? 1 : 0;
      await editVhdxHeader(
        c.file,
        older,
        (b) => b.fill(0x42, VHDX_HEADER.dataWriteGuid, VHDX_HEADER.dataWriteGuid + 16),
        true,
      );
    },
  },
  'vmdk-gd-unallocated': {
    what: "grows a vmdk's capacity but leaves the grain directory entries of the grown range empty (no grain tables)",
    after: async (c) => {
      if (c.format !== 'vmdk' || !grown(c)) return;
      const { header, gd, rgd } = await vmdkDirectories(c.file);
      const oldEntries = Math.ceil(c.oldSize! / 512 / (header.grainSize * header.numGTEsPerGT));
      for (let i = oldEntries; i < gd.entries.length; i++) {
        await setVmdkDirectoryEntry(c.file, gd.sector, i, 0);
        if (rgd.sector) await setVmdkDirectoryEntry(c.file, rgd.sector, i, 0);
      }
    },
  },
  ...BITMAP_FAULTS,
  ...CHAIN_FAULTS,
} satisfies Record<string, Fault>;

/** The dynamic header's checksum before the resize, kept by the vpc-stale-dynamic-checksum fault. */
let staleVpcChecksum: number | undefined;

/** Runs `edit` on a file opened for writing, and closes it. */
async function editFile(path: string, edit: (file: FileHandle) => Promise<void>): Promise<void> {
  const file = await open(path, 'r+');
  try {
    await edit(file);
  } finally {
    await file.close();
  }
}

/** Whether a step grew the image. */
const grown = (c: AfterContext) => c.oldSize !== undefined && c.newSize > c.oldSize;

export type FaultName = keyof typeof FAULTS;
export const FAULT_NAMES = Object.keys(FAULTS) as FaultName[];

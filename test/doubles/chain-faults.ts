// The commit and rebase faults of the instar test double (faults.ts holds the others): how code
// that writes across a chain really breaks. Each is qemu-img's commit or rebase underneath and one
// edit around it, through the refcount and table code the operations share with resize.
import { readRefcounts, setRefcount, writeBytes } from '../../qcow2/edit.ts';
import { withQcow2 } from '../../qcow2/reader.ts';
import { activeL2Entries } from '../../operations/repair/damage.ts';
import { hasExtendedL2 } from '../../qcow2/format.ts';
import { decodeL1Entry, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED } from '../../qcow2/tables.ts';
import type { ChainContext, ChainHooks } from './chain-op.ts';
import { vmdkMappedGrains } from './format-edit.ts';
import { stat } from 'node:fs/promises';

/** The data clusters that L2 tables allocated by the call (absent from `before`) point at without
 * OFLAG_COPIED: those the copied table shares with a snapshot. */
const sharedViaNewTables = (file: string, before: Map<number, number>) =>
  withQcow2(file, async (r) => {
    const cs = r.header.clusterSize;
    const step = hasExtendedL2(r.header) ? 16 : 8;
    const shared: number[] = [];
    for (const l1 of await r.readL1Table()) {
      const { offset } = decodeL1Entry(l1);
      if (offset === 0 || before.has(offset / cs)) continue;
      const table = await r.readL2Table(offset);
      for (let at = 0; at + 8 <= table.length; at += step) {
        const raw = table.readBigUInt64BE(at);
        const host = Number(raw & L2E_OFFSET_MASK);
        if (host && !(raw & OFLAG_COPIED) && !(raw & OFLAG_COMPRESSED)) shared.push(host / cs);
      }
    }
    return shared;
  });

const refcountOf = (file: string, cluster: number) => withQcow2(file, (r) => r.refcountOf(cluster));

const isQcow2 = (file: string) => withQcow2(file, async () => true).catch(() => false);

/** Refcounts read before the call, for the `after` hook of the same call (one call per process). */
let refcountsBefore = new Map<number, number>();

const remember = async (file: string | null) => {
  refcountsBefore = file && (await isQcow2(file)) ? await readRefcounts(file) : new Map();
};

/** The grain table entries of the vmdk a commit writes into, read before the call. */
let grainsBefore = new Set<number>();

export const CHAIN_FAULTS = {
  'commit-vmdk-drops-last-grain': {
    what:
      'a vmdk commit writes the grains into the base but leaves the grain table entry of the last one ' +
      'it allocates unwritten (the grain reads through to the level below, or as zeros)',
    chain: {
      before: async (c: ChainContext) => {
        const vmdk = c.args.kind === 'commit' && c.args.format === 'vmdk' && c.member !== null;
        grainsBefore = new Set(vmdk ? (await vmdkMappedGrains(c.member!)).map((g) => g.at) : []);
      },
      after: async (c: ChainContext) => {
        if (c.args.kind !== 'commit' || c.args.format !== 'vmdk' || !c.member) return;
        const added = (await vmdkMappedGrains(c.member)).filter((g) => !grainsBefore.has(g.at));
        const last = added.at(-1);
        if (last) await writeBytes(c.member, last.at, Buffer.alloc(4));
      },
    } satisfies ChainHooks,
  },
  'commit-leaves-base-refcounts': {
    what:
      "a commit writes the overlay's data, L2 and L1 entries into the base but never the refcounts of " +
      'the clusters it allocates there (they stay 0)',
    chain: {
      before: async (c: ChainContext) => {
        if (c.args.kind === 'commit') await remember(c.member);
      },
      after: async (c: ChainContext) => {
        if (c.args.kind !== 'commit' || !c.member || !(await isQcow2(c.member))) return;
        for (const [cluster] of await readRefcounts(c.member))
          if (!refcountsBefore.has(cluster)) await setRefcount(c.member, cluster, 0);
      },
    } satisfies ChainHooks,
  },
  'commit-empties-l2-keeps-refcounts': {
    what:
      'a commit without -b empties the overlay by zeroing its L2 entries but leaves the refcounts of ' +
      'the data clusters they pointed at (every one leaks)',
    chain: {
      before: async (c: ChainContext) => {
        // instar keeps an overlay with snapshots as it is; qemu's own emptying is replaced by this one
        if (c.args.kind === 'commit' && c.args.base === undefined && c.before?.nbSnapshots === 0)
          c.extraArgs.push('-d');
      },
      after: async (c: ChainContext) => {
        if (!c.extraArgs.includes('-d')) return;
        const entries = await withQcow2(c.file, (r) => activeL2Entries(r));
        for (const e of entries) await writeBytes(c.file, e.at, Buffer.alloc(8));
      },
    } satisfies ChainHooks,
  },
  'rebase-vmdk-grain-past-eof': {
    what:
      "a vmdk rebase -u rewrites the descriptor and, through a stale offset, the top's first mapped grain " +
      'table entry to a sector past the end of the file (qemu-img refuses every vmdk rebase: the result ' +
      'is checked alone)',
    chain: {
      after: async (c: ChainContext) => {
        if (c.args.kind !== 'rebase' || c.args.format !== 'vmdk') return;
        const first = (await vmdkMappedGrains(c.file))[0];
        if (!first) return;
        const past = Buffer.alloc(4);
        past.writeUInt32LE(Math.ceil((await stat(c.file)).size / 512) + 128);
        await writeBytes(c.file, first.at, past);
      },
    } satisfies ChainHooks,
  },
  'rebase-backing-overwrites-extension': {
    what:
      'a rebase writes the new backing file name at the end of the header, over the header extensions ' +
      'that follow it, and points backing_file_offset there',
    chain: {
      after: async (c: ChainContext) => {
        if (c.args.kind !== 'rebase' || c.args.backing === '' || !c.before) return;
        const name = Buffer.from(c.args.backing);
        const at = c.before.headerLength;
        const fields = Buffer.alloc(12);
        fields.writeBigUInt64BE(BigInt(at), 0);
        fields.writeUInt32BE(name.length, 8);
        await writeBytes(c.file, at, name);
        await writeBytes(c.file, 8, fields);
      },
    } satisfies ChainHooks,
  },
  'rebase-safe-undercounts-shared-l2': {
    what:
      'a safe rebase that copies clusters into an L2 table a snapshot shares copies the table, and then ' +
      'counts the clusters the copy shares with the snapshot as its own: one reference too few each ' +
      '(instar #421, kept)',
    chain: {
      before: async (c: ChainContext) => {
        const copies = c.args.kind === 'rebase' && !c.args.unsafe && (c.before?.nbSnapshots ?? 0) > 0;
        refcountsBefore = copies ? await readRefcounts(c.file) : new Map();
      },
      after: async (c: ChainContext) => {
        if (refcountsBefore.size === 0) return;
        for (const cluster of await sharedViaNewTables(c.file, refcountsBefore))
          await setRefcount(c.file, cluster, Math.max(0, (await refcountOf(c.file, cluster)) - 1));
      },
    } satisfies ChainHooks,
  },
};

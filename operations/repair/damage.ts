import { open, truncate } from 'node:fs/promises';
import type { Damage, DamageKind } from './step.ts';
import { setRefcountEntry } from '../../qcow2/edit.ts';
import { hasExtendedL2 } from '../../qcow2/format.ts';
import { withQcow2, type Qcow2Reader } from '../../qcow2/reader.ts';
import { structuralCheck } from '../../qcow2/structure.ts';
import {
  decodeL1Entry,
  L2E_OFFSET_MASK,
  OFLAG_COMPRESSED,
  OFLAG_COPIED,
  refcountEntriesPerBlock,
} from '../../qcow2/tables.ts';

// The damage a repair step is judged on: the harness writes it into the base image after the
// build, with its own qcow2 writer, so both sides start from the same damaged bytes. A case states
// a damage by its kind and a pick among the places the built image offers for it; what it hit and
// the bytes written are recorded (repro.sh writes the same bytes with dd).

/** Bytes written at a host offset, or the file's new length. */
export type Patch = { offset: number; hex: string } | { length: number };

/** What a damage did to the image: what it hit (null: the image offered no place for it) and the
 * bytes written. */
export interface AppliedDamage {
  kind: DamageKind;
  hit: string | null;
  /** The role of the cluster hit (data, l2, refcount-block, ...), a registry fact. */
  role: string | null;
  patches: Patch[];
}

/** The bytes of `after` that differ from `before`, as one patch at `offset` + the first
 * difference (null when equal). */
function diffPatch(offset: number, before: Buffer, after: Buffer): Patch | null {
  let first = 0;
  while (first < before.length && before[first] === after[first]) first++;
  if (first === before.length) return null;
  let last = before.length - 1;
  while (before[last] === after[last]) last--;
  return { offset: offset + first, hex: after.subarray(first, last + 1).toString('hex') };
}

const pickOf = <T>(items: readonly T[], pick: number): T | undefined =>
  items.length === 0 ? undefined : items[pick % items.length];

/** Stores `value` as the refcount of host cluster `cluster`: the patch, null where its refcount
 * block is not allocated. */
async function refcountPatch(r: Qcow2Reader, cluster: number, value: number): Promise<Patch | null> {
  const h = r.header;
  const perBlock = refcountEntriesPerBlock(h.clusterSize, h.refcountBits);
  const blockOffset = (await r.readRefcountTable())[Math.floor(cluster / perBlock)];
  if (!blockOffset) return null;
  const before = await r.readRefcountBlock(blockOffset);
  const after = Buffer.from(before);
  setRefcountEntry(after, cluster % perBlock, h.refcountBits, value);
  return diffPatch(blockOffset, before, after);
}

interface Place {
  cluster: number;
  role: string;
  stored: number;
}

/** Every referenced host cluster with its role and stored refcount, in cluster order. */
async function referenced(path: string, r: Qcow2Reader): Promise<Place[]> {
  const s = await structuralCheck(path);
  if (!s.readable) return [];
  const stored = await r.readRefcounts();
  const places: Place[] = [];
  for (const run of s.clusterRoles)
    for (let c = run.first; c <= run.last; c++) {
      const role = run.shared ? `${run.role} (shared)` : run.role;
      places.push({ cluster: c, role, stored: stored.get(c) ?? 0 });
    }
  return places;
}

/** The active L2 entries that map a standard (not compressed) host cluster: where each is. */
export async function activeL2Entries(r: Qcow2Reader): Promise<{ at: number; raw: bigint }[]> {
  const h = r.header;
  const entryBytes = hasExtendedL2(h) ? 16 : 8;
  const out: { at: number; raw: bigint }[] = [];
  for (const l1 of await r.readL1Table()) {
    const { offset } = decodeL1Entry(l1);
    if (offset === 0 || offset >= r.fileLength) continue;
    const table = await r.readL2Table(offset);
    for (let at = 0; at + 8 <= table.length; at += entryBytes) {
      const raw = table.readBigUInt64BE(at);
      if (raw & OFLAG_COMPRESSED || (raw & L2E_OFFSET_MASK) === 0n) continue;
      out.push({ at: offset + at, raw });
    }
  }
  return out;
}

const u64Patch = (at: number, raw: bigint): Patch => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(raw);
  return { offset: at, hex: b.toString('hex') };
};

/** Works out what `damage` writes into the qcow2 image at `path` (nothing is written). */
export function planDamage(path: string, damage: Damage): Promise<AppliedDamage> {
  return withQcow2(path, async (r) => {
    const h = r.header;
    const max = h.refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** h.refcountBits - 1;
    const none: AppliedDamage = { kind: damage.kind, hit: null, role: null, patches: [] };
    const onRefcount = async (p: Place | undefined, value: (stored: number) => number) => {
      if (!p) return none;
      const patch = await refcountPatch(r, p.cluster, value(p.stored));
      if (!patch) return none;
      const hit = `cluster ${p.cluster} (${p.role}) refcount ${p.stored} -> ${value(p.stored)}`;
      return { ...none, hit, role: p.role, patches: [patch] };
    };
    switch (damage.kind) {
      case 'refcount-high': {
        const places = (await referenced(path, r)).filter((p) => p.stored < max);
        return onRefcount(pickOf(places, damage.pick), (n) => n + 1);
      }
      case 'refcount-low': {
        const places = (await referenced(path, r)).filter((p) => p.stored > 0);
        return onRefcount(pickOf(places, damage.pick), (n) => n - 1);
      }
      case 'refcount-zero': {
        const places = (await referenced(path, r)).filter((p) => p.stored > 0);
        return onRefcount(pickOf(places, damage.pick), () => 0);
      }
      case 'leak':
        return leak(r, damage, none);
      case 'reftable-entry-gone': {
        const blocks = await r.refcountBlocks();
        const block = pickOf(blocks, damage.pick);
        if (!block) return none;
        const at = h.refcountTableOffset + block.tableIndex * 8;
        const hit = `refcount table entry ${block.tableIndex} (block at ${block.offset}) zeroed`;
        return { ...none, hit, role: 'refcount-table', patches: [u64Patch(at, 0n)] };
      }
      case 'stale-copied': {
        const entry = pickOf(await activeL2Entries(r), damage.pick);
        if (!entry) return none;
        const raw = entry.raw ^ OFLAG_COPIED;
        const cluster = Number((entry.raw & L2E_OFFSET_MASK) / BigInt(h.clusterSize));
        const hit = `L2 entry at ${entry.at} (cluster ${cluster}) COPIED ${raw & OFLAG_COPIED ? 'set' : 'cleared'}`;
        return { ...none, hit, role: 'l2', patches: [u64Patch(entry.at, raw)] };
      }
      case 'overlap': {
        const entry = pickOf(await activeL2Entries(r), damage.pick);
        const metadata = [h.l1TableOffset, h.refcountTableOffset, ...(await r.refcountBlocks()).map((b) => b.offset)];
        const target = pickOf(metadata, Math.floor(damage.pick / 7));
        if (!entry || target === undefined) return none;
        const raw = (entry.raw & ~L2E_OFFSET_MASK) | BigInt(target);
        const what =
          target === h.l1TableOffset ? 'l1' : target === h.refcountTableOffset ? 'refcount-table' : 'refcount-block';
        const hit = `L2 entry at ${entry.at} pointed at the ${what} cluster at ${target}`;
        return { ...none, hit, role: what, patches: [u64Patch(entry.at, raw)] };
      }
    }
  });
}

/** A leak: a cluster inside the file that nothing references and no refcount holds, covered by an
 * allocated refcount block; or, with none, one cluster appended to the file. */
async function leak(r: Qcow2Reader, damage: Damage, none: AppliedDamage): Promise<AppliedDamage> {
  const h = r.header;
  const perBlock = refcountEntriesPerBlock(h.clusterSize, h.refcountBits);
  const fileClusters = Math.ceil(r.fileLength / h.clusterSize);
  const table = await r.readRefcountTable();
  const stored = await r.readRefcounts();
  const free: number[] = [];
  for (let c = 1; c < fileClusters; c++) if (!stored.has(c) && table[Math.floor(c / perBlock)]) free.push(c);
  const inside = pickOf(free, damage.pick);
  const cluster = inside ?? fileClusters;
  const patch = await refcountPatch(r, cluster, 1);
  if (!patch) return none;
  const grown = inside === undefined ? [{ length: (fileClusters + 1) * h.clusterSize }] : [];
  const hit = `cluster ${cluster} (${inside === undefined ? 'appended' : 'free'}) refcount 0 -> 1`;
  return { ...none, hit, role: null, patches: [...grown, patch] };
}

/** Writes the patches into the file, in order. */
export async function applyPatches(path: string, patches: readonly Patch[]): Promise<void> {
  for (const p of patches) {
    if ('length' in p) {
      await truncate(path, p.length);
      continue;
    }
    const fh = await open(path, 'r+');
    try {
      const data = Buffer.from(p.hex, 'hex');
      await fh.write(data, 0, data.length, p.offset);
    } finally {
      await fh.close();
    }
  }
}

/** Works out a damage on the image and writes it. */
export async function damageImage(path: string, damage: Damage): Promise<AppliedDamage> {
  const applied = await planDamage(path, damage);
  await applyPatches(path, applied.patches);
  return applied;
}

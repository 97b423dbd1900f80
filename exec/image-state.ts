import { stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { formatVirtualSize } from '../formats/structure.ts';
import { isConverted, MAX_CHAIN_DEPTH, type Case } from '../model/case.ts';
import { rawVirtualSize } from '../model/plan.ts';
import type { ChainLink, ImageState } from '../model/state.ts';
import { COMPAT_LAZY_REFCOUNTS, INCOMPAT_DATA_FILE, INCOMPAT_EXTL2 } from '../qcow2/format.ts';
import { withQcow2 } from '../qcow2/reader.ts';
import { vmdkBackingName } from '../formats/vmdk.ts';

// What an image is between steps, read from it: the state the operations' rules take (model/state.ts)
// and the oracles judge by. A qcow2 header and snapshot table, a raw file's length, a vpc's, vhdx's
// or vmdk's structures: a few small reads, no process.

/** A side's virtual size as qemu sees it: a qcow2 header's size field, a raw file's length in whole
 * sectors, a vpc's footer, a vhdx's metadata, a vmdk's extent headers and descriptor (formats/).
 * null where the image cannot be read. */
export function readVirtualSize(file: string, c: Case): Promise<number | null> {
  const { format } = c.image;
  const size =
    format === 'raw'
      ? stat(file).then((s) => rawVirtualSize(s.size))
      : isConverted(format)
        ? formatVirtualSize(file, format)
        : withQcow2(file, async (r) => r.header.size);
  return size.catch(() => null);
}

/** The state of a side's image as read from it; null where it cannot be read. Other formats than
 * qcow2 have only a size: the rest is the case's. */
export async function readImageState(file: string, c: Case): Promise<ImageState | null> {
  if (c.image.format !== 'qcow2') {
    const size = await readVirtualSize(file, c);
    if (size === null) return null;
    const { compat, refcountBits, lazyRefcounts, extendedL2 } = c.image;
    const state: ImageState = { size, compat, refcountBits, lazyRefcounts, extendedL2, dataFile: false, snapshots: [] };
    // the top of a vmdk chain: its chain from its descriptor
    if (c.image.format === 'vmdk' && c.image.backing !== null)
      state.chain = await chainBelow(file, await vmdkBackingName(file).catch(() => null));
    return state;
  }
  return withQcow2(file, async (r) => {
    const h = r.header;
    const { entries } = h.nbSnapshots > 0 ? await r.readSnapshots() : { entries: [] };
    // a bitmap directory the reader cannot parse is the structure oracle's to name: the size and
    // snapshots are still what the state is read for
    const bitmaps = h.version >= 3 ? ((await r.readBitmaps().catch(() => null))?.directory ?? []) : [];
    return {
      size: h.size,
      compat: h.version >= 3 ? '1.1' : '0.10',
      refcountBits: h.refcountBits as ImageState['refcountBits'],
      lazyRefcounts: (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
      extendedL2: (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n,
      dataFile: (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n,
      snapshots: entries.map((e) => ({ id: e.id, name: e.name, size: e.diskSize ?? h.size })),
      refcountTableClusters: h.refcountTableClusters,
      chain: await chainBelow(file, r.backingFile()),
      clusterSize: 2 ** h.clusterBits,
      // enabled: the "auto" flag (qcow2.txt)
      bitmaps: bitmaps.map((b) => ({
        name: b.name,
        granularity: 2 ** b.granularityBits,
        enabled: (b.flags & 2) !== 0,
      })),
    } satisfies ImageState;
  }).catch(() => null);
}

/** The backing name a chain level stores: a qcow2 header's, a vmdk descriptor's; null for a raw
 * level or one that cannot be read. */
export const backingNameOf = (file: string) =>
  withQcow2(file, async (r) => r.backingFile()).catch(() => vmdkBackingName(file).catch(() => null));

/** The backing chain below an image whose backing name is `parent`: each level's name relative to
 * the level above (as it stores it, or as `commit -b` names an absolute one: qemu compares the
 * resolved paths) and its path relative to the image's directory, read from each qcow2 level's
 * header or vmdk level's descriptor (a raw level, or one that cannot be read, ends it). */
async function chainBelow(file: string, parent: string | null): Promise<ChainLink[]> {
  const links: ChainLink[] = [];
  let [at, name] = [file, parent];
  while (name !== null && links.length <= MAX_CHAIN_DEPTH) {
    const above = dirname(at);
    at = resolve(above, name);
    links.push({ name: isAbsolute(name) ? relative(above, at) : name, path: relative(dirname(file), at) });
    name = await backingNameOf(at);
  }
  return links;
}

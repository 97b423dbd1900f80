// The bitmap faults of the instar test double (faults.ts holds the others): how code that writes
// bitmap metadata really breaks. Each is qemu-img's bitmap underneath and one edit after it.
import { instarOrder, type BitmapAction } from '../../operations/bitmap/step.ts';
import type { BitmapDirectoryEntry } from '../../qcow2/format.ts';
import { setRefcount, writeBytes } from '../../qcow2/edit.ts';
import { readQcow2Header, withQcow2 } from '../../qcow2/reader.ts';
import { L1E_OFFSET_MASK } from '../../qcow2/tables.ts';
import { bitmapCount, leaveEmptyBitmapsExtension, type BitmapHooks } from './bitmap-op.ts';

/** A bitmap's bits as one buffer (bit i: byte i >> 3, LSB first), with where its data clusters are. */
interface RawBitmap {
  entry: BitmapDirectoryEntry;
  clusters: number[];
  bits: Buffer;
}

async function readRawBitmap(file: string, name: string): Promise<RawBitmap | null> {
  return withQcow2(file, async (r) => {
    const entry = (await r.readBitmaps())?.directory.find((b) => b.name === name);
    if (!entry) return null;
    const cs = 2 ** r.header.clusterBits;
    const table = await r.readBitmapTable(entry);
    const bits = Buffer.alloc(table.length * cs);
    const clusters = table.map((raw) => Number(raw & L1E_OFFSET_MASK));
    for (const [i, offset] of clusters.entries()) if (offset) (await r.read(offset, cs)).copy(bits, i * cs);
    return { entry, clusters, bits };
  });
}

/** Writes `bits` into the bitmap's allocated data clusters (the others stay as they are). */
async function writeRawBitmap(file: string, raw: RawBitmap, bits: Buffer): Promise<void> {
  const cs = bits.length / Math.max(1, raw.clusters.length);
  for (const [i, offset] of raw.clusters.entries())
    if (offset) await writeBytes(file, offset, bits.subarray(i * cs, (i + 1) * cs));
}

const isSet = (b: Buffer, i: number) => i >> 3 < b.length && ((b[i >> 3]! >> (i & 7)) & 1) === 1;
const set = (b: Buffer, i: number) => {
  if (i >> 3 < b.length) b[i >> 3]! |= 1 << (i & 7);
};

/** Kept between a fault's hooks: the target and sources of a merge before it ran. */
let mergeBefore: { target: RawBitmap; sources: RawBitmap[] } | null = null;
let bitmapsBefore = 0;

const merges = (ran: BitmapAction[]) => ran.filter((a) => a.action === 'merge').map((a) => a.source!);

export const BITMAP_FAULTS = {
  'bitmap-merge-wrong-granularity': {
    what:
      'a merge of a bitmap of another granularity ORs its bits index by index, unscaled (bit i of the ' +
      'source into bit i of the target), where qemu rescales them to the guest ranges they cover',
    bitmap: {
      before: async (c) => {
        mergeBefore = null;
        const sources = merges(c.ran);
        if (sources.length === 0) return;
        const target = await readRawBitmap(c.file, c.args.name);
        const read = await Promise.all(sources.map((s) => readRawBitmap(c.file, s)));
        if (!target || read.some((r) => r === null)) return;
        mergeBefore = { target, sources: read as RawBitmap[] };
      },
      after: async (c) => {
        const kept = mergeBefore;
        if (!kept) return;
        const other = kept.sources.filter((s) => s.entry.granularityBits !== kept.target.entry.granularityBits);
        if (other.length === 0) return;
        const after = await readRawBitmap(c.file, c.args.name);
        if (!after) return;
        const wrong = Buffer.from(kept.target.bits.subarray(0, after.bits.length));
        for (const s of kept.sources) for (let i = 0; i < s.bits.length * 8; i++) if (isSet(s.bits, i)) set(wrong, i);
        await writeRawBitmap(c.file, after, wrong);
      },
    },
  },
  'bitmap-remove-keeps-autoclear': {
    what:
      "a remove of the image's last bitmap leaves an empty bitmaps extension (instar's documented " +
      'record) with the autoclear bit still set: qemu refuses to open an image whose bitmaps extension ' +
      'holds no bitmaps',
    bitmap: {
      before: async (c) => {
        bitmapsBefore = await bitmapCount(c.file);
      },
      after: async (c) => {
        if (bitmapsBefore === 0 || !c.ran.some((a) => a.action === 'remove')) return;
        if ((await bitmapCount(c.file)) === 0) await leaveEmptyBitmapsExtension(c.file, true);
      },
    },
  },
  'bitmap-add-unrefcounted-table': {
    what: "an add that writes the new bitmap's table but never counts its cluster (refcount 0)",
    bitmap: {
      after: async (c) => {
        if (!c.ran.some((a) => a.action === 'add')) return;
        const entry = await withQcow2(c.file, async (r) =>
          (await r.readBitmaps())?.directory.find((b) => b.name === c.args.name),
        );
        if (!entry) return;
        const h = await readQcow2Header(c.file);
        await setRefcount(c.file, Math.floor(entry.tableOffset / 2 ** h.clusterBits), 0);
      },
    },
  },
  'bitmap-repeated-flags-reordered': {
    what:
      "a repeated flag's actions run at that flag's first place (`--enable --disable --enable` runs " +
      "enable, enable, disable): instar's documented order, here with no refusal of its own",
    bitmap: {
      order: instarOrder,
    },
  },
} satisfies Record<string, { what: string; bitmap: BitmapHooks }>;

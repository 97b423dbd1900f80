import fc from 'fast-check';
import { l2Coverage, type BackingSpec, type DataOp, type ImageSpec } from '../model/case.ts';
import { KiB, align, clamp, between, fraction } from './bounds.ts';

// What fills the base image: writes, zeroes, discards and compressed writes placed where a resize
// matters, internal snapshots between them, and the backing image's own writes.

/** Where a data operation lands, relative to the image and to the first step's target. */
const ANCHORS = [
  'start',
  'aroundTarget',
  'targetCluster',
  'beyondTarget',
  'beyondTarget',
  'beyondTarget',
  'clusterBoundary',
  'l2Boundary',
  'end',
  'anywhere',
] as const;

export const dataRecipeArb = fc.record({
  op: fc.constantFrom<DataOp['op']>('write', 'write', 'write', 'zero', 'discard', 'compress'),
  anchor: fc.constantFrom(...ANCHORS),
  offsetFraction: fraction,
  lengthFraction: fraction,
  pattern: fc.integer({ min: 1, max: 255 }),
});
export type DataRecipe = typeof dataRecipeArb extends fc.Arbitrary<infer T> ? T : never;

export function materialiseData(r: DataRecipe, image: ImageSpec, target: number): DataOp {
  const size = image.virtualSize;
  const cs = image.clusterSize;
  const l2 = l2Coverage(cs, image.extendedL2);
  const maxLength = Math.min(4 * cs, 256 * KiB, size);
  let length = align(between(512, maxLength, r.lengthFraction), 512) || 512;
  const centre = (() => {
    switch (r.anchor) {
      case 'start':
        return 0;
      case 'aroundTarget':
        return target + align((r.offsetFraction - 0.5) * 4 * cs, 512);
      case 'targetCluster':
        // from the new end to the end of its cluster: what a shrink keeps and a grow shows again
        return target;
      case 'beyondTarget': {
        // past the cluster that holds the new end: a shrink to target discards it
        const firstDiscarded = Math.ceil(target / cs) * cs;
        return between(firstDiscarded < size ? firstDiscarded : target, size - 512, r.offsetFraction);
      }
      case 'clusterBoundary':
        return between(1, Math.max(1, Math.floor(size / cs)), r.offsetFraction) * cs - length / 2;
      case 'l2Boundary':
        return between(1, Math.max(1, Math.floor(size / l2)), r.offsetFraction) * l2 - length / 2;
      case 'end':
        return size - length;
      case 'anywhere':
        return between(0, size - 512, r.offsetFraction);
    }
  })();
  // a raw image has no compressed clusters; an external data file takes none (qemu-io's write -c
  // fails with ENOTSUP), nor does a preallocated image (qemu compresses only into unallocated
  // clusters: EIO), and compressed clusters share host clusters: qemu-img amend refuses to narrow
  // refcounts below that
  const compressible =
    image.format === 'qcow2' &&
    image.dataFile === 'none' &&
    image.createdPreallocation === 'off' &&
    !amendsBelowSharing(image);
  if (r.op === 'compress' && size >= cs && compressible) {
    // compressed writes take whole clusters that lie entirely inside the image
    const offset = clamp(align(centre, cs), 0, align(size, cs) - cs);
    return { op: 'compress', offset, length: cs, pattern: r.pattern };
  }
  const offset = clamp(align(centre, 512), 0, size - length);
  length = Math.min(length, size - offset);
  switch (r.op) {
    case 'zero':
      return { op: 'zero', offset, length };
    case 'discard':
      return { op: 'discard', offset, length };
    default:
      return { op: 'write', offset, length, pattern: r.pattern };
  }
}

/** An amend to 1- or 2-bit refcounts: qemu refuses it while a host cluster has more references than
 * that width holds ("Cannot decrease refcount entry width to 1 bits: Cluster at offset 0xa000 has a
 * refcount of 3"), as several compressed clusters sharing one do. */
const amendsBelowSharing = (image: ImageSpec) => image.createdWithRefcountBits !== null && image.refcountBits < 4;

/** qemu writes compressed data only into unallocated clusters: compressed writes go first, one
 * per cluster; later writes may still overwrite them, which qemu handles. */
export function compressedFirst(ops: DataOp[]): DataOp[] {
  const compressed = ops.filter((op) => op.op === 'compress');
  const distinct = compressed.filter((op, i) => compressed.findIndex((o) => o.offset === op.offset) === i);
  return [...distinct, ...ops.filter((op) => op.op !== 'compress')];
}

export const snapshotRecipeArb = fc.record({
  position: fraction,
  create: fc.integer({ min: 0, max: 2 }).map((n) => n > 0),
});
export type SnapshotRecipe = typeof snapshotRecipeArb extends fc.Arbitrary<infer T> ? T : never;
/** At most this many snapshots exist at once. */
const MAX_SNAPSHOTS = 3;

/** Snapshots share clusters, so refcounts exceed 1: 1- and 2-bit refcounts cannot hold that
 * (qemu fails the snapshot), before or after an amend. qemu refuses internal snapshots of images
 * with an external data file (ENOTSUP). */
export const canSnapshot = (image: ImageSpec) =>
  Math.min(image.refcountBits, image.createdWithRefcountBits ?? 64) >= 4 && image.dataFile === 'none';

/** Where data written into the backing image lands: it reads through wherever the image has none,
 * and a shrink and a later grow decide what of it shows again (qemu zero-fills a grow over a
 * longer backing image). */
export const backingWriteArb = fc.record({
  anchor: fc.constantFrom('start', 'aroundTarget', 'beyondTarget', 'imageEnd', 'backingEnd', 'anywhere'),
  offsetFraction: fraction,
  lengthFraction: fraction,
  pattern: fc.integer({ min: 1, max: 255 }),
});
export type BackingWrite = typeof backingWriteArb extends fc.Arbitrary<infer T> ? T : never;

export function materialiseBackingWrite(
  r: BackingWrite,
  image: ImageSpec,
  backing: number,
  target: number,
): BackingSpec['data'][number] {
  const cs = image.clusterSize;
  let length = align(between(512, Math.min(4 * cs, 256 * KiB, backing), r.lengthFraction), 512) || 512;
  const start = (() => {
    switch (r.anchor) {
      case 'start':
        return 0;
      case 'aroundTarget':
        return target + align((r.offsetFraction - 0.5) * 4 * cs, 512);
      case 'beyondTarget':
        return between(target, Math.max(target, Math.min(image.virtualSize, backing) - 512), r.offsetFraction);
      case 'imageEnd':
        return image.virtualSize - length / 2;
      case 'backingEnd':
        return backing - length;
      case 'anywhere':
        return between(0, backing - 512, r.offsetFraction);
    }
  })();
  const offset = clamp(align(start, 512), 0, backing - length);
  length = Math.min(length, backing - offset);
  return { offset, length, pattern: r.pattern };
}

/** Snapshot creations and deletions between the writes: writes after a snapshot copy shared
 * clusters, and a deletion leaves other refcounts above 1. */
export function withSnapshots(ops: DataOp[], recipes: SnapshotRecipe[]): DataOp[] {
  const out = [...ops];
  const alive: string[] = [];
  let created = 0;
  // decided in position order, spliced in from the back so that indices stay valid
  const placed = recipes.map((r) => ({ ...r, at: Math.floor(r.position * (ops.length + 1)) }));
  const inserts: { at: number; op: DataOp }[] = [];
  for (const r of [...placed].sort((a, b) => a.at - b.at)) {
    if (r.create && alive.length < MAX_SNAPSHOTS) {
      const name = `snap${created++}`;
      alive.push(name);
      inserts.push({ at: r.at, op: { op: 'snapshot-create', name } });
    } else if (!r.create && alive.length > 0) {
      inserts.push({ at: r.at, op: { op: 'snapshot-delete', name: alive.shift()! } });
    }
  }
  for (const { at, op } of inserts.reverse()) out.splice(at, 0, op);
  return out;
}

import fc from 'fast-check';
import type { DataOp, ImageSpec, OutputMode, SnapshotStep } from '../../model/case.ts';
import type { ImageState } from '../../model/state.ts';
import { fraction, MiB } from '../../generators/bounds.ts';
import { canSnapshot } from '../../generators/data.ts';

// snapshot steps: recipes drawn by fast-check, made concrete from the snapshots the image has then
// (the build's and the steps' before). Applies come most often (half of them after a grow), then
// creations and deletes of a snapshot the image has, listings; and what the tools treat
// differently: a name the image lacks, a second snapshot of a name (qemu allows it), an empty name,
// a name past qcow2's 255 bytes.

const ACTIONS = [
  { weight: 3, arbitrary: fc.constant('create' as const) },
  { weight: 4, arbitrary: fc.constant('apply' as const) },
  { weight: 3, arbitrary: fc.constant('delete' as const) },
  { weight: 1, arbitrary: fc.constant('list' as const) },
];

const NAMES = [
  { weight: 7, arbitrary: fc.constant('usual' as const) },
  { weight: 1, arbitrary: fc.constant('missing' as const) },
  { weight: 2, arbitrary: fc.constant('duplicate' as const) },
  { weight: 1, arbitrary: fc.constant('empty' as const) },
  { weight: 1, arbitrary: fc.constant('long' as const) },
];

export const snapshotStepRecipeArb = fc.record({
  action: fc.oneof(...ACTIONS),
  name: fc.oneof(...NAMES),
  which: fraction,
});
export type SnapshotStepRecipe = typeof snapshotStepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** A snapshot step for an image in `state`: a new name is `step<n>`, unused so far. */
export function materialiseSnapshot(r: SnapshotStepRecipe, state: ImageState, output: OutputMode): SnapshotStep {
  const step = (action: SnapshotStep['action'], name: string): SnapshotStep => ({
    op: 'snapshot',
    action,
    name,
    output,
  });
  if (r.action === 'list') return step('list', '');
  const existing = state.snapshots.map((s) => s.name);
  const pick = existing[Math.floor(r.which * existing.length)];
  const fresh = () => {
    for (let n = existing.length; ; n++) if (!existing.includes(`step${n}`)) return `step${n}`;
  };
  if (r.name === 'empty') return step(r.action, '');
  if (r.name === 'long') return step(r.action, 'L'.repeat(256));
  if (r.action === 'create') return step('create', r.name === 'duplicate' && pick ? pick : fresh());
  if (r.name === 'missing') return step(r.action, 'nosuch');
  // apply and delete: a snapshot the image has; with none yet, one is made first
  return pick === undefined ? step('create', fresh()) : step(r.action, pick);
}

// ---- the images of cases with snapshot steps -------------------------------------------------------

export const snapshotCaseRecipeArb = fc.record({
  width: fraction,
  sixteen: fraction,
  tableEdge: fraction,
  edgeAt: fraction,
  pattern: fc.integer({ min: 1, max: 255 }),
  bitmapsAlone: fraction,
});
export type SnapshotCaseRecipe = typeof snapshotCaseRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** The image and data of a case with snapshot steps: 16-bit refcounts in two cases in three (the
 * only width instar's snapshot code takes: its other refusals and its mutators are reached behind
 * that one); a snapshot of its data to apply or delete ('base', where it has none and can have one);
 * in one case in seven sixteen more, instar's cap, so that the next creation is the 17th; in one in
 * six an image at the edge of its refcount table; in one in ten of the others a v3 image whose only
 * feature instar refuses is its bitmaps (behind the refusals of other features they went unseen). */
export function shapeForSnapshots(
  drawn: ImageSpec,
  data: DataOp[],
  r: SnapshotCaseRecipe,
): { image: ImageSpec; data: DataOp[] } {
  if (r.tableEdge < 1 / 6) return atRefcountTableEdge(drawn, r.edgeAt, r.pattern);
  if (r.bitmapsAlone < 1 / 10 && drawn.compat === '1.1') return withBitmapsAlone(drawn, data);
  const image = r.width < 2 / 3 ? { ...drawn, refcountBits: 16 as const, createdWithRefcountBits: null } : drawn;
  if (!canSnapshot(image)) return { image, data };
  const shaped = withBase(data);
  if (!holdsSixteenSnapshots(image) || r.sixteen >= 1 / 7) return { image, data: shaped };
  return { image, data: [...shaped, ...Array.from({ length: 16 }, (_, i) => ({ ...base, name: `s${i}` }))] };
}

const base = { op: 'snapshot-create' as const, name: 'base' };
/** The data, with snapshot 'base' taken after it where it takes none. */
const withBase = (data: DataOp[]) => (data.some((d) => d.op === 'snapshot-create') ? data : [...data, base]);

function withBitmapsAlone(drawn: ImageSpec, data: DataOp[]) {
  const image: ImageSpec = {
    ...drawn,
    refcountBits: 16,
    createdWithRefcountBits: null,
    compressionType: 'zlib',
    bitmaps: Math.max(1, drawn.bitmaps),
    dirty: false,
    dataFile: 'none',
    encrypted: false,
  };
  return { image, data: withBase(data.filter((d) => d.op !== 'compress')) };
}

/** Sixteen snapshots and the image raise a cluster's refcount to 17: from 8-bit refcounts up, at
 * creation and after an amend (qemu refuses to narrow refcounts below a count they hold; at 4 bits
 * it fails the creation). */
const holdsSixteenSnapshots = (image: ImageSpec) =>
  canSnapshot(image) && Math.min(image.refcountBits, image.createdWithRefcountBits ?? 64) >= 8;

/** At 512-byte clusters and 16-bit refcounts qemu's first refcount table is one cluster: 64
 * refblocks of 256 clusters, 8 MiB of file. Written from the start to just below that, a 64 MiB
 * image's file ends where a snapshot creation (its 16 KiB L1 copy) makes qemu grow the table, the
 * allocator's rarest path, which instar v1 never takes (guest error 6). Where in the window the file
 * ends is drawn: measured with qemu 7.2, the first creation grows the table after writes of
 * 8194048 to 8208384 bytes, later creations after shorter ones; the longest here grows it while
 * building. Any other feature of the drawn image would only have instar refuse the snapshot. */
export const TABLE_EDGE = { virtualSize: 64 * MiB, shortest: 8175616, longest: 8210432 };

export function atRefcountTableEdge(image: ImageSpec, at: number, pattern: number) {
  const span = (TABLE_EDGE.longest - TABLE_EDGE.shortest) / 512;
  const length = TABLE_EDGE.shortest + Math.floor(at * span) * 512;
  const plain: ImageSpec = {
    ...image,
    virtualSize: TABLE_EDGE.virtualSize,
    clusterSize: 512,
    refcountBits: 16,
    createdWithRefcountBits: null,
    extendedL2: false,
    compressionType: 'zlib',
    bitmaps: 0,
    dirty: false,
    backing: null,
    dataFile: 'none',
    createdPreallocation: 'off',
    encrypted: false,
  };
  return { image: plain, data: [{ op: 'write' as const, offset: 0, length, pattern }] };
}

import fc from 'fast-check';
import { REFCOUNT_WIDTHS, type BackingSpec, type DataOp, type ImageSpec, type RefcountBits } from '../model/case.ts';
import { align, between, fraction, KiB, MiB } from './bounds.ts';
import { backingWriteArb, canSnapshot, materialiseBackingWrite } from './data.ts';

// The images of cases with commit and rebase steps: a chain of two or three levels (base, middle,
// top) with data at every level, some of it overlapping; levels of other sizes than the top's
// (qemu's commit grows a smaller base), of other cluster sizes now and then (instar refuses them),
// of every refcount width; a raw base now and then; an internal snapshot in the top now and then
// (a safe rebase copies into L2 tables a snapshot shares: instar #421); the whole chain in a
// directory below the image's now and then (`chain/backing.qcow2`, which names `lower.qcow2`
// beside itself: commit -b and rebase -b then name it differently); a level named by its absolute
// path now and then (each side's copy is retargeted to its own files).

/** A chain case's top stays small: a commit writes all of it into a base, which may grow to its
 * size, and each side holds a copy of every level. */
export const MAX_CHAIN_IMAGE = 32 * MiB;

/** The directory below the image's that holds a chain drawn to live apart from it. */
export const CHAIN_DIRECTORY = 'chain';

const SIZE_KINDS = ['same', 'same', 'smaller', 'larger'] as const;

export const chainCaseRecipeArb = fc.record({
  depth: fc.constantFrom(1, 2, 2),
  rawBase: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
  otherClusterSize: fc.integer({ min: 0, max: 5 }).map((n) => n === 0),
  clusterSize: fc.constantFrom(512, 4 * KiB, 16 * KiB, 64 * KiB, 128 * KiB),
  refcountBits: fc.array(fc.constantFrom<RefcountBits>(...REFCOUNT_WIDTHS), { minLength: 2, maxLength: 2 }),
  sizes: fc.array(fc.constantFrom(...SIZE_KINDS), { minLength: 2, maxLength: 2 }),
  sizeFractions: fc.array(fraction, { minLength: 3, maxLength: 3 }),
  writes: fc.array(fc.array(backingWriteArb, { minLength: 1, maxLength: 3 }), { minLength: 2, maxLength: 2 }),
  snapshot: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  /** The top's clusters kept at 64 KiB or below (instar's commit takes no larger): three in four. */
  smallClusters: fc.integer({ min: 0, max: 3 }).map((n) => n > 0),
  /** The chain in a directory below the image's (`chain/`): one in four. */
  inDirectory: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  /** Each level named by its absolute path by the level above: one in four. */
  absolute: fc.array(
    fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
    { minLength: 2, maxLength: 2 },
  ),
});
export type ChainCaseRecipe = typeof chainCaseRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** A level's virtual size beside a top of `top` bytes: the same, smaller (at least 512 bytes) or
 * up to 8 MiB larger, by the fraction `f`. */
export const levelSize = (kind: 'same' | 'smaller' | 'larger', top: number, f: number) =>
  kind === 'same'
    ? top
    : kind === 'smaller'
      ? align(between(512, top - 512, f), 512) || 512
      : top + align(between(512, 8 * MiB, f), 512);

/** The image of a chain case: the drawn top, small, plain (no data file, encryption or dirty bit:
 * instar refuses those for other reasons), over a chain drawn from `r`. */
export function chainImage(image: ImageSpec, r: ChainCaseRecipe): ImageSpec {
  const clusterSize = r.smallClusters ? Math.min(image.clusterSize, 64 * KiB) : image.clusterSize;
  const top = Math.max(
    clusterSize,
    align(Math.min(image.virtualSize, between(MiB, MAX_CHAIN_IMAGE, r.sizeFractions[0]!)), 512),
  );
  const plain: ImageSpec = {
    ...image,
    clusterSize,
    // extended L2 entries need 16 KiB clusters at least
    extendedL2: image.extendedL2 && clusterSize >= 16 * KiB,
    virtualSize: top,
    dataFile: 'none',
    encrypted: false,
    dirty: false,
    createdPreallocation: 'off',
    bitmaps: 0,
  };
  let below: BackingSpec | null = null;
  // deepest level first: the base, then the middle over it
  for (let level = r.depth - 1; level >= 0; level--) {
    const raw = r.rawBase && level === r.depth - 1;
    const virtualSize = levelSize(r.sizes[level]!, top, r.sizeFractions[level + 1]!);
    const spec: BackingSpec = {
      format: raw ? 'raw' : 'qcow2',
      virtualSize,
      ...(r.absolute[level] ? { absolute: true } : {}),
      data: r.writes[level]!.map((w) => materialiseBackingWrite(w, plain, virtualSize, align(virtualSize / 2, 512))),
      ...(raw
        ? {}
        : {
            clusterSize: r.otherClusterSize ? r.clusterSize : clusterSize,
            refcountBits: r.refcountBits[level]!,
            ...(below ? { backing: below } : {}),
          }),
    };
    below = spec;
  }
  return { ...plain, backing: below && r.inDirectory ? { ...below, directory: CHAIN_DIRECTORY } : below };
}

/** The top's data with an internal snapshot taken halfway, when drawn and qemu allows one. */
export function chainData(image: ImageSpec, data: DataOp[], r: ChainCaseRecipe): DataOp[] {
  if (!r.snapshot || !canSnapshot(image)) return data;
  const half = Math.ceil(data.length / 2);
  return [...data.slice(0, half), { op: 'snapshot-create', name: 'chain0' }, ...data.slice(half)];
}

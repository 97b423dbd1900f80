import fc from 'fast-check';
import {
  REFCOUNT_WIDTHS,
  l2Coverage,
  type DataFileKind,
  type ImageSpec,
  type Preallocation,
  type RefcountBits,
} from '../model/case.ts';
import {
  KiB,
  TiB,
  maxVirtualSize,
  HUGE_CLUSTER,
  sizeLimit,
  MAX_BACKING_EXTRA,
  imageSizeLimit,
  MAX_AMEND_CLUSTER,
  MAX_CREATED_PREALLOCATED,
  MAX_ENCRYPTED_SIZE,
  align,
  between,
  fraction,
} from './bounds.ts';

// The base image: its format options, its size, and its backing image and external data file.

/** Backing images: none in most cases; otherwise shorter or longer than the image. */
const backingArb = fc.oneof(
  // shrinks across to the first (off) branch, so a minimised case keeps a feature only when needed
  { withCrossShrink: true },
  { weight: 6, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.record({ longer: fc.boolean(), sizeFraction: fraction }) },
);
/** External data files: none in most cases; otherwise data_file, or data_file with data_file_raw. */
const dataFileArb = fc.oneof(
  // shrinks across to the first (off) branch, so a minimised case keeps a feature only when needed
  { withCrossShrink: true },
  { weight: 6, arbitrary: fc.constant<DataFileKind>('none') },
  { weight: 1, arbitrary: fc.constant<DataFileKind>('data_file') },
  { weight: 1, arbitrary: fc.constant<DataFileKind>('data_file_raw') },
);

/** A backing image's size: shorter than the image (when it can be) or longer by a bounded amount. */
function backingSize(longer: boolean, size: number, f: number): number {
  if (!longer && size > 512) return align(between(512, size - 512, f), 512) || 512;
  return size + (align(between(512, Math.min(size, MAX_BACKING_EXTRA), f), 512) || 512);
}

/** What decides a case's backing image and data file. Drawn after everything else (last in
 * caseArb's record), so that adding them left every other draw of a seed as it was. */
export const externalArb = fc.record({
  backing: backingArb,
  dataFile: dataFileArb,
  // a new virtual size for an image too large to have a data file or a backing image
  sizeFraction: fraction,
  clusterAligned: fc.boolean(),
});
export type ExternalRecipe = typeof externalArb extends fc.Arbitrary<infer T> ? T : never;

/** Gives an image its backing image (without data yet: caseArb places it) and data file. External
 * data files only on v3 images (qemu refuses them on v2), never data_file_raw together with a
 * backing image (qemu-img create refuses that); an image above the size bound of such images gets a
 * new size below it. */
export function withExternalFiles(image: ImageSpec, r: ExternalRecipe): ImageSpec {
  const dataFile: DataFileKind =
    image.compat !== '1.1' ? 'none' : r.dataFile === 'data_file_raw' && r.backing !== null ? 'data_file' : r.dataFile;
  if (dataFile === 'none' && r.backing === null) return image;
  const max = imageSizeLimit({ ...image, dataFile });
  const unit = r.clusterAligned ? image.clusterSize : 512;
  const virtualSize =
    image.virtualSize <= max ? image.virtualSize : Math.max(unit, align(between(512, max, r.sizeFraction), unit));
  const backing =
    r.backing === null
      ? null
      : {
          format: 'qcow2' as const,
          virtualSize: backingSize(r.backing.longer, virtualSize, r.backing.sizeFraction),
          data: [],
        };
  return { ...image, virtualSize, dataFile, backing };
}

/** How the image is created: encrypted, preallocated, over a raw backing image. Drawn last in
 * caseArb's record, after every draw that existed before these. */
export const creationArb = fc.record({
  // shrink across to the first (off) branch: a minimised case keeps them only when needed
  encrypted: fc.oneof(
    { withCrossShrink: true },
    { weight: 15, arbitrary: fc.constant(false) },
    { weight: 1, arbitrary: fc.constant(true) },
  ),
  preallocation: fc.oneof(
    { withCrossShrink: true },
    { weight: 7, arbitrary: fc.constant<Preallocation>('off') },
    { weight: 1, arbitrary: fc.constantFrom<Preallocation>('metadata', 'falloc', 'full') },
  ),
  rawBacking: fc.boolean(),
  sizeFraction: fraction,
  /** Per step, on an encrypted image: whether qemu-img is given the key (three times in four). */
  keys: fc.array(
    fc.integer({ min: 0, max: 3 }).map((n) => n > 0),
    { minLength: 5, maxLength: 5 },
  ),
});
export type CreationRecipe = typeof creationArb extends fc.Arbitrary<infer T> ? T : never;

/** Applies a creation recipe. Encryption only without a backing image or data file (whose own
 * handling it would mix with); preallocation over a backing image only with extended L2 (qemu-img
 * create refuses it otherwise); a preallocated or encrypted image gets a new size within the bound
 * of such images (MAX_CREATED_PREALLOCATED: every side writes or reserves all of it;
 * MAX_ENCRYPTED_SIZE). */
export function withCreation(image: ImageSpec, r: CreationRecipe): ImageSpec {
  const encrypted = r.encrypted && image.backing === null && image.dataFile === 'none';
  const createdPreallocation = image.backing !== null && !image.extendedL2 ? 'off' : r.preallocation;
  const backing = image.backing && { ...image.backing, format: r.rawBacking ? ('raw' as const) : ('qcow2' as const) };
  const max = Math.min(
    createdPreallocation === 'off' ? Infinity : MAX_CREATED_PREALLOCATED[createdPreallocation],
    encrypted ? MAX_ENCRYPTED_SIZE : Infinity,
  );
  const virtualSize =
    image.virtualSize <= max ? image.virtualSize : Math.max(512, align(between(512, max, r.sizeFraction), 512));
  // a new size takes a new backing size, longer or shorter as before
  if (backing && virtualSize !== image.virtualSize) {
    const longer = backing.virtualSize > image.virtualSize;
    backing.virtualSize = backingSize(longer, virtualSize, r.sizeFraction);
  }
  return { ...image, virtualSize, backing, encrypted, createdPreallocation };
}

/** Every refcount width equally likely; compat 0.10 only where qemu accepts it (16-bit refcounts);
 * zstd, bitmaps, dirty images and amended refcount widths only on v3 images. No backing image or
 * data file: caseArb adds those (withExternalFiles). */
// fast-check shrinks integers towards their minimum: every optional feature is on at the top of
// its range, so a minimised case keeps a feature only when the finding needs it.
export const imageArb: fc.Arbitrary<ImageSpec> = fc
  .record({
    refcountBits: fc.constantFrom<RefcountBits>(...REFCOUNT_WIDTHS),
    clusterBits: fc.integer({ min: 9, max: 21 }),
    v2: fc.boolean(),
    lazyRefcounts: fc.boolean(),
    extendedL2: fc.integer({ min: 0, max: 4 }).map((n) => n === 4),
    zstd: fc.integer({ min: 0, max: 4 }).map((n) => n === 4),
    amendFrom: fc.oneof(
      { withCrossShrink: true },
      { weight: 5, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.constantFrom<RefcountBits>(...REFCOUNT_WIDTHS) },
    ),
    bitmaps: fc.oneof(
      { withCrossShrink: true },
      { weight: 6, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 }) },
    ),
    dirty: fc.integer({ min: 0, max: 3 }).map((n) => n === 3),
    sizeKind: fc.constantFrom(
      'clusters',
      'clusters',
      'sectors',
      'sectors',
      'l2Boundary',
      'l1Boundary',
      'refblockBoundary',
      'huge',
    ),
    sizeFraction: fraction,
    boundaryDelta: fc.constantFrom(-1, 0, 1, -512, 512),
  })
  .map((r): ImageSpec => {
    const clusterSize = 2 ** r.clusterBits;
    const compat = r.v2 && r.refcountBits === 16 ? '0.10' : '1.1';
    const v3 = compat === '1.1';
    const extendedL2 = v3 && r.extendedL2 && clusterSize >= 16 * KiB;
    const max = maxVirtualSize(clusterSize, extendedL2);
    const limit = sizeLimit(clusterSize, extendedL2);
    const l2 = l2Coverage(clusterSize, extendedL2);
    // one cluster / one sector either side of a boundary, or exactly on it
    const near = (boundary: number) =>
      boundary + (Math.abs(r.boundaryDelta) === 1 ? r.boundaryDelta * clusterSize : r.boundaryDelta);
    const l1 = (clusterSize / 8) * l2; // one cluster of L1 table
    const refblock = clusterSize * ((clusterSize * 8) / r.refcountBits); // one refcount block
    let virtualSize: number;
    if (r.sizeKind === 'l2Boundary' && l2 + clusterSize <= max) {
      virtualSize = near(between(1, Math.floor((max - clusterSize) / l2), r.sizeFraction) * l2);
    } else if (r.sizeKind === 'l1Boundary' && l1 + clusterSize <= limit / 2) {
      virtualSize = near(l1);
    } else if (r.sizeKind === 'refblockBoundary' && refblock + clusterSize <= limit / 2) {
      virtualSize = near(refblock);
    } else if (r.sizeKind === 'huge' && clusterSize >= HUGE_CLUSTER) {
      virtualSize = align(between(TiB, 4 * TiB, r.sizeFraction), clusterSize);
    } else if (r.sizeKind === 'sectors') {
      virtualSize = align(between(512, max, r.sizeFraction), 512) || 512;
    } else {
      virtualSize = between(1, max / clusterSize, r.sizeFraction) * clusterSize;
    }
    return {
      format: 'qcow2',
      virtualSize,
      clusterSize,
      refcountBits: r.refcountBits,
      compat,
      lazyRefcounts: v3 && r.lazyRefcounts,
      extendedL2,
      compressionType: v3 && r.zstd ? 'zstd' : 'zlib',
      // amend rewrites every refcount structure: seconds from 64 KiB clusters up, so small ones only
      createdWithRefcountBits:
        v3 && clusterSize <= MAX_AMEND_CLUSTER && r.amendFrom !== null && r.amendFrom !== r.refcountBits
          ? r.amendFrom
          : null,
      bitmaps: v3 ? r.bitmaps : 0,
      dirty: v3 && r.lazyRefcounts && r.dirty,
      backing: null,
      dataFile: 'none',
      createdPreallocation: 'off',
      encrypted: false,
    };
  });

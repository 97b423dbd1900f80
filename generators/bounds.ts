import fc from 'fast-check';
import { l2Coverage, type ImageSpec } from '../model/case.ts';

// Bounds that keep one case fast, and how the generator places a point within bounds.

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Small clusters make shrinks slow (qemu walks every L2 entry), so they get small images. */
export function maxVirtualSize(clusterSize: number, extendedL2: boolean): number {
  return Math.min(GiB, Math.max(8 * MiB, 4 * l2Coverage(clusterSize, extendedL2)));
}

/** From 64 KiB clusters up TiB images stay fast to create and grow; shrinks walk every L2 range
 * they discard, so their span is capped (SHRINK_SPAN_TABLES). */
export const TiB = 1024 * GiB;
export const HUGE_CLUSTER = 64 * KiB;
/** L2 tables' worth of guest space one shrink may discard: above instar's staging limit of 256
 * (so that limit is exercised) but bounded in time: 512 GiB at 64 KiB clusters took about 3 s. */
export const SHRINK_SPAN_TABLES = 1024;
/** The largest virtual size any image or step reaches. */
export function sizeLimit(clusterSize: number, extendedL2: boolean): number {
  return clusterSize >= HUGE_CLUSTER ? 8 * TiB : 2 * maxVirtualSize(clusterSize, extendedL2);
}

/** Images with an external data file stay small: the data file is as long as the virtual disk
 * (a resize truncates it to the new size, data_file_raw maps all of it), each side gets a copy,
 * and a refused step hashes it to prove it unchanged. */
export const MAX_DATA_FILE_IMAGE = 32 * MiB;
/** A backing image longer than the image also stays small: qemu zero-fills the whole new area of a
 * grow when the backing image is longer than the old size, so no TiB images or steps either. */
export const MAX_BACKING_EXTRA = 64 * MiB;

/** The largest virtual size the image itself may have. */
export function imageSizeLimit(image: Pick<ImageSpec, 'clusterSize' | 'extendedL2' | 'dataFile'>): number {
  const max = maxVirtualSize(image.clusterSize, image.extendedL2);
  return image.dataFile !== 'none' ? Math.min(max, MAX_DATA_FILE_IMAGE) : max;
}

/** Encrypted images stay below 2 GiB, and so do their steps: qemu-img compare fails an assertion
 * on larger ones (7.2 and 10.0: bdrv_co_block_status, `QEMU_IS_ALIGNED(*pnum, align)`, with the
 * 512-byte alignment of an encrypted image), so their content could not be compared. */
export const MAX_ENCRYPTED_SIZE = 1 * GiB;

/** Raw images and their steps stay small: a raw image is as long as its virtual disk, each side
 * holds a copy, and a refused step hashes all of it to prove it unchanged. */
export const MAX_RAW_SIZE = 128 * MiB;
/** A raw image's data may be dense: one write of up to this many bytes fills much of it. */
export const MAX_RAW_DENSE_WRITE = 8 * MiB;

/** vhdx, vmdk and vpc images: a fixed one is as long as its virtual disk (as raw is); a dynamic
 * one reaches past a vhdx BAT chunk (4 GiB of guest space, whatever the block size), while the
 * reference's raw copy in between stays sparse. */
export const MAX_FIXED_SIZE = 64 * MiB;
export const MAX_DYNAMIC_SIZE = 8 * GiB;

/** The largest virtual size any step of this image reaches. */
export function stepSizeLimit(
  image: Pick<ImageSpec, 'format' | 'clusterSize' | 'extendedL2' | 'dataFile' | 'backing' | 'encrypted' | 'options'>,
): number {
  if (image.options) return image.options.subformat === 'fixed' ? MAX_FIXED_SIZE : MAX_DYNAMIC_SIZE;
  if (image.format === 'raw') return MAX_RAW_SIZE;
  if (image.encrypted) return 2 * MAX_ENCRYPTED_SIZE - 512;
  if (image.dataFile !== 'none' || image.backing !== null) return 2 * imageSizeLimit(image);
  return sizeLimit(image.clusterSize, image.extendedL2);
}

/** falloc/full preallocation writes or reserves the whole new area: keep those grows small;
 * metadata preallocation writes every L2 table of it. */
export const MAX_PREALLOCATED_SIZE = 64 * MiB;
export const MAX_METADATA_PREALLOCATED_SIZE = 1 * GiB;
export const MAX_AMEND_CLUSTER = 16 * KiB;
/** Images created preallocated: falloc and full reserve or write all of the virtual disk, and each
 * side's copy holds it again; metadata writes every L2 table and maps every cluster, which qemu-img
 * check then walks. */
export const MAX_CREATED_PREALLOCATED = { metadata: 256 * MiB, falloc: 32 * MiB, full: 16 * MiB } as const;

export const align = (n: number, unit: number) => Math.floor(n / unit) * unit;
export const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, n));
/** A point in [lo, hi] chosen by a fraction in [0, 1). */
export const between = (lo: number, hi: number, f: number) => lo + Math.floor((hi - lo + 1) * f);

/** A point in [0, 1), uniform. Not fc.double: it draws uniformly over the representable doubles,
 * nearly all of which are tiny, so every image, write and target would be near zero. fast-check
 * also biases integers towards the ends of their range; boundaries come from the anchors instead,
 * so only a fifth of the draws keep that bias. */
const FRACTION_STEPS = 2 ** 30;
const fractionOf = (arb: fc.Arbitrary<number>) => arb.map((n) => n / FRACTION_STEPS);
export const fraction = fc.oneof(
  { weight: 4, arbitrary: fractionOf(fc.noBias(fc.integer({ min: 0, max: FRACTION_STEPS - 1 }))) },
  { weight: 1, arbitrary: fractionOf(fc.integer({ min: 0, max: FRACTION_STEPS - 1 })) },
);

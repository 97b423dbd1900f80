import fc from 'fast-check';
import { l2Coverage, type ImageSpec, type Preallocation, type ResizeStep } from '../model/case.ts';
import {
  KiB,
  MiB,
  GiB,
  SHRINK_SPAN_TABLES,
  stepSizeLimit,
  MAX_PREALLOCATED_SIZE,
  MAX_METADATA_PREALLOCATED_SIZE,
  align,
  clamp,
  between,
  fraction,
} from './bounds.ts';

// Resize steps: recipes drawn by fast-check, made concrete from the size the steps before leave.

/** How a step's target is chosen. Refusals are generated on purpose: both tools must refuse them. */
const STEP_KINDS = [
  { weight: 7, arbitrary: fc.constant('grow' as const) },
  { weight: 8, arbitrary: fc.constant('shrink' as const) },
  { weight: 1, arbitrary: fc.constant('same' as const) },
  { weight: 1, arbitrary: fc.constant('shrinkWithoutFlag' as const) },
  { weight: 1, arbitrary: fc.constant('preallocatedShrink' as const) },
  { weight: 1, arbitrary: fc.constant('unalignedShrink' as const) },
  { weight: 1, arbitrary: fc.constant('nonPositiveSize' as const) },
  // off the sector grid as often growing as shrinking, at every image size (qemu-img refuses both on
  // qcow2, raw takes them): a resizer that takes an odd grow writes the odd size into the header
  { weight: 1, arbitrary: fc.constant('unalignedGrow' as const) },
];

export const stepRecipeArb = fc.record({
  kind: fc.oneof(...STEP_KINDS),
  targetFraction: fraction,
  // cluster-aligned or only sector-aligned targets
  clusterAligned: fc.boolean(),
  form: fc.constantFrom('absolute', 'absolute', 'relative'),
  // how the number is written: every spelling qemu-img reads (model/size.ts), half of them with a
  // suffix or a fraction, so a resizer that reads one differently shows it in the first cases
  spelling: fc.constantFrom<Spelling>('bytes', 'bytes', 'upper', 'lower', 'fraction', 'B', 'b'),
  preallocation: fc.constantFrom<Preallocation | null>(null, null, 'off', 'metadata', 'falloc', 'full'),
  unalignedBy: fc.integer({ min: 1, max: 511 }),
});
export type StepRecipe = typeof stepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

export type Spelling = 'bytes' | 'upper' | 'lower' | 'fraction' | 'B' | 'b';

const UNITS = [
  ['E', 2 ** 60],
  ['P', 2 ** 50],
  ['T', 2 ** 40],
  ['G', GiB],
  ['M', MiB],
  ['K', KiB],
] as const;

/** `n` bytes spelled as qemu-img reads them: plain, with the largest suffix that divides it (upper
 * or lower case), as a binary fraction with a suffix (`1.5M`, `2.0625G`), or with a `B` or `b` bytes
 * suffix. A spelling that cannot write `n` falls back to the next plainer one. */
export function formatBytes(n: number, spelling: Spelling): string {
  if (spelling === 'B' || spelling === 'b') return `${n}${spelling}`;
  if (spelling === 'fraction') {
    // sixteenths of a unit (at most four decimals) are exact in binary: qemu-img reads them back
    // to the byte
    const unit = UNITS.find(([, u]) => n > u && n % u !== 0 && (16 * n) % u === 0);
    if (unit) return `${n / unit[1]}${unit[0]}`;
  }
  if (spelling === 'bytes') return String(n);
  const unit = UNITS.find(([, u]) => n % u === 0);
  if (!unit) return String(n);
  return `${n / unit[1]}${spelling === 'lower' ? unit[0].toLowerCase() : unit[0]}`;
}

/** SIZE for a target, absolute or relative to the current size. A `b` suffix (bytes to qemu-img,
 * 512-byte sectors to some resizers) is used only where the sector reading is a size this image
 * could have, so a resizer that reads it so resizes instead of failing. */
function sizeArgument(target: number, current: number, r: Pick<StepRecipe, 'form' | 'spelling'>, cap: number): string {
  const relative = r.form === 'relative' && target !== current;
  const n = relative ? Math.abs(target - current) : target;
  const asSectors = relative ? current + Math.sign(target - current) * n * 512 : n * 512;
  const spelling = r.spelling === 'b' && !(asSectors > 0 && asSectors <= cap) ? 'B' : r.spelling;
  const written = formatBytes(n, spelling);
  return relative ? `${target > current ? '+' : '-'}${written}` : written;
}

export function materialiseStep(r: StepRecipe, image: ImageSpec, current: number): ResizeStep {
  const unit = r.clusterAligned ? image.clusterSize : 512;
  const cap = stepSizeLimit(image);
  const lowest = Math.max(512, current - SHRINK_SPAN_TABLES * l2Coverage(image.clusterSize, image.extendedL2));
  const shrinkTarget = () =>
    clamp(align(between(lowest, current - 512, r.targetFraction), unit) || 512, lowest, current - 512);
  switch (r.kind) {
    case 'grow': {
      const preallocated = r.preallocation === 'falloc' || r.preallocation === 'full';
      const limit = Math.min(
        cap,
        preallocated ? MAX_PREALLOCATED_SIZE : r.preallocation === 'metadata' ? MAX_METADATA_PREALLOCATED_SIZE : cap,
      );
      if (current + 512 > limit) return materialiseStep({ ...r, kind: 'shrink' }, image, current);
      const target = clamp(align(between(current + 512, limit, r.targetFraction), unit), current + 512, limit);
      return { size: sizeArgument(align(target, 512), current, r, cap), shrink: false, preallocation: r.preallocation };
    }
    case 'shrink':
    case 'shrinkWithoutFlag':
    case 'preallocatedShrink': {
      if (current <= 512)
        return { size: sizeArgument(current + 512, current, r, cap), shrink: false, preallocation: null };
      const preallocation =
        r.kind === 'preallocatedShrink'
          ? r.preallocation && r.preallocation !== 'off'
            ? r.preallocation
            : 'full'
          : null;
      return {
        size: sizeArgument(shrinkTarget(), current, r, cap),
        shrink: r.kind !== 'shrinkWithoutFlag',
        preallocation,
      };
    }
    case 'same':
      return { size: sizeArgument(current, current, r, cap), shrink: r.clusterAligned, preallocation: r.preallocation };
    case 'unalignedShrink': {
      if (current < 1024) return materialiseStep({ ...r, kind: 'unalignedGrow' }, image, current);
      const target = align(between(512, current - 512, r.targetFraction), 512) - 512 + r.unalignedBy;
      return { size: String(target), shrink: true, preallocation: null };
    }
    case 'unalignedGrow': {
      // up to as far again as the image is (64 KiB at least), within the bound of its steps
      const highest = Math.min(cap - 512, current + Math.max(64 * KiB, current));
      if (highest < current + 512) return materialiseStep({ ...r, kind: 'unalignedShrink' }, image, current);
      const target = align(between(current, highest, r.targetFraction), 512) + r.unalignedBy;
      return { size: String(target), shrink: false, preallocation: null };
    }
    case 'nonPositiveSize':
      return { size: r.clusterAligned ? '0' : `-${current}`, shrink: true, preallocation: null };
  }
}

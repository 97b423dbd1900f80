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
  { weight: 1, arbitrary: fc.constant('unalignedSize' as const) },
  { weight: 1, arbitrary: fc.constant('nonPositiveSize' as const) },
];

export const stepRecipeArb = fc.record({
  kind: fc.oneof(...STEP_KINDS),
  targetFraction: fraction,
  // cluster-aligned or only sector-aligned targets
  clusterAligned: fc.boolean(),
  form: fc.constantFrom('bytes', 'suffix', 'relative'),
  preallocation: fc.constantFrom<Preallocation | null>(null, null, 'off', 'metadata', 'falloc', 'full'),
  unalignedBy: fc.integer({ min: 1, max: 511 }),
});
export type StepRecipe = typeof stepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** The largest unit among G, M, K that divides n, written as qemu and instar both parse it. */
export function formatBytes(n: number, withSuffix: boolean): string {
  if (withSuffix) {
    for (const [suffix, unit] of [
      ['G', GiB],
      ['M', MiB],
      ['K', KiB],
    ] as const) {
      if (n % unit === 0) return `${n / unit}${suffix}`;
      // a fraction with a suffix, e.g. 1.5M: exact in binary and accepted by qemu-img
      if (n > unit && (2 * n) % unit === 0) return `${Math.floor(n / unit)}.5${suffix}`;
    }
  }
  return String(n);
}

function sizeArgument(target: number, current: number, form: StepRecipe['form']): string {
  if (form !== 'relative' || target === current) return formatBytes(target, form === 'suffix');
  const delta = target - current;
  return `${delta > 0 ? '+' : '-'}${formatBytes(Math.abs(delta), true)}`;
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
      return { size: sizeArgument(align(target, 512), current, r.form), shrink: false, preallocation: r.preallocation };
    }
    case 'shrink':
    case 'shrinkWithoutFlag':
    case 'preallocatedShrink': {
      if (current <= 512)
        return { size: sizeArgument(current + 512, current, r.form), shrink: false, preallocation: null };
      const preallocation =
        r.kind === 'preallocatedShrink'
          ? r.preallocation && r.preallocation !== 'off'
            ? r.preallocation
            : 'full'
          : null;
      return {
        size: sizeArgument(shrinkTarget(), current, r.form),
        shrink: r.kind !== 'shrinkWithoutFlag',
        preallocation,
      };
    }
    case 'same':
      return { size: sizeArgument(current, current, r.form), shrink: r.clusterAligned, preallocation: r.preallocation };
    case 'unalignedSize':
      return {
        size: String(align(between(512, current + 64 * KiB, r.targetFraction), 512) + r.unalignedBy),
        shrink: true,
        preallocation: null,
      };
    case 'nonPositiveSize':
      return { size: r.clusterAligned ? '0' : `-${current}`, shrink: true, preallocation: null };
  }
}

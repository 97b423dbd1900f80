import fc from 'fast-check';
import {
  REFCOUNT_WIDTHS,
  l2Coverage,
  planStep,
  plannedSizes,
  type Case,
  type DataOp,
  type ImageSpec,
  type Preallocation,
  type RefcountBits,
  type ResizeStep,
} from '../harness/case.ts';

// Generation happens in two layers: fast-check draws small "recipes" (kinds, fractions, anchors)
// and pure functions turn them into concrete, valid sizes and offsets. Every recipe maps to a valid
// case, so shrinking a recipe never produces an image qemu-img cannot build.

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Small clusters make shrinks slow (qemu walks every L2 entry), so they get small images. */
export function maxVirtualSize(clusterSize: number, extendedL2: boolean): number {
  return Math.min(GiB, Math.max(8 * MiB, 4 * l2Coverage(clusterSize, extendedL2)));
}

/** falloc/full preallocation writes or reserves the whole new area: keep those grows small. */
const MAX_PREALLOCATED_SIZE = 64 * MiB;

const align = (n: number, unit: number) => Math.floor(n / unit) * unit;
const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, n));
/** A point in [lo, hi] chosen by a fraction in [0, 1). */
const between = (lo: number, hi: number, f: number) => lo + Math.floor((hi - lo + 1) * f);

/** A point in [0, 1), uniform. Not fc.double: it draws uniformly over the representable doubles,
 * nearly all of which are tiny, so every image, write and target would be near zero. fast-check
 * also biases integers towards the ends of their range; boundaries come from the anchors instead,
 * so only a fifth of the draws keep that bias. */
const FRACTION_STEPS = 2 ** 30;
const fractionOf = (arb: fc.Arbitrary<number>) => arb.map((n) => n / FRACTION_STEPS);
const fraction = fc.oneof(
  { weight: 4, arbitrary: fractionOf(fc.noBias(fc.integer({ min: 0, max: FRACTION_STEPS - 1 }))) },
  { weight: 1, arbitrary: fractionOf(fc.integer({ min: 0, max: FRACTION_STEPS - 1 })) },
);

/** Every refcount width equally likely; compat 0.10 only where qemu accepts it (16-bit refcounts). */
export const imageArb: fc.Arbitrary<ImageSpec> = fc
  .record({
    refcountBits: fc.constantFrom<RefcountBits>(...REFCOUNT_WIDTHS),
    clusterBits: fc.integer({ min: 9, max: 21 }),
    v2: fc.boolean(),
    lazyRefcounts: fc.boolean(),
    extendedL2: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
    sizeKind: fc.constantFrom('clusters', 'l2Boundary', 'sectors'),
    sizeFraction: fraction,
    boundaryDelta: fc.constantFrom(-1, 0, 1, -512, 512),
  })
  .map((r): ImageSpec => {
    const clusterSize = 2 ** r.clusterBits;
    const compat = r.v2 && r.refcountBits === 16 ? '0.10' : '1.1';
    const extendedL2 = compat === '1.1' && r.extendedL2 && clusterSize >= 16 * KiB;
    const max = maxVirtualSize(clusterSize, extendedL2);
    const l2 = l2Coverage(clusterSize, extendedL2);
    let virtualSize: number;
    if (r.sizeKind === 'l2Boundary' && l2 + clusterSize <= max) {
      // exactly on an L2 table boundary, or one cluster / one sector either side of it
      const tables = between(1, Math.floor((max - clusterSize) / l2), r.sizeFraction);
      const delta = Math.abs(r.boundaryDelta) === 1 ? r.boundaryDelta * clusterSize : r.boundaryDelta;
      virtualSize = tables * l2 + delta;
    } else if (r.sizeKind === 'sectors') {
      virtualSize = align(between(512, max, r.sizeFraction), 512) || 512;
    } else {
      virtualSize = between(1, max / clusterSize, r.sizeFraction) * clusterSize;
    }
    return {
      virtualSize,
      clusterSize,
      refcountBits: r.refcountBits,
      compat,
      lazyRefcounts: compat === '1.1' && r.lazyRefcounts,
      extendedL2,
    };
  });

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

const stepRecipeArb = fc.record({
  kind: fc.oneof(...STEP_KINDS),
  targetFraction: fraction,
  // cluster-aligned or only sector-aligned targets
  clusterAligned: fc.boolean(),
  form: fc.constantFrom('bytes', 'suffix', 'relative'),
  preallocation: fc.constantFrom<Preallocation | null>(null, null, 'off', 'metadata', 'falloc', 'full'),
  unalignedBy: fc.integer({ min: 1, max: 511 }),
});
type StepRecipe = typeof stepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** The largest unit among G, M, K that divides n, written as qemu and instar both parse it. */
export function formatBytes(n: number, withSuffix: boolean): string {
  if (withSuffix) {
    for (const [suffix, unit] of [['G', GiB], ['M', MiB], ['K', KiB]] as const) {
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

function materialiseStep(r: StepRecipe, image: ImageSpec, current: number): ResizeStep {
  const unit = r.clusterAligned ? image.clusterSize : 512;
  const cap = maxVirtualSize(image.clusterSize, image.extendedL2) * 2;
  const shrinkTarget = () => clamp(align(between(512, current - 512, r.targetFraction), unit) || 512, 512, current - 512);
  switch (r.kind) {
    case 'grow': {
      const preallocated = r.preallocation === 'falloc' || r.preallocation === 'full';
      const limit = preallocated ? Math.min(cap, MAX_PREALLOCATED_SIZE) : cap;
      if (current + 512 > limit) return materialiseStep({ ...r, kind: 'shrink' }, image, current);
      const target = clamp(align(between(current + 512, limit, r.targetFraction), unit), current + 512, limit);
      return { size: sizeArgument(align(target, 512), current, r.form), shrink: false, preallocation: r.preallocation };
    }
    case 'shrink':
    case 'shrinkWithoutFlag':
    case 'preallocatedShrink': {
      if (current <= 512) return { size: sizeArgument(current + 512, current, r.form), shrink: false, preallocation: null };
      const preallocation = r.kind === 'preallocatedShrink' ? (r.preallocation && r.preallocation !== 'off' ? r.preallocation : 'full') : null;
      return { size: sizeArgument(shrinkTarget(), current, r.form), shrink: r.kind !== 'shrinkWithoutFlag', preallocation };
    }
    case 'same':
      return { size: sizeArgument(current, current, r.form), shrink: r.clusterAligned, preallocation: r.preallocation };
    case 'unalignedSize':
      return { size: String(align(between(512, current + 64 * KiB, r.targetFraction), 512) + r.unalignedBy), shrink: true, preallocation: null };
    case 'nonPositiveSize':
      return { size: r.clusterAligned ? '0' : `-${current}`, shrink: true, preallocation: null };
  }
}

/** Where a data operation lands, relative to the image and to the first step's target. */
const ANCHORS = ['start', 'aroundTarget', 'beyondTarget', 'beyondTarget', 'beyondTarget', 'clusterBoundary', 'l2Boundary', 'end', 'anywhere'] as const;

const dataRecipeArb = fc.record({
  op: fc.constantFrom<DataOp['op']>('write', 'write', 'write', 'zero', 'discard', 'compress'),
  anchor: fc.constantFrom(...ANCHORS),
  offsetFraction: fraction,
  lengthFraction: fraction,
  pattern: fc.integer({ min: 1, max: 255 }),
});
type DataRecipe = typeof dataRecipeArb extends fc.Arbitrary<infer T> ? T : never;

function materialiseData(r: DataRecipe, image: ImageSpec, target: number): DataOp {
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
  if (r.op === 'compress' && size >= cs) {
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

/** qemu writes compressed data only into unallocated clusters: compressed writes go first, one
 * per cluster; later writes may still overwrite them, which qemu handles. */
function compressedFirst(ops: DataOp[]): DataOp[] {
  const compressed = ops.filter((op) => op.op === 'compress');
  const distinct = compressed.filter((op, i) => compressed.findIndex((o) => o.offset === op.offset) === i);
  return [...distinct, ...ops.filter((op) => op.op !== 'compress')];
}

export const caseArb: fc.Arbitrary<Case> = fc
  .record({
    image: imageArb,
    steps: fc.array(stepRecipeArb, { minLength: 1, maxLength: 3 }),
    data: fc.array(dataRecipeArb, { minLength: 0, maxLength: 6 }),
    // most cases also get one write past the first shrink's new end: a shrink that discards
    // allocated clusters is where #365 lived
    discardProbe: fc.option(dataRecipeArb.map((r) => ({ ...r, op: 'write' as const, anchor: 'beyondTarget' as const })), { freq: 4 }),
  })
  .map(({ image, steps: stepRecipes, data: recipes, discardProbe }): Case => {
    const data = discardProbe ? [...recipes, discardProbe] : recipes;
    let current = image.virtualSize;
    const steps = stepRecipes.map((r) => {
      const step = materialiseStep(r, image, current);
      const plan = planStep(step, current);
      if (plan.accepted && plan.target !== null) current = plan.target;
      return step;
    });
    // data is placed around the first accepted shrink's new size, so that shrinks discard
    // allocated clusters; without a shrink, around the middle of the image
    const shrink = plannedSizes({ image, data: [], steps }).find(({ plan }) => plan.kind === 'shrink' && plan.accepted);
    const target = shrink?.plan.target ?? align(image.virtualSize / 2, 512);
    return { image, data: compressedFirst(data.map((r) => materialiseData(r, image, target))), steps };
  });

/** The case of run `iteration` of seed `seed`: the same pair always gives the same case, and
 * fast-check reaches any index directly, so runs can be resumed or split without replaying. */
export function caseAt(seed: number, iteration: number): Case {
  return fc.sample(caseArb, { seed, path: String(iteration), numRuns: 1 })[0]!;
}

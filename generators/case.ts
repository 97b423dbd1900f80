import fc from 'fast-check';
import {
  REFCOUNT_WIDTHS,
  type BackingSpec,
  type DataFileKind,
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

/** From 64 KiB clusters up TiB images stay fast to create and grow; shrinks walk every L2 range
 * they discard, so their span is capped (SHRINK_SPAN_TABLES). */
const TiB = 1024 * GiB;
export const HUGE_CLUSTER = 64 * KiB;
/** L2 tables' worth of guest space one shrink may discard: above instar's staging limit of 256
 * (so that limit is exercised) but bounded in time: 512 GiB at 64 KiB clusters took about 3 s. */
const SHRINK_SPAN_TABLES = 1024;
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

/** The largest virtual size any step of this image reaches. */
export function stepSizeLimit(image: Pick<ImageSpec, 'clusterSize' | 'extendedL2' | 'dataFile' | 'backing'>): number {
  if (image.dataFile !== 'none' || image.backing !== null) return 2 * imageSizeLimit(image);
  return sizeLimit(image.clusterSize, image.extendedL2);
}

/** falloc/full preallocation writes or reserves the whole new area: keep those grows small;
 * metadata preallocation writes every L2 table of it. */
const MAX_PREALLOCATED_SIZE = 64 * MiB;
const MAX_METADATA_PREALLOCATED_SIZE = 1 * GiB;
const MAX_AMEND_CLUSTER = 16 * KiB;

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

/** Backing images: none in most cases; otherwise shorter or longer than the image. */
const backingArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.record({ longer: fc.boolean(), sizeFraction: fraction }) },
);
/** External data files: none in most cases; otherwise data_file, or data_file with data_file_raw. */
const dataFileArb = fc.oneof(
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
const externalArb = fc.record({
  backing: backingArb,
  dataFile: dataFileArb,
  // a new virtual size for an image too large to have a data file or a backing image
  sizeFraction: fraction,
  clusterAligned: fc.boolean(),
});
type ExternalRecipe = typeof externalArb extends fc.Arbitrary<infer T> ? T : never;

/** Gives an image its backing image (without data yet: caseArb places it) and data file. External
 * data files only on v3 images (qemu refuses them on v2), never data_file_raw together with a
 * backing image (qemu-img create refuses that); an image above the size bound of such images gets a
 * new size below it. */
function withExternalFiles(image: ImageSpec, r: ExternalRecipe): ImageSpec {
  const dataFile: DataFileKind = image.compat !== '1.1' ? 'none' : r.dataFile === 'data_file_raw' && r.backing !== null ? 'data_file' : r.dataFile;
  if (dataFile === 'none' && r.backing === null) return image;
  const max = imageSizeLimit({ ...image, dataFile });
  const unit = r.clusterAligned ? image.clusterSize : 512;
  const virtualSize = image.virtualSize <= max ? image.virtualSize : Math.max(unit, align(between(512, max, r.sizeFraction), unit));
  const backing = r.backing === null ? null : { virtualSize: backingSize(r.backing.longer, virtualSize, r.backing.sizeFraction), data: [] };
  return { ...image, virtualSize, dataFile, backing };
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
    amendFrom: fc.oneof({ weight: 5, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom<RefcountBits>(...REFCOUNT_WIDTHS) }),
    bitmaps: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 }) }),
    dirty: fc.integer({ min: 0, max: 3 }).map((n) => n === 3),
    sizeKind: fc.constantFrom('clusters', 'clusters', 'sectors', 'sectors', 'l2Boundary', 'l1Boundary', 'refblockBoundary', 'huge'),
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
    const near = (boundary: number) => boundary + (Math.abs(r.boundaryDelta) === 1 ? r.boundaryDelta * clusterSize : r.boundaryDelta);
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
      virtualSize,
      clusterSize,
      refcountBits: r.refcountBits,
      compat,
      lazyRefcounts: v3 && r.lazyRefcounts,
      extendedL2,
      compressionType: v3 && r.zstd ? 'zstd' : 'zlib',
      // amend rewrites every refcount structure: seconds from 64 KiB clusters up, so small ones only
      createdWithRefcountBits: v3 && clusterSize <= MAX_AMEND_CLUSTER && r.amendFrom !== null && r.amendFrom !== r.refcountBits ? r.amendFrom : null,
      bitmaps: v3 ? r.bitmaps : 0,
      dirty: v3 && r.lazyRefcounts && r.dirty,
      backing: null,
      dataFile: 'none',
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
  const cap = stepSizeLimit(image);
  const lowest = Math.max(512, current - SHRINK_SPAN_TABLES * l2Coverage(image.clusterSize, image.extendedL2));
  const shrinkTarget = () => clamp(align(between(lowest, current - 512, r.targetFraction), unit) || 512, lowest, current - 512);
  switch (r.kind) {
    case 'grow': {
      const preallocated = r.preallocation === 'falloc' || r.preallocation === 'full';
      const limit = Math.min(cap, preallocated ? MAX_PREALLOCATED_SIZE : r.preallocation === 'metadata' ? MAX_METADATA_PREALLOCATED_SIZE : cap);
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
const ANCHORS = ['start', 'aroundTarget', 'targetCluster', 'beyondTarget', 'beyondTarget', 'beyondTarget', 'clusterBoundary', 'l2Boundary', 'end', 'anywhere'] as const;

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
  // an external data file takes no compressed clusters (qemu-io's write -c fails with ENOTSUP), and
  // compressed clusters share host clusters: qemu-img amend refuses to narrow refcounts below that
  if (r.op === 'compress' && size >= cs && image.dataFile === 'none' && !amendsBelowSharing(image)) {
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
function compressedFirst(ops: DataOp[]): DataOp[] {
  const compressed = ops.filter((op) => op.op === 'compress');
  const distinct = compressed.filter((op, i) => compressed.findIndex((o) => o.offset === op.offset) === i);
  return [...distinct, ...ops.filter((op) => op.op !== 'compress')];
}

const snapshotRecipeArb = fc.record({ position: fraction, create: fc.integer({ min: 0, max: 2 }).map((n) => n > 0) });
type SnapshotRecipe = typeof snapshotRecipeArb extends fc.Arbitrary<infer T> ? T : never;
/** At most this many snapshots exist at once. */
const MAX_SNAPSHOTS = 3;

/** Snapshots share clusters, so refcounts exceed 1: 1- and 2-bit refcounts cannot hold that
 * (qemu fails the snapshot), before or after an amend. qemu refuses internal snapshots of images
 * with an external data file (ENOTSUP). */
const canSnapshot = (image: ImageSpec) => Math.min(image.refcountBits, image.createdWithRefcountBits ?? 64) >= 4 && image.dataFile === 'none';

/** Where data written into the backing image lands: it reads through wherever the image has none,
 * and a shrink and a later grow decide what of it shows again (qemu zero-fills a grow over a
 * longer backing image). */
const backingWriteArb = fc.record({
  anchor: fc.constantFrom('start', 'aroundTarget', 'beyondTarget', 'imageEnd', 'backingEnd', 'anywhere'),
  offsetFraction: fraction,
  lengthFraction: fraction,
  pattern: fc.integer({ min: 1, max: 255 }),
});
type BackingWrite = typeof backingWriteArb extends fc.Arbitrary<infer T> ? T : never;

function materialiseBackingWrite(r: BackingWrite, image: ImageSpec, backing: number, target: number): BackingSpec['data'][number] {
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
function withSnapshots(ops: DataOp[], recipes: SnapshotRecipe[]): DataOp[] {
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

export const caseArb: fc.Arbitrary<Case> = fc
  .record({
    image: imageArb,
    steps: fc.array(stepRecipeArb, { minLength: 1, maxLength: 4 }),
    data: fc.array(dataRecipeArb, { minLength: 0, maxLength: 6 }),
    // most cases also get one write past the first shrink's new end: a shrink that discards
    // allocated clusters is where #365 lived
    discardProbe: fc.option(
      fc.tuple(dataRecipeArb, fc.constantFrom('beyondTarget' as const, 'beyondTarget' as const, 'targetCluster' as const)).map(([r, anchor]) => ({ ...r, op: 'write' as const, anchor })),
      { freq: 4 },
    ),
    snapshots: fc.oneof({ weight: 2, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.array(snapshotRecipeArb, { minLength: 1, maxLength: 5 }) }),
    // a grow right after the first shrink: discarded data must not come back
    regrow: fc.integer({ min: 0, max: 2 }).map((n) => n === 2),
    // last: every draw above is the same as before backing images and data files existed
    external: externalArb,
    backingData: fc.array(backingWriteArb, { minLength: 1, maxLength: 3 }),
  })
  .map(({ image: drawn, steps: stepRecipes, data: recipes, discardProbe, snapshots, regrow, external, backingData }): Case => {
    let image = withExternalFiles(drawn, external);
    const data = discardProbe ? [...recipes, discardProbe] : recipes;
    let current = image.virtualSize;
    let pendingRegrow = regrow && stepRecipes.length < 4;
    const steps: ResizeStep[] = [];
    // each step is materialised from the size the steps before it leave, regrow included
    const add = (step: ResizeStep) => {
      const plan = planStep(step, current);
      if (plan.accepted && plan.target !== null) current = plan.target;
      steps.push(step);
      return plan;
    };
    for (const r of stepRecipes) {
      const plan = add(materialiseStep(r, image, current));
      if (pendingRegrow && plan.kind === 'shrink' && plan.accepted) {
        pendingRegrow = false;
        add({ size: `+${formatBytes(2 * image.clusterSize, true)}`, shrink: false, preallocation: null });
      }
    }
    // data is placed around the first accepted shrink's new size, so that shrinks discard
    // allocated clusters; without a shrink, around the middle of the image
    const shrink = plannedSizes({ image, data: [], steps }).find(({ plan }) => plan.kind === 'shrink' && plan.accepted);
    const target = shrink?.plan.target ?? align(image.virtualSize / 2, 512);
    if (image.backing) {
      const size = image.backing.virtualSize;
      image = { ...image, backing: { virtualSize: size, data: backingData.map((r) => materialiseBackingWrite(r, image, size, target)) } };
    }
    const io = compressedFirst(data.map((r) => materialiseData(r, image, target)));
    return { image, data: snapshots && canSnapshot(image) ? withSnapshots(io, snapshots) : io, steps };
  });

/** The case of run `iteration` of seed `seed`: the same pair always gives the same case, and
 * fast-check reaches any index directly, so runs can be resumed or split without replaying. */
export function caseAt(seed: number, iteration: number): Case {
  return fc.sample(caseArb, { seed, path: String(iteration), numRuns: 1 })[0]!;
}

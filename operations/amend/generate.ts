import fc from 'fast-check';
import { REFCOUNT_WIDTHS, type AmendStep, type DataOp, type ImageSpec, type OutputMode } from '../../model/case.ts';
import type { ImageState } from '../../model/state.ts';
import { MAX_AMEND_CLUSTER, align, between, fraction, stepSizeLimit } from '../../generators/bounds.ts';
import { canSnapshot } from '../../generators/data.ts';

// amend steps: recipes drawn by fast-check, made concrete from the state the steps before leave.
// Downgrades come most often (qemu expands zero clusters and drops v3 fields on the way, the
// suspected instar bug leaves zero-flag entries behind), then refcount widths (every pair of widths:
// qemu rewrites the refcount structures, instar refuses the key), lazy refcounts, upgrades, size
// changes, and -o lists qemu-img refuses: an unknown key, a value it cannot read.

const KINDS = [
  { weight: 6, arbitrary: fc.constant('downgrade' as const) },
  { weight: 3, arbitrary: fc.constant('refcountBits' as const) },
  { weight: 2, arbitrary: fc.constant('lazyRefcounts' as const) },
  { weight: 2, arbitrary: fc.constant('upgrade' as const) },
  { weight: 1, arbitrary: fc.constant('size' as const) },
  { weight: 1, arbitrary: fc.constant('noop' as const) },
  { weight: 2, arbitrary: fc.constant('refused' as const) },
];

/** -o lists qemu-img 7.2 refuses (instar reads some of them otherwise: `ON`, `v3`). */
const REFUSED = [
  'cluster_size=4096',
  'compat=1.0',
  'lazy_refcounts=ON',
  'refcount_bits=3',
  'size=1000',
  'compat',
  'preallocation=full',
];

export const amendRecipeArb = fc.record({
  kind: fc.oneof(...KINDS),
  bits: fc.constantFrom(...REFCOUNT_WIDTHS),
  fraction,
  /** qemu's other spelling of a compat level (`v2`, `v3`), which instar refuses. */
  otherSpelling: fc.integer({ min: 0, max: 3 }).map((n) => n === 3),
  /** a second key in the same -o list. */
  withLazyOff: fc.boolean(),
  refused: fc.constantFrom(...REFUSED),
});
export type AmendRecipe = typeof amendRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** An amend step for an image in `state`. A refcount width changes only on small clusters (qemu
 * rewrites every refcount block, which takes seconds from 64 KiB clusters up); elsewhere it toggles
 * lazy refcounts instead. */
export function materialiseAmend(r: AmendRecipe, image: ImageSpec, state: ImageState, output: OutputMode): AmendStep {
  const step = (options: string): AmendStep => ({ op: 'amend', options, output });
  const compat = (level: '0.10' | '1.1') => (r.otherSpelling ? (level === '0.10' ? 'v2' : 'v3') : level);
  switch (r.kind) {
    case 'downgrade':
      return step(`compat=${compat('0.10')}${r.withLazyOff ? ',lazy_refcounts=off' : ''}`);
    case 'upgrade':
      return step(`compat=${compat('1.1')}`);
    case 'refcountBits': {
      if (image.clusterSize > MAX_AMEND_CLUSTER)
        return materialiseAmend({ ...r, kind: 'lazyRefcounts' }, image, state, output);
      const others = REFCOUNT_WIDTHS.filter((b) => b !== state.refcountBits);
      const bits = r.bits === state.refcountBits ? others[Math.floor(r.fraction * others.length)]! : r.bits;
      return step(`refcount_bits=${bits}`);
    }
    case 'lazyRefcounts': {
      // in capitals as often as qemu's other compat spellings: qemu refuses them, instar does not
      const value = state.lazyRefcounts ? 'off' : 'on';
      return step(`lazy_refcounts=${r.otherSpelling ? value.toUpperCase() : value}`);
    }
    case 'size': {
      const limit = Math.min(stepSizeLimit(image), 4 * state.size + 2 ** 20);
      return step(`size=${align(between(512, limit, r.fraction), 512) || 512}`);
    }
    case 'noop':
      return step(state.compat === '1.1' ? 'compat=1.1' : 'compat=0.10');
    case 'refused':
      return step(r.refused);
  }
}

// ---- the images of cases that downgrade ---------------------------------------------------------

/** The image and data of a case with a downgrade: qemu downgrades only 16-bit refcounts, so most
 * such cases get them (two in three of the v3 images that can), that the downgrade over zero-flag
 * clusters and a snapshot is reached, not only refused. */
export function shapeForDowngrades(image: ImageSpec, data: DataOp[], fraction: number) {
  const v3 = image.compat === '1.1' && !image.extendedL2 && image.dataFile === 'none';
  const sixteen: ImageSpec =
    v3 && fraction < 2 / 3 ? { ...image, refcountBits: 16, createdWithRefcountBits: null } : image;
  // and one in nine zstd compression, a v3-only incompatible feature qemu 7.2 downgrades anyway
  const shaped: ImageSpec = v3 && fraction < 1 / 9 ? { ...sixteen, compressionType: 'zstd' } : sixteen;
  return { image: shaped, data: [...data, ...downgradeShapes(shaped, fraction)] };
}

/** Zero-flag clusters in the active and a snapshot's L2 tables, and the snapshot, for a case that
 * downgrades: what qemu's downgrade expands and a header-only downgrade leaves behind. Only where
 * the image can have both (v3, room in its refcounts for a snapshot). */
function downgradeShapes(image: ImageSpec, at: number): DataOp[] {
  if (image.compat !== '1.1' || !canSnapshot(image) || image.encrypted) return [];
  const cs = image.clusterSize;
  const clusters = Math.floor(image.virtualSize / cs);
  if (clusters < 4) return [];
  const first = Math.floor(at * (clusters - 2)) * cs;
  const second = ((Math.floor(at * (clusters - 2)) + 1) % clusters) * cs;
  return [
    { op: 'zero', offset: first, length: cs },
    { op: 'snapshot-create', name: 'before_downgrade' },
    { op: 'zero', offset: second, length: cs },
  ];
}

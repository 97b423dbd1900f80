import fc from 'fast-check';
import { REFCOUNT_WIDTHS, type AmendStep, type ImageSpec, type OutputMode } from '../../model/case.ts';
import type { ImageState } from '../../model/state.ts';
import { MAX_AMEND_CLUSTER, align, between, fraction, stepSizeLimit } from '../../generators/bounds.ts';

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
    case 'lazyRefcounts':
      return step(`lazy_refcounts=${state.lazyRefcounts ? 'off' : 'on'}`);
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

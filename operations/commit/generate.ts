import fc from 'fast-check';
import type { CommitStep, OutputMode } from '../../model/case.ts';
import type { ImageState } from '../../model/state.ts';

// commit steps: recipes drawn by fast-check, made concrete from the chain the steps before leave.
// Into the parent without -b most often (qemu empties the top), then -b naming the parent (qemu
// keeps the top: -b implies -d; instar empties it), then through a middle layer (qemu commits it
// all into the base; instar refuses), and now and then a name that is no member (both refuse).

export const commitStepRecipeArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant('into-parent' as const) },
  { weight: 2, arbitrary: fc.constant('explicit-parent' as const) },
  { weight: 2, arbitrary: fc.constant('through-middle' as const) },
  { weight: 1, arbitrary: fc.constant('not-in-chain' as const) },
);
export type CommitStepRecipe = typeof commitStepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** A name no chain of the harness has. */
export const NOT_IN_CHAIN = 'elsewhere.qcow2';

export function materialiseCommit(r: CommitStepRecipe, state: ImageState, output: OutputMode): CommitStep {
  const chain = state.chain ?? [];
  const step = (base: string | null): CommitStep => ({ op: 'commit', base, output });
  switch (r) {
    case 'into-parent':
      return step(null);
    // -b names a member as the level above it stores it (qemu's bdrv_find_backing_image)
    case 'explicit-parent':
      return step(chain[0]?.name ?? null);
    case 'through-middle':
      return step((chain[1] ?? chain[0])?.name ?? null);
    case 'not-in-chain':
      return step(NOT_IN_CHAIN);
  }
}

import fc from 'fast-check';
import type { OutputMode, SnapshotStep } from '../../model/case.ts';
import type { ImageState } from '../../model/state.ts';
import { fraction } from '../../generators/bounds.ts';

// snapshot steps: recipes drawn by fast-check, made concrete from the snapshots the image has then
// (the build's and the steps' before). Applies come most often (half of them after a grow), then
// creations and deletes of a snapshot the image has, listings; and what the tools treat
// differently: a name the image lacks,
// a second snapshot of a name (qemu allows it), an empty name, a name past qcow2's 255 bytes.

const ACTIONS = [
  { weight: 3, arbitrary: fc.constant('create' as const) },
  { weight: 4, arbitrary: fc.constant('apply' as const) },
  { weight: 3, arbitrary: fc.constant('delete' as const) },
  { weight: 1, arbitrary: fc.constant('list' as const) },
];

const NAMES = [
  { weight: 8, arbitrary: fc.constant('usual' as const) },
  { weight: 1, arbitrary: fc.constant('missing' as const) },
  { weight: 1, arbitrary: fc.constant('duplicate' as const) },
  { weight: 1, arbitrary: fc.constant('empty' as const) },
  { weight: 1, arbitrary: fc.constant('long' as const) },
];

export const snapshotStepRecipeArb = fc.record({
  action: fc.oneof(...ACTIONS),
  name: fc.oneof(...NAMES),
  which: fraction,
});
export type SnapshotStepRecipe = typeof snapshotStepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** A snapshot step for an image in `state`: a new name is `step<n>`, unused so far. */
export function materialiseSnapshot(r: SnapshotStepRecipe, state: ImageState, output: OutputMode): SnapshotStep {
  const step = (action: SnapshotStep['action'], name: string): SnapshotStep => ({
    op: 'snapshot',
    action,
    name,
    output,
  });
  if (r.action === 'list') return step('list', '');
  const existing = state.snapshots.map((s) => s.name);
  const pick = existing[Math.floor(r.which * existing.length)];
  const fresh = () => {
    for (let n = existing.length; ; n++) if (!existing.includes(`step${n}`)) return `step${n}`;
  };
  if (r.name === 'empty') return step(r.action, '');
  if (r.name === 'long') return step(r.action, 'L'.repeat(256));
  if (r.action === 'create') return step('create', r.name === 'duplicate' && pick ? pick : fresh());
  if (r.name === 'missing') return step(r.action, 'nosuch');
  // apply and delete: a snapshot the image has; with none yet, one is made first
  return pick === undefined ? step('create', fresh()) : step(r.action, pick);
}

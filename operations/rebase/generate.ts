import { chainFileFormat } from '../../model/layout.ts';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import type { BackingSpec, OutputMode, RebaseStep } from '../../model/case.ts';
import type { ImageState } from '../../model/state.ts';
import { align, between, fraction, MiB } from '../../generators/bounds.ts';
import { backingWriteArb, materialiseBackingWrite } from '../../generators/data.ts';
import type { ImageSpec } from '../../model/case.ts';
import { newBackingName } from './step.ts';

// rebase steps: recipes drawn by fast-check, made concrete from the chain the steps before leave.
// Onto an image of other content (built beside the chain), past the middle layer, onto none
// (`-b ""`), onto the same parent; with -u after the old backing was moved (onto where it went) or
// removed (onto a new image); safe mode two times in three; -F nearly always (qemu 7.2 refuses
// a new backing without it, instar takes it with -u). A vmdk top's new backings are vmdk, and -u
// comes two times in three.

export const rebaseStepRecipeArb = fc.record({
  target: fc.constantFrom('new-backing', 'new-backing', 'skip-middle', 'skip-middle', 'detach', 'same-backing'),
  unsafe: fc.integer({ min: 0, max: 2 }).map((n) => n === 0),
  withoutFormat: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  rawBacking: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  sizeFraction: fraction,
  writes: fc.array(backingWriteArb, { minLength: 1, maxLength: 3 }),
  /** The old backing moved (-u names where it went) or removed (-u names a new image) before the
   * step: one in six each. */
  oldBacking: fc.constantFrom('kept', 'kept', 'kept', 'kept', 'moved', 'missing'),
});
export type RebaseStepRecipe = typeof rebaseStepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** A rebase step, the `index`th of its case, for an image in `state`. */
export function materialiseRebase(
  r: RebaseStepRecipe,
  image: ImageSpec,
  state: ImageState,
  index: number,
  output: OutputMode,
): RebaseStep {
  const chain = state.chain ?? [];
  // a vmdk is rebased with -u two times in three (instar's safe mode refuses vmdk)
  const vmdk = image.format === 'vmdk';
  const step = (backing: string, newBacking?: BackingSpec): RebaseStep => ({
    op: 'rebase',
    backing,
    backingFormat: backing === '' || r.withoutFormat ? null : chainFileFormat(backing),
    // without -F, qemu's safe mode copies clusters before it refuses: -u, the iotest 114 use
    unsafe: (vmdk ? !r.unsafe : r.unsafe) || r.withoutFormat,
    ...(newBacking ? { newBacking } : {}),
    output,
  });
  const format = vmdk ? 'vmdk' : r.rawBacking ? 'raw' : 'qcow2';
  const size = newBackingSize(r, state.size);
  const data = r.writes.map((w) => materialiseBackingWrite(w, image, size, align(size / 2, 512)));
  const parent = chain[0]?.path;
  if (r.oldBacking !== 'kept' && parent !== undefined) {
    // -u always: qemu's safe mode opens the old chain first; moved beside where it was
    const movedTo = r.oldBacking === 'moved' ? join(dirname(parent), `moved.${chainFileFormat(parent)}`) : null;
    const onto = movedTo ?? newBackingName(index, format);
    // with -F always: a refused rebase would leave the moved file dangling for the steps after it
    return {
      ...step(onto, movedTo ? undefined : { format, virtualSize: size, data }),
      backingFormat: movedTo ? chainFileFormat(movedTo) : format,
      unsafe: true,
      oldBacking: { file: parent, movedTo },
    };
  }
  const target = r.target === 'skip-middle' && chain.length < 2 ? 'new-backing' : r.target;
  if (target === 'detach') return step('');
  if (target === 'same-backing' && chain[0]) return step(chain[0].path);
  if (target === 'skip-middle') return step(chain[1]!.path);
  return step(newBackingName(index, format), { format, virtualSize: size, data });
}

/** A new backing's size: three in four as large as the top at least (instar's safe rebase refuses
 * a smaller one). */
const newBackingSize = (r: RebaseStepRecipe, top: number) =>
  r.sizeFraction < 0.75
    ? align(between(top, top + 4 * MiB, r.sizeFraction / 0.75), 512) || 512
    : align(between(512, top, (r.sizeFraction - 0.75) * 4), 512) || 512;

import fc from 'fast-check';
import {
  RAW_IMAGE,
  type BackingSpec,
  type Case,
  type ImageSpec,
  type OperationName,
  type Step,
} from '../model/case.ts';
import { planOperation } from '../model/plan.ts';
import { initialState } from '../model/state.ts';
import { commitStepRecipeArb, materialiseCommit } from '../operations/commit/generate.ts';
import { materialiseRebase, rebaseStepRecipeArb } from '../operations/rebase/generate.ts';
import { align, between, fraction, KiB, MiB } from './bounds.ts';
import { CHAIN_DIRECTORY, levelSize, MAX_CHAIN_IMAGE } from './chain.ts';
import { backingWriteArb, dataRecipeArb, materialiseBackingWrite, materialiseData } from './data.ts';

// The vmdk cases of runs with commit or rebase steps: a monolithicSparse top over a chain of one or
// two vmdk levels (instar commits vmdk into vmdk and rebases vmdk with -u), each created over the
// one below it with qemu-img create -b and written by qemu-io. Levels as large as the top mostly, a
// larger or smaller one now and then (qemu-img cannot grow a vmdk base: it refuses the commit);
// now and then in a directory below the image's. No level is named by its absolute path: qemu-img
// rebase, which retargets such a name to each side's own files, refuses vmdk.

/** A vmdk grain: qemu-img's default, and the unit data is placed by. */
const GRAIN = 64 * KiB;

const SIZE_KINDS = ['same', 'same', 'same', 'larger', 'smaller'] as const;

const vmdkChainRecipeArb = fc.record({
  depth: fc.constantFrom(1, 2, 2),
  sizeFractions: fc.array(fraction, { minLength: 3, maxLength: 3 }),
  sizes: fc.array(fc.constantFrom(...SIZE_KINDS), { minLength: 2, maxLength: 2 }),
  writes: fc.array(fc.array(backingWriteArb, { minLength: 1, maxLength: 3 }), { minLength: 2, maxLength: 2 }),
  data: fc.array(dataRecipeArb, { minLength: 1, maxLength: 4 }),
  adapter: fc.constantFrom('ide', 'buslogic', 'lsilogic', 'legacyESX'),
  inDirectory: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  /** Each step's pick between commit and rebase where both run, and its recipe. */
  steps: fc.array(fc.record({ rebase: fc.boolean(), commit: commitStepRecipeArb, rebaseRecipe: rebaseStepRecipeArb }), {
    minLength: 1,
    maxLength: 2,
  }),
  outputs: fc.array(fc.constantFrom('human' as const, 'human' as const, 'json' as const, 'quiet' as const), {
    minLength: 2,
    maxLength: 2,
  }),
});

/** The vmdk chain cases of a run driving `ops` (commit, rebase or both among them). */
export function vmdkChainCaseArb(ops: readonly OperationName[]): fc.Arbitrary<Case> {
  const both = ops.includes('commit') && ops.includes('rebase');
  const onlyRebase = !ops.includes('commit');
  return vmdkChainRecipeArb.map((r): Case => {
    const top = align(between(MiB, MAX_CHAIN_IMAGE, r.sizeFractions[0]!), 512);
    const shaped: ImageSpec = {
      ...RAW_IMAGE,
      format: 'vmdk',
      virtualSize: top,
      createdPreallocation: 'off',
      options: { subformat: 'monolithicSparse', adapter_type: r.adapter },
      clusterSize: GRAIN,
    };
    let below: BackingSpec | null = null;
    for (let level = r.depth - 1; level >= 0; level--) {
      const virtualSize = levelSize(r.sizes[level]!, top, r.sizeFractions[level + 1]!);
      const data = r.writes[level]!.map((w) =>
        materialiseBackingWrite(w, shaped, virtualSize, align(virtualSize / 2, 512)),
      );
      below = { format: 'vmdk', virtualSize, data, ...(below ? { backing: below } : {}) };
    }
    const backing = below && r.inDirectory ? { ...below, directory: CHAIN_DIRECTORY } : below;
    // the top's fields are a raw image's (RAW_IMAGE) but its backing
    const image: ImageSpec = { ...shaped, clusterSize: RAW_IMAGE.clusterSize, backing };
    const data = r.data.map((d) => materialiseData(d, shaped, align(top / 2, 512)));
    let state = initialState({ image, data, steps: [] });
    const steps: Step[] = r.steps.map((s, i) => {
      const output = r.outputs[i]!;
      const rebase = onlyRebase || (both && s.rebase);
      // qemu-img refuses every vmdk rebase, so the chain stays as it was: an old backing moved away
      // comes last, or the steps after it would find it gone
      const last = i === r.steps.length - 1;
      const recipe = last ? s.rebaseRecipe : { ...s.rebaseRecipe, oldBacking: 'kept' as const };
      const step = rebase
        ? materialiseRebase(recipe, image, state, i, output)
        : materialiseCommit(s.commit, state, output);
      const plan = planOperation(step, state, 'vmdk');
      if (plan.accepted) state = plan.next;
      return step;
    });
    return { image, data, steps };
  });
}

import fc from 'fast-check';
import type { Case, ImageFormat, OutputMode, ResizeStep } from '../model/case.ts';
import { planStep, plannedSizes } from '../model/plan.ts';
import { align } from './bounds.ts';
import {
  backingWriteArb,
  canSnapshot,
  compressedFirst,
  dataRecipeArb,
  materialiseBackingWrite,
  materialiseData,
  snapshotRecipeArb,
  withSnapshots,
} from './data.ts';
import { creationArb, externalArb, imageArb, withCreation, withExternalFiles } from './image.ts';
import { convertedCaseArb } from './converted.ts';
import { rawCaseArb } from './raw.ts';
import { formatBytes, materialiseStep, stepRecipeArb } from './steps.ts';

// Generation happens in two layers: fast-check draws small "recipes" (kinds, fractions, anchors)
// and pure functions turn them into concrete, valid sizes and offsets. Every recipe maps to a valid
// case, so shrinking a recipe never produces an image qemu-img cannot build. The draw order of
// caseArb's record is part of every seed's identity: new draws go last.

export const caseArb: fc.Arbitrary<Case> = fc
  .record({
    image: imageArb,
    steps: fc.array(stepRecipeArb, { minLength: 1, maxLength: 4 }),
    data: fc.array(dataRecipeArb, { minLength: 0, maxLength: 6 }),
    // most cases also get one write past the first shrink's new end: a shrink that discards
    // allocated clusters is where #365 lived
    discardProbe: fc.option(
      fc
        .tuple(
          dataRecipeArb,
          fc.constantFrom('beyondTarget' as const, 'beyondTarget' as const, 'targetCluster' as const),
        )
        .map(([r, anchor]) => ({ ...r, op: 'write' as const, anchor })),
      { freq: 4 },
    ),
    snapshots: fc.oneof(
      { withCrossShrink: true },
      { weight: 2, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.array(snapshotRecipeArb, { minLength: 1, maxLength: 5 }) },
    ),
    // a grow right after the first shrink: discarded data must not come back
    regrow: fc.integer({ min: 0, max: 2 }).map((n) => n === 2),
    // last: every draw above is the same as before backing images and data files existed
    external: externalArb,
    backingData: fc.array(backingWriteArb, { minLength: 1, maxLength: 3 }),
    // what each step asks the subject to print: its words half the time, else JSON or nothing
    outputs: fc.array(fc.constantFrom<OutputMode>('human', 'human', 'json', 'quiet'), { minLength: 5, maxLength: 5 }),
    // last: encryption, preallocated creation and raw backing images, after every older draw
    creation: creationArb,
  })
  .map(
    ({
      image: drawn,
      steps: stepRecipes,
      data: recipes,
      discardProbe,
      snapshots,
      regrow,
      external,
      backingData,
      outputs,
      creation,
    }): Case => {
      let image = withCreation(withExternalFiles(drawn, external), creation);
      const data = discardProbe ? [...recipes, discardProbe] : recipes;
      let current = image.virtualSize;
      let pendingRegrow = regrow && stepRecipes.length < 4;
      const steps: ResizeStep[] = [];
      // each step is materialised from the size the steps before it leave, regrow included
      const add = (step: ResizeStep) => {
        const plan = planStep(step, current, image.format);
        if (plan.accepted && plan.target !== null) current = plan.target;
        steps.push(step);
        return plan;
      };
      for (const r of stepRecipes) {
        const plan = add(materialiseStep(r, image, current));
        if (pendingRegrow && plan.kind === 'shrink' && plan.accepted) {
          pendingRegrow = false;
          add({ size: `+${formatBytes(2 * image.clusterSize, 'upper')}`, shrink: false, preallocation: null });
        }
      }
      // data is placed around the first accepted shrink's new size, so that shrinks discard
      // allocated clusters; without a shrink, around the middle of the image
      const shrink = plannedSizes({ image, data: [], steps }).find(
        ({ plan }) => plan.kind === 'shrink' && plan.accepted,
      );
      const target = shrink?.plan.target ?? align(image.virtualSize / 2, 512);
      if (image.backing) {
        const size = image.backing.virtualSize;
        const data = backingData.map((r) => materialiseBackingWrite(r, image, size, target));
        image = { ...image, backing: { ...image.backing, data } };
      }
      const io = compressedFirst(data.map((r) => materialiseData(r, image, target)));
      const withOutputs = steps.map((s, i) => ({
        ...s,
        output: outputs[i]!,
        ...(image.encrypted ? { key: creation.keys[i]! } : {}),
      }));
      return { image, data: snapshots && canSnapshot(image) ? withSnapshots(io, snapshots) : io, steps: withOutputs };
    },
  );

/** The generator of each format's cases. */
export const CASE_ARBITRARIES: Record<ImageFormat, fc.Arbitrary<Case>> = {
  qcow2: caseArb,
  raw: rawCaseArb,
  vhdx: convertedCaseArb('vhdx'),
  vmdk: convertedCaseArb('vmdk'),
  vpc: convertedCaseArb('vpc'),
};

/** How often each format comes up among the formats a run covers: qcow2 has the most a resizer can
 * get wrong (refcounts, tables, features), raw and the formats qemu-img does not resize the least. */
const FORMAT_WEIGHTS: Record<ImageFormat, number> = { qcow2: 3, raw: 1, vhdx: 1, vmdk: 1, vpc: 1 };
/** The format of a case is drawn from a stream of its own (this seed offset), so that a qcow2
 * case at (seed, iteration) is the case qcow2-only runs of that seed had there. */
const FORMAT_SEED_OFFSET = 0x5eed;

/** The format of run `iteration` of seed `seed` among `formats`. */
export function formatAt(seed: number, iteration: number, formats: readonly ImageFormat[]): ImageFormat {
  if (formats.length === 1) return formats[0]!;
  const arb = fc.oneof(...formats.map((f) => ({ weight: FORMAT_WEIGHTS[f], arbitrary: fc.constant(f) })));
  return fc.sample(arb, { seed: (seed + FORMAT_SEED_OFFSET) | 0, path: String(iteration), numRuns: 1 })[0]!;
}

/** The generator of a format's cases; with `output`, every step asks the subject for that output
 * (`--output json` in every step, say) instead of the drawn mix. The draws are the same either way. */
export function caseArbitrary(format: ImageFormat, output: OutputMode | null = null): fc.Arbitrary<Case> {
  const arb = CASE_ARBITRARIES[format];
  return output === null ? arb : arb.map((c) => ({ ...c, steps: c.steps.map((s) => ({ ...s, output })) }));
}

/** The case of run `iteration` of seed `seed` (qcow2 cases unless other formats are given): the
 * same pair always gives the same case, and fast-check reaches any index directly, so runs can be
 * resumed or split without replaying. Minimisation starts from the same sample (run/minimise.ts). */
export function caseAt(
  seed: number,
  iteration: number,
  formats: readonly ImageFormat[] = ['qcow2'],
  output: OutputMode | null = null,
): Case {
  const arb = caseArbitrary(formatAt(seed, iteration, formats), output);
  return fc.sample(arb, { seed, path: String(iteration), numRuns: 1 })[0]!;
}

import fc from 'fast-check';
import {
  isResize,
  type Case,
  type ImageFormat,
  type ImageSpec,
  type OperationName,
  type OutputMode,
  type Step,
} from '../model/case.ts';
import { planOperation, plannedSizes } from '../model/plan.ts';
import { initialState, type ImageState } from '../model/state.ts';
import { amendRecipeArb, materialiseAmend, shapeForDowngrades } from '../operations/amend/generate.ts';
import {
  materialiseSnapshot,
  shapeForSnapshots,
  snapshotCaseRecipeArb,
  snapshotStepRecipeArb,
} from '../operations/snapshot/generate.ts';
import {
  materialiseRepair,
  repairCaseRecipeArb,
  repairStepRecipeArb,
  shapeForRepairs,
  type RepairStepRecipe,
} from '../operations/repair/generate.ts';
import {
  bitmapCaseRecipeArb,
  bitmapStepRecipeArb,
  materialiseBitmap,
  shapeForBitmaps,
  type BitmapStepRecipe,
} from '../operations/bitmap/generate.ts';
import { align, stepSizeLimit } from './bounds.ts';
import { chainCaseRecipeArb, chainData, chainImage } from './chain.ts';
import { commitStepRecipeArb, materialiseCommit, type CommitStepRecipe } from '../operations/commit/generate.ts';
import { materialiseRebase, rebaseStepRecipeArb, type RebaseStepRecipe } from '../operations/rebase/generate.ts';
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
import { vmdkChainCaseArb } from './vmdk-chain.ts';
import { rawCaseArb } from './raw.ts';
import { formatBytes, materialiseStep, stepRecipeArb, type StepRecipe } from './steps.ts';

// Generation happens in two layers: fast-check draws small "recipes" (kinds, fractions, anchors)
// and pure functions turn them into concrete, valid sizes and offsets. Every recipe maps to a valid
// case, so shrinking a recipe never produces an image qemu-img cannot build. The draw order of
// caseArb's record is part of every seed's identity: new draws go last.

/** One step's operation when a run drives others than resize: a pick among the enabled operations
 * (by OPERATION_WEIGHTS) and that operation's recipe. Drawn last, so that a resize-only run's cases
 * are the cases of today's seeds. */
const operationRecipeArb = fc.record({
  pick: fc.integer({ min: 0, max: 999 }),
  amend: amendRecipeArb,
  snapshot: snapshotStepRecipeArb,
});
type OperationRecipe = typeof operationRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** How often each operation comes up among those a run drives: resize most (it has the most a
 * step can get wrong), amend and snapshot each half as often. */
const OPERATION_WEIGHTS: Record<OperationName, number> = {
  resize: 2,
  amend: 1,
  snapshot: 1,
  repair: 1,
  bitmap: 1,
  commit: 1,
  rebase: 1,
};

/** The operations that write or rename the chain below the image. */
const CHAIN_OPERATIONS: readonly OperationName[] = ['commit', 'rebase'];

/** The operation of a step, from its pick among the enabled ones. */
function pickOperation(pick: number, ops: readonly OperationName[]): OperationName {
  const total = ops.reduce((n, o) => n + OPERATION_WEIGHTS[o], 0);
  let at = (pick / 1000) * total;
  for (const o of ops) {
    at -= OPERATION_WEIGHTS[o];
    if (at < 0) return o;
  }
  return ops.at(-1)!;
}

/** The steps of a case from their recipes, each made concrete from the state the steps before
 * leave (qemu's rules predict it): a resize from its recipe (and a grow right after the first
 * shrink it accepts, when asked), another operation from its own. */
function materialiseSteps(
  image: ImageSpec,
  start: ImageState,
  recipes: {
    resize: StepRecipe;
    operation: OperationRecipe | undefined;
    repair?: RepairStepRecipe;
    bitmap?: BitmapStepRecipe;
    commit?: CommitStepRecipe;
    rebase?: RebaseStepRecipe;
  }[],
  ops: readonly OperationName[],
  regrow: boolean,
  outputs: readonly OutputMode[],
): Step[] {
  let state = start;
  let pendingRegrow = regrow && recipes.length < 4;
  const steps: Step[] = [];
  const add = (step: Step) => {
    const plan = planOperation(step, state, image.format);
    if (plan.accepted) state = plan.next;
    steps.push(step);
    return plan;
  };
  for (const r of recipes) {
    const output = outputs[steps.length] ?? 'human';
    const op = r.operation ? pickOperation(r.operation.pick, ops) : 'resize';
    if (op === 'amend') add(materialiseAmend(r.operation!.amend, image, state, output));
    else if (op === 'repair') add(materialiseRepair(r.repair!, output));
    else if (op === 'bitmap') add(materialiseBitmap(r.bitmap!, state, output, steps.length === 0));
    else if (op === 'commit') add(materialiseCommit(r.commit!, state, output));
    else if (op === 'rebase') add(materialiseRebase(r.rebase!, image, state, steps.length, output));
    else if (op === 'snapshot') {
      const recipe = r.operation!.snapshot;
      // most applies come after a grow: the image is then not the size the snapshot was taken at
      // (qemu sets the snapshot's size back; instar documents refusing)
      const grow = 4 * image.clusterSize;
      const room = state.size + grow <= stepSizeLimit(image) && steps.length < 3;
      if (recipe.action === 'apply' && recipe.which < 0.75 && state.snapshots.length > 0 && room)
        add({ size: `+${formatBytes(grow, 'upper')}`, shrink: false, preallocation: null });
      add(materialiseSnapshot(recipe, state, output));
    } else {
      const plan = add(materialiseStep(r.resize, image, state.size));
      if (pendingRegrow && plan.kind === 'shrink' && plan.accepted) {
        pendingRegrow = false;
        add({ size: `+${formatBytes(2 * image.clusterSize, 'upper')}`, shrink: false, preallocation: null });
      }
    }
  }
  return steps;
}

const qcow2Arbitraries = new Map<string, fc.Arbitrary<Case>>();

/** The qcow2 cases of a run that drives `ops` (resize alone: the cases seeds had before other
 * operations existed). */
export function qcow2CaseArb(ops: readonly OperationName[] = ['resize']): fc.Arbitrary<Case> {
  const key = ops.join(',');
  const known = qcow2Arbitraries.get(key);
  if (known) return known;
  const arb = makeQcow2CaseArb(ops);
  qcow2Arbitraries.set(key, arb);
  return arb;
}

function makeQcow2CaseArb(ops: readonly OperationName[]): fc.Arbitrary<Case> {
  return fc
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
      outputs: fc.array(fc.constantFrom<OutputMode>('human', 'human', 'json', 'quiet'), {
        minLength: 5,
        maxLength: 5,
      }),
      // last: encryption, preallocated creation and raw backing images, after every older draw
      creation: creationArb,
      // last: the operation of each step where a run drives others than resize
      operations: fc.array(operationRecipeArb, { minLength: 4, maxLength: 4 }),
      // last: the image and data of cases with snapshot steps
      snapshotCase: snapshotCaseRecipeArb,
      // last: repair steps' tiers, and the damage of cases with repair steps
      repairs: fc.array(repairStepRecipeArb, { minLength: 4, maxLength: 4 }),
      repairCase: repairCaseRecipeArb,
      // last: bitmap steps, and the bitmaps of cases with bitmap steps
      bitmaps: fc.array(bitmapStepRecipeArb, { minLength: 4, maxLength: 4 }),
      bitmapCase: bitmapCaseRecipeArb,
      // last: commit and rebase steps, and the chains of cases with them
      commits: fc.array(commitStepRecipeArb, { minLength: 4, maxLength: 4 }),
      rebases: fc.array(rebaseStepRecipeArb, { minLength: 4, maxLength: 4 }),
      chainCase: chainCaseRecipeArb,
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
        operations,
        snapshotCase,
        repairs,
        repairCase,
        bitmaps,
        bitmapCase,
        commits,
        rebases,
        chainCase,
      }): Case => {
        let image = withCreation(withExternalFiles(drawn, external), creation);
        // a case with a commit or a rebase step is a chain case: its image is the top of a chain,
        // small, and its steps are no resizes (a grown top grows the base it is committed into)
        const picks = operations.slice(0, stepRecipes.length).map((o) => pickOperation(o.pick, ops));
        const chaining = picks.some((o) => CHAIN_OPERATIONS.includes(o));
        const withoutResize = ops.filter((o) => o !== 'resize');
        const stepOps = chaining && withoutResize.length > 0 ? withoutResize : ops;
        if (chaining) image = chainImage(image, chainCase);
        const data = discardProbe ? [...recipes, discardProbe] : recipes;
        // the resizes alone first: data is placed around the first shrink they make, so that
        // shrinks discard allocated clusters; without a shrink, around the middle of the image
        const resizes = stepRecipes.map((resize) => ({ resize, operation: undefined }));
        const alone = { image, data: [], steps: [] };
        const resizeSteps = materialiseSteps(image, initialState(alone), resizes, ['resize'], regrow, outputs);
        const shrink = plannedSizes({ image, data: [], steps: resizeSteps }).find(
          ({ plan }) => plan.kind === 'shrink' && plan.accepted,
        );
        const target = shrink?.plan.target ?? align(image.virtualSize / 2, 512);
        if (image.backing) {
          const size = image.backing.virtualSize;
          const data = backingData.map((r) => materialiseBackingWrite(r, image, size, target));
          image = { ...image, backing: { ...image.backing, data } };
        }
        const io = compressedFirst(data.map((r) => materialiseData(r, image, target)));
        let filled = snapshots && canSnapshot(image) ? withSnapshots(io, snapshots) : io;
        if (chaining) filled = chainData(image, filled, chainCase);
        let steps = resizeSteps;
        if (ops.some((o) => o !== 'resize')) {
          // each step becomes the operation its pick says, made from the state before it
          let mixed = stepRecipes.map((resize, i) => ({
            resize,
            operation: operations[i],
            repair: repairs[i]!,
            bitmap: bitmaps[i]!,
            commit: commits[i]!,
            rebase: rebases[i]!,
          }));
          const repairing = (r: (typeof mixed)[number]) => pickOperation(r.operation!.pick, stepOps) === 'repair';
          const downgrades = mixed.some(
            (r) => pickOperation(r.operation!.pick, stepOps) === 'amend' && r.operation!.amend.kind === 'downgrade',
          );
          // and downgrades meet what qemu's downgrade expands
          if (downgrades) ({ image, data: filled } = shapeForDowngrades(image, filled, operations[0]!.amend.fraction));
          // a case with snapshot steps has a snapshot of its data to apply or delete, and more
          if (mixed.some((r) => pickOperation(r.operation!.pick, stepOps) === 'snapshot'))
            ({ image, data: filled } = shapeForSnapshots(image, filled, snapshotCase));
          // a case with bitmap steps has bitmaps added between its writes
          if (mixed.some((r) => pickOperation(r.operation!.pick, stepOps) === 'bitmap'))
            ({ image, data: filled } = shapeForBitmaps(image, filled, bitmapCase));
          // a case with repair steps is damaged after its build, and repaired first
          const first = mixed.find(repairing);
          if (first) {
            ({ image, data: filled } = shapeForRepairs(image, filled, repairCase));
            mixed = [first, ...mixed.filter((r) => r !== first)];
          }
          const start = initialState({ image, data: filled, steps: [] });
          steps = materialiseSteps(image, start, mixed, stepOps, regrow, outputs);
        }
        const withKeys = steps.map((s, i) =>
          isResize(s) ? { ...s, output: outputs[i]!, ...(image.encrypted ? { key: creation.keys[i]! } : {}) } : s,
        );
        return { image, data: filled, steps: withKeys };
      },
    );
}

/** The qcow2 cases of a resize-only run. */
export const caseArb: fc.Arbitrary<Case> = qcow2CaseArb();

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
export function caseArbitrary(
  format: ImageFormat,
  output: OutputMode | null = null,
  ops: readonly OperationName[] = ['resize'],
): fc.Arbitrary<Case> {
  const mixed = format === 'qcow2' && ops.some((o) => o !== 'resize');
  const arb = mixed ? qcow2CaseArb(ops) : format === 'vmdk' ? vmdkCaseArb(ops) : CASE_ARBITRARIES[format];
  return output === null ? arb : arb.map((c) => ({ ...c, steps: c.steps.map((s) => ({ ...s, output })) }));
}

const vmdkArbitraries = new Map<string, fc.Arbitrary<Case>>();

/** The vmdk cases of a run driving `ops`: resizes of images qemu-img converts (a resize-only run's
 * vmdk cases), chain cases for commit and rebase, half and half where both come up. */
function vmdkCaseArb(ops: readonly OperationName[]): fc.Arbitrary<Case> {
  if (!ops.some((o) => CHAIN_OPERATIONS.includes(o))) return CASE_ARBITRARIES.vmdk;
  const key = ops.join(',');
  let arb = vmdkArbitraries.get(key);
  if (arb) return arb;
  const chains = vmdkChainCaseArb(ops);
  arb = ops.includes('resize') ? fc.oneof(CASE_ARBITRARIES.vmdk, chains) : chains;
  vmdkArbitraries.set(key, arb);
  return arb;
}

/** The case of run `iteration` of seed `seed` (qcow2 cases unless other formats are given): the
 * same pair always gives the same case, and fast-check reaches any index directly, so runs can be
 * resumed or split without replaying. Minimisation starts from the same sample (run/minimise.ts). */
export function caseAt(
  seed: number,
  iteration: number,
  formats: readonly ImageFormat[] = ['qcow2'],
  output: OutputMode | null = null,
  ops: readonly OperationName[] = ['resize'],
): Case {
  const arb = caseArbitrary(formatAt(seed, iteration, formats), output, ops);
  return fc.sample(arb, { seed, path: String(iteration), numRuns: 1 })[0]!;
}

import fc from 'fast-check';
import { RAW_IMAGE, type Case, type ImageSpec, type OutputMode, type ResizeStep } from '../model/case.ts';
import { planStep, plannedSizes, sizeAfterStep } from '../model/plan.ts';
import { MAX_CREATED_PREALLOCATED, MAX_RAW_DENSE_WRITE, MAX_RAW_SIZE, align, between, fraction } from './bounds.ts';
import { dataRecipeArb, materialiseData } from './data.ts';
import { materialiseStep, stepRecipeArb } from './steps.ts';

// Raw cases: the guest disk as a plain file, sparse or dense, created with or without
// preallocation, and the same step recipes as qcow2's (every size spelling, grows and shrinks with
// every preallocation mode, zero and negative sizes, sizes off the sector grid, which raw takes).

export const rawCaseArb: fc.Arbitrary<Case> = fc
  .record({
    sizeFraction: fraction,
    // most raw images stay below 16 MiB; some reach the bound
    large: fc.integer({ min: 0, max: 3 }).map((n) => n === 3),
    createdPreallocation: fc.constantFrom('off', 'off', 'off', 'off', 'off', 'off', 'falloc', 'full'),
    data: fc.array(dataRecipeArb, { minLength: 0, maxLength: 6 }),
    // a dense image: one long write from a point in the image, most of it data
    dense: fc.option(fc.record({ from: fraction, length: fraction, pattern: fc.integer({ min: 1, max: 255 }) }), {
      freq: 3,
    }),
    steps: fc.array(stepRecipeArb, { minLength: 1, maxLength: 4 }),
    outputs: fc.array(fc.constantFrom<OutputMode>('human', 'human', 'json', 'quiet'), { minLength: 4, maxLength: 4 }),
  })
  .map((r): Case => {
    const createdPreallocation = r.createdPreallocation as ImageSpec['createdPreallocation'];
    const bound =
      createdPreallocation === 'off' ? (r.large ? MAX_RAW_SIZE / 2 : 16 * 2 ** 20) : MAX_CREATED_PREALLOCATED.full;
    const virtualSize = align(between(512, bound, r.sizeFraction), 512) || 512;
    const image: ImageSpec = { ...RAW_IMAGE, format: 'raw', virtualSize, createdPreallocation };
    let current = virtualSize;
    const steps: ResizeStep[] = r.steps.map((recipe, i) => {
      const step = { ...materialiseStep(recipe, image, current), output: r.outputs[i]! };
      const plan = planStep(step, current, 'raw');
      if (plan.accepted && plan.target !== null) current = sizeAfterStep(plan.target, 'raw');
      return step;
    });
    // data around the first accepted shrink's new size, as in qcow2 cases: shrinks discard data
    const shrink = plannedSizes({ image, data: [], steps }).find(({ plan }) => plan.kind === 'shrink' && plan.accepted);
    const target = align(shrink?.plan.target ?? virtualSize / 2, 512);
    const data = r.data.map((d) => materialiseData(d, image, target));
    if (r.dense) {
      const offset = align(between(0, virtualSize - 512, r.dense.from * 0.5), 512);
      const length = Math.min(
        virtualSize - offset,
        MAX_RAW_DENSE_WRITE,
        align(between(512, virtualSize - offset, r.dense.length), 512) || 512,
      );
      data.unshift({ op: 'write', offset, length, pattern: r.dense.pattern });
    }
    return { image, data, steps };
  });

import fc from 'fast-check';
import { RAW_IMAGE, type Case, type ConvertedFormat, type ImageSpec, type ResizeStep } from '../model/case.ts';
import { planStep, sizeAfterStep } from '../model/plan.ts';
import { vpcCreatedSize } from '../model/vpc.ts';
import { GiB, KiB, MAX_DYNAMIC_SIZE, MAX_FIXED_SIZE, MiB, align, between, fraction } from './bounds.ts';
import { dataRecipeArb, materialiseData } from './data.ts';
import { materialiseStep, stepRecipeArb } from './steps.ts';

// vhdx, vmdk and vpc cases: images qemu-img makes with each format's subformats and layout
// options, data in the first, a middle and the last block, and steps that grow them (the same
// recipes as raw's, so refused shrinks, sizes off the sector grid and every spelling come up too)
// with some grows to a table boundary, where a resizer must add a table entry, a table or a chunk.

/** Each format's options, and the unit of its tables: the guest space one table entry maps (a
 * vhdx or vpc block, a vmdk grain) and one whole table maps (a vhdx BAT chunk of 4 GiB, whatever
 * the block size; a vmdk grain table of 512 grains; a vpc BAT sector of 128 blocks). */
interface Layout {
  options: Record<string, string>;
  block: number;
  table: number;
}

const vhdxArb: fc.Arbitrary<Layout> = fc
  .record({
    subformat: fc.constantFrom('dynamic', 'dynamic', 'dynamic', 'fixed'),
    // qemu's default block size is 32 MiB below 1 TiB; instar takes 1 to 256 MiB
    blockMiB: fc.constantFrom(1, 2, 8, 32, 64),
    logMiB: fc.constantFrom(1, 1, 4, 8),
  })
  .map(({ subformat, blockMiB, logMiB }) => ({
    options: { subformat, block_size: String(blockMiB * MiB), log_size: String(logMiB * MiB) },
    block: blockMiB * MiB,
    table: 4 * GiB,
  }));

const vmdkArb: fc.Arbitrary<Layout> = fc
  .record({
    subformat: fc.constantFrom(
      'monolithicSparse',
      'monolithicSparse',
      'monolithicSparse',
      'streamOptimized',
      'monolithicFlat',
      'twoGbMaxExtentSparse',
    ),
    adapter: fc.constantFrom('ide', 'buslogic', 'lsilogic', 'legacyESX'),
  })
  .map(({ subformat, adapter }) => ({
    options: { subformat, adapter_type: adapter },
    block: 64 * KiB,
    table: 512 * 64 * KiB,
  }));

const vpcArb: fc.Arbitrary<Layout> = fc
  .record({
    subformat: fc.constantFrom('dynamic', 'dynamic', 'dynamic', 'fixed'),
    // without force_size qemu sizes the image by its CHS geometry, as older tools did
    forceSize: fc.boolean(),
  })
  .map(({ subformat, forceSize }) => ({
    options: { subformat, force_size: forceSize ? 'on' : 'off' },
    block: 2 * MiB,
    table: 128 * 2 * MiB,
  }));

const LAYOUTS: Record<ConvertedFormat, fc.Arbitrary<Layout>> = { vhdx: vhdxArb, vmdk: vmdkArb, vpc: vpcArb };

/** A grow to a table boundary: to the end of the block or table that holds the current end, a
 * few entries or tables past it, or one sector either side of such a boundary. */
const boundaryGrowArb = fc.record({
  unit: fc.constantFrom('block' as const, 'table' as const),
  count: fc.integer({ min: 1, max: 3 }),
  offset: fc.constantFrom(0, 0, 512, -512),
});

export function convertedCaseArb(format: ConvertedFormat): fc.Arbitrary<Case> {
  return fc
    .record({
      layout: LAYOUTS[format],
      sizeFraction: fraction,
      data: fc.array(dataRecipeArb, { minLength: 0, maxLength: 6 }),
      steps: fc.array(stepRecipeArb, { minLength: 1, maxLength: 3 }),
      // where a grow to a table boundary replaces a drawn step
      boundaries: fc.array(fc.option(boundaryGrowArb, { freq: 3 }), { minLength: 3, maxLength: 3 }),
      outputs: fc.array(fc.constantFrom('human' as const, 'human' as const, 'json' as const, 'quiet' as const), {
        minLength: 3,
        maxLength: 3,
      }),
    })
    .map((r): Case => {
      const { options, block, table } = r.layout;
      const fixed = options.subformat === 'fixed';
      const limit = fixed ? MAX_FIXED_SIZE : MAX_DYNAMIC_SIZE;
      // most images are small; the base stays below a quarter of the limit, so that steps can grow it
      const drawn = align(between(512, fixed ? 16 * MiB : 64 * MiB, r.sizeFraction), 512) || 512;
      const virtualSize = createdSize(format, options, drawn);
      const image: ImageSpec = { ...RAW_IMAGE, format, virtualSize, createdPreallocation: 'off', options };
      let current = virtualSize;
      const steps: ResizeStep[] = r.steps.map((recipe, i) => {
        const boundary = r.boundaries[i];
        const step =
          boundary && current < limit
            ? boundaryGrow(boundary, current, boundary.unit === 'block' ? block : table, limit)
            : materialiseStep(recipe, image, current);
        const withOutput = { ...step, output: r.outputs[i]! };
        const plan = planStep(withOutput, current, format);
        if (plan.accepted && plan.target !== null) current = sizeAfterStep(plan.target, format);
        return withOutput;
      });
      // data placed by the format's block: in the first, one in the middle, the last
      const shaped = { ...image, clusterSize: block };
      const middle = align(virtualSize / 2, 512);
      return { image, data: r.data.map((d) => materialiseData(d, shaped, middle)), steps };
    });
}

function boundaryGrow(b: { count: number; offset: number }, current: number, unit: number, limit: number): ResizeStep {
  const target = Math.min(limit, (Math.floor(current / unit) + b.count) * unit + b.offset);
  return { size: String(Math.max(target, current + 512)), shrink: false, preallocation: null };
}

/** The virtual size qemu-img gives an image created with `drawn` bytes: whole sectors, and for a
 * vpc without force_size the size of the CHS geometry that covers it (model/vpc.ts). */
function createdSize(format: ConvertedFormat, options: Record<string, string>, drawn: number): number {
  if (format === 'vpc' && options.force_size === 'off') return vpcCreatedSize(drawn, false);
  return drawn;
}

import fc from 'fast-check';
import type { DataOp, ImageSpec, OutputMode } from '../../model/case.ts';
import { DAMAGE_KINDS, REPAIR_TIERS, type Damage, type RepairStep } from './step.ts';

// repair steps and the damage they repair. A case with repair steps has its first one first, on
// the base image as built and then damaged (the damage is written after the build: data
// operations of kind 'damage'); a later repair meets what the first left. Every damage kind comes
// up as often, at the refcount width the image was drawn with, so that kind x width x tier can
// meet; where two damages are drawn, one case in four keeps the second.

export const repairStepRecipeArb = fc.record({ tier: fc.constantFrom(...REPAIR_TIERS) });
export type RepairStepRecipe = typeof repairStepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

export const materialiseRepair = (r: RepairStepRecipe, output: OutputMode): RepairStep => ({
  op: 'repair',
  tier: r.tier,
  output,
});

const damageArb = fc.record({
  op: fc.constant('damage' as const),
  kind: fc.constantFrom(...DAMAGE_KINDS),
  pick: fc.integer({ min: 0, max: 0xfffff }),
});

export const repairCaseRecipeArb = fc.record({
  damage: fc.array(damageArb, { minLength: 1, maxLength: 2 }),
  second: fc.integer({ min: 0, max: 3 }),
});
export type RepairCaseRecipe = typeof repairCaseRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** The image and data of a case with repair steps: what both tools can open without a key or a
 * second file (no encryption, no external data file) and clean before its damage (not dirty), its
 * data as drawn and then the damage. */
export function shapeForRepairs(
  drawn: ImageSpec,
  data: DataOp[],
  r: RepairCaseRecipe,
): { image: ImageSpec; data: DataOp[] } {
  const image: ImageSpec = { ...drawn, encrypted: false, dataFile: 'none', dirty: false };
  const damage: Damage[] = r.second === 0 ? r.damage : r.damage.slice(0, 1);
  return { image, data: [...data, ...damage] };
}

// Steps to sizes off the 512-byte grid: qemu-img refuses them on qcow2 (raw takes them), and a
// resizer that accepts one writes the odd size into the header. The generator makes them growing as
// often as shrinking, at every image size: at least 10 grows in any seed's first 250 qcow2 cases.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { caseAt } from '../../generators/cases.ts';
import { plannedSizes } from '../../model/plan.ts';

/** Off-grid grows and shrinks among a seed's first `n` qcow2 cases, and the image sizes they start from. */
function offGrid(seed: number, n: number) {
  const out = { grow: 0, shrink: 0, growFrom: [] as number[] };
  for (let i = 0; i < n; i++)
    for (const { before, plan } of plannedSizes(caseAt(seed, i, ['qcow2']))) {
      if (plan.target === null || plan.target <= 0 || plan.target % 512 === 0) continue;
      if (plan.target > before) {
        out.grow++;
        out.growFrom.push(before);
      } else out.shrink++;
    }
  return out;
}

test('off-grid grows are about as common as off-grid shrinks, in every seed', () => {
  for (const seed of [1, 2, 3, 7, 12, 20261207]) {
    const { grow, shrink } = offGrid(seed, 250);
    assert.ok(grow >= 10, `seed ${seed}: ${grow} off-grid grows`);
    assert.ok(grow >= shrink / 2 && shrink >= grow / 2, `seed ${seed}: ${grow} grows, ${shrink} shrinks`);
  }
});

test('off-grid grows start from small and large images alike', () => {
  const { growFrom } = offGrid(1, 250);
  assert.ok(growFrom.some((s) => s < 2 ** 20) && growFrom.some((s) => s > 64 * 2 ** 20), JSON.stringify(growFrom));
});

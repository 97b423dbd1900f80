// vhdx, vmdk and vpc base images as generators/converted.ts draws them: each builds with
// qemu-img, has the case's virtual size and the options it was made with, as qemu-img info
// reports them; and each subformat comes up.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import fc from 'fast-check';
import { CASE_ARBITRARIES } from '../generators/cases.ts';
import { CONVERTED_FORMATS, FORMAT_OPTIONS, parseCase } from '../model/case.ts';
import { buildBase } from './build-case.ts';
import { scratch } from './scratch.ts';

const dirs = scratch();

describe('generated vhdx, vmdk and vpc images', () => {
  for (const format of CONVERTED_FORMATS) {
    it(`${format}: build with the case's size and options, every subformat among them`, async () => {
      const cases = fc.sample(CASE_ARBITRARIES[format], { seed: 7, numRuns: 16 });
      const subformats = new Set(cases.map((c) => c.image.options!.subformat));
      assert.deepEqual([...subformats].sort(), [...(FORMAT_OPTIONS[format].subformat as string[])].sort());
      for (const c of cases) {
        assert.deepEqual(parseCase(JSON.parse(JSON.stringify(c))), c);
        const { image } = await buildBase(c, dirs.dir());
        const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-f', format, image])).stdout);
        const why = JSON.stringify(c.image);
        assert.equal(info['virtual-size'], c.image.virtualSize, why);
        const options = c.image.options!;
        if (format === 'vhdx') assert.equal(String(info['cluster-size']), options.block_size, why);
        if (format === 'vmdk') assert.equal(info['format-specific'].data['create-type'], options.subformat, why);
        // a fixed vpc has no blocks, a dynamic one 2 MiB blocks
        if (format === 'vpc')
          assert.equal(info['cluster-size'], options.subformat === 'fixed' ? undefined : 2 ** 21, why);
      }
    });
  }
});

// model/vpc.ts against the sizes qemu-img 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18, /usr/bin/qemu-img)
// gave, stored in testdata/vpc-sizes.json. Each entry was recorded by hand, for each requested size
// in bytes, with
//   qemu-img create -q -f vpc -o subformat=dynamic X.vpc <requested>                (forceSize false)
//   qemu-img create -q -f vpc -o subformat=dynamic,force_size=on X.vpc <requested>  (forceSize true)
// each followed by `qemu-img info --output=json X.vpc` and its "virtual-size" kept as virtualSize
// (a fixed image gives the same sizes with `-f vpc`). The sizes are small and odd sector counts, powers of two
// and the edges of the 17, 31, 63 and 255 sectors per track geometries, up to 64 GiB.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { vpcCreatedSize } from '../../model/vpc.ts';

interface Recorded {
  requested: number;
  forceSize: boolean;
  virtualSize: number;
}

const recorded = JSON.parse(
  readFileSync(new URL('../../testdata/vpc-sizes.json', import.meta.url), 'utf8'),
) as Recorded[];

test('the recording covers both force_size settings', () => {
  assert.ok(recorded.filter((r) => !r.forceSize).length >= 40);
  assert.ok(recorded.filter((r) => r.forceSize).length >= 40);
});

for (const r of recorded) {
  test(`dynamic${r.forceSize ? ',force_size=on' : ''} ${r.requested}`, () => {
    assert.equal(vpcCreatedSize(r.requested, r.forceSize), r.virtualSize);
  });
}

test('sizes qemu refuses or that are no sizes', () => {
  assert.throws(() => vpcCreatedSize(-1, false), RangeError);
  assert.throws(() => vpcCreatedSize(1.5, true), RangeError);
  assert.throws(() => vpcCreatedSize(2041 * 2 ** 30, false), RangeError);
  assert.throws(() => vpcCreatedSize(2041 * 2 ** 30, true), RangeError);
  assert.equal(vpcCreatedSize(2040 * 2 ** 30, false), 2040 * 2 ** 30);
});

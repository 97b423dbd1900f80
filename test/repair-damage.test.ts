// The damage writer on real images: every kind, at sub-byte and wide refcounts, leaves an image
// that qemu-img check finds damaged as the kind says; the bytes it records are the damage (written
// again on a fresh copy they give the same file).
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { file as tmpFile, dir as tmpDir } from 'tmp-promise';
import { applyPatches, damageImage } from '../operations/repair/damage.ts';
import { DAMAGE_KINDS, type DamageKind } from '../operations/repair/step.ts';

/** What qemu-img check says of each kind of damage: 2 corruptions, 3 leaks (a refcount of 2 under
 * an L2 entry flagged COPIED is a corruption too). */
const CHECK_EXIT: Record<DamageKind, number | number[]> = {
  leak: 3,
  'refcount-high': [2, 3],
  'refcount-low': 2,
  'refcount-zero': 2,
  'stale-copied': 2,
  overlap: 2,
  'reftable-entry-gone': 2,
};

async function built(dir: string, bits: number): Promise<string> {
  const image = join(dir, `base${bits}.qcow2`);
  await execa('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    `refcount_bits=${bits},cluster_size=4096`,
    image,
    '1M',
  ]);
  await execa('qemu-io', ['-c', 'write -q -P 1 0 64k', '-c', 'write -q -P 2 512k 8k', image]);
  return image;
}

describe('damage written by the harness', () => {
  for (const bits of [1, 4, 64])
    test(`every kind at ${bits}-bit refcounts`, async (t) => {
      const dir = await tmpDir({ unsafeCleanup: true });
      t.after(() => dir.cleanup());
      const base = await built(dir.path, bits);
      for (const kind of DAMAGE_KINDS) {
        const image = join(dir.path, `${kind}.qcow2`);
        await copyFile(base, image);
        const applied = await damageImage(image, { op: 'damage', kind, pick: 5 });
        // a 1-bit refcount has no room above 1: no place for the damage, nothing written
        if (kind === 'refcount-high' && bits === 1) {
          assert.equal(applied.hit, null);
          assert.deepEqual(applied.patches, []);
          continue;
        }
        assert.ok(applied.hit, `${kind}: no place found`);
        const check = await execa('qemu-img', ['check', image], { reject: false });
        const expected = [CHECK_EXIT[kind]].flat();
        assert.ok(expected.includes(check.exitCode!), `${kind} at ${bits} bits: ${applied.hit}\n${check.stderr}`);
        // the recorded bytes are the damage: repro.sh writes them on its own build
        const again = await tmpFile();
        await copyFile(base, again.path);
        await applyPatches(again.path, applied.patches);
        assert.ok((await readFile(again.path)).equals(await readFile(image)), `${kind}: patches differ`);
        await again.cleanup();
      }
    });
});

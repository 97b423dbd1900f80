import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { compareContent, windowsOf, type CompareContentOptions } from '../exec/content-compare.ts';
import { runCommand } from '../exec/process.ts';
import { scratch } from './scratch.ts';

// compareContent against `qemu-img compare` itself, on real images: the same exit code, the same
// stdout (verdict, size warning, first mismatch offset) and, for errors, the same stderr.

const s = scratch();
const run = (program: string, args: string[]) => runCommand(program, args, { timeoutMs: 60_000 });
const T = 2 ** 40;
const G = 2 ** 30;
const M = 2 ** 20;

/** Windows as the default picks them, and as many small windows as possible. */
const MODES: Record<string, Partial<CompareContentOptions>> = {
  default: {},
  'many windows': { plainUpTo: 0, mergeGap: 0, maxWindows: 1000 },
  'three windows': { plainUpTo: 0, mergeGap: 0, maxWindows: 3 },
};

async function expectSameAsQemu(a: string, b: string, modes = MODES) {
  const plain = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', a, b]);
  const results = [];
  for (const [name, extra] of Object.entries(modes)) {
    const r = await compareContent(a, b, { timeoutMs: 60_000, run, ...extra });
    const what = `${name}: ${JSON.stringify(r)} vs plain ${JSON.stringify(plain)}`;
    assert.equal(r.exitCode, plain.exitCode, what);
    assert.equal(r.stdout, plain.stdout, what);
    if (plain.exitCode !== 0 && plain.exitCode !== 1) assert.equal(r.stderr, plain.stderr, what);
    results.push(r);
  }
  return { plain, windowed: results[0]! };
}

const img = (size: string, io: string[], opts = 'cluster_size=65536') => s.image(opts, size, io);
const DATA = ['write -P 7 0 2M', 'write -P 9 8M 1M', `write -P 3 ${T - M} 64k`];

describe('compareContent gives the verdicts and offsets of qemu-img compare', () => {
  it('equal images, data at both ends of 1 TiB', async () => {
    const { windowed } = await expectSameAsQemu(await img('1T', DATA), await img('1T', DATA));
    assert.equal(windowed.stdout, 'Images are identical.\n');
    assert.equal(windowed.method, 'windows');
    assert.equal(windowed.processes, 2, 'one window at each end');
  });
  it('a difference inside data both sides hold', async () => {
    const { windowed } = await expectSameAsQemu(
      await img('1T', DATA),
      await img('1T', [...DATA, `write -P 5 ${9 * M + 4608} 512`]),
    );
    assert.equal(windowed.stdout, `Content mismatch at offset ${9 * M + 4608}!\n`);
  });
  it('data where only one side is allocated, before and after other data', async () => {
    const a = await img('1T', DATA);
    await expectSameAsQemu(a, await img('1T', [...DATA, `write -P 1 ${512 * G + 1536} 4k`]));
    await expectSameAsQemu(await img('1T', [...DATA, `write -P 1 ${512 * G} 64k`]), a);
    // allocated zeros, and zero clusters, against unallocated space read the same
    const { windowed } = await expectSameAsQemu(
      a,
      await img('1T', [...DATA, `write -P 0 ${600 * G} 64k`, `write -z ${700 * G} 1M`]),
    );
    assert.equal(windowed.exitCode, 0);
    // a zero cluster over data on one side only
    await expectSameAsQemu(a, await img('1T', [...DATA, 'write -z 64k 64k']));
  });
  it('images of different sizes: zero tail, data in the tail, and a difference before it', async () => {
    const a = await img('1T', DATA);
    const { windowed } = await expectSameAsQemu(a, await img('1025G', DATA));
    assert.equal(windowed.stdout, 'Warning: Image size mismatch!\nImages are identical.\n');
    await expectSameAsQemu(a, await img('1025G', [...DATA, `write -P 2 ${T + 3 * M} 512`]));
    await expectSameAsQemu(await img('1025G', [...DATA, `write -P 2 ${T + 3 * M} 512`]), a);
    await expectSameAsQemu(await img('1025G', [...DATA, `write -P 2 ${T + 3 * M} 512`, `write -P 4 ${2 * G} 4k`]), a);
    await expectSameAsQemu(await img('100M', ['write -P 1 0 1M']), await img('1T', ['write -P 1 0 1M']));
    await expectSameAsQemu(
      await img('100M', ['write -P 1 0 1M']),
      await img('1T', ['write -P 1 0 1M', `write -P 1 ${T - 512} 512`]),
    );
  });
  it('extended L2 subclusters, compressed clusters, 512-byte clusters and compat 0.10', async () => {
    const ext = 'cluster_size=65536,extended_l2=on';
    await expectSameAsQemu(
      await img('4G', ['write -P 1 0 4k', `write -P 2 ${3 * G} 8k`], ext),
      await img('4G', ['write -P 1 0 4k', `write -P 2 ${3 * G} 8k`, `write -P 3 ${3 * G + 8192} 2k`], ext),
    );
    await expectSameAsQemu(
      await img('4G', ['write -P 1 0 4k', `write -z ${2 * G} 64k`], ext),
      await img('4G', ['write -P 1 0 4k'], ext),
    );
    await expectSameAsQemu(
      await img('2G', ['write -c -P 4 0 64k', `write -c -P 5 ${G} 64k`]),
      await img('2G', ['write -P 4 0 64k', `write -P 6 ${G} 64k`]),
    );
    await expectSameAsQemu(
      await img('256M', ['write -P 1 1536 512', `write -P 2 ${200 * M + 512} 1k`], 'cluster_size=512'),
      await img('256M', ['write -P 1 1536 512', `write -P 2 ${200 * M + 1024} 512`], 'cluster_size=512'),
    );
    await expectSameAsQemu(
      await img('3G', ['write -P 1 0 64k', `write -P 8 ${2 * G} 64k`], 'compat=0.10'),
      await img('3G', ['write -P 1 0 64k'], 'compat=0.10'),
    );
  });
  it('errors: a missing image, and a file that is not qcow2', async () => {
    const a = await img('1T', DATA);
    await expectSameAsQemu(a, s.path('missing.qcow2'));
    const junk = s.path('junk.qcow2');
    await writeFile(junk, Buffer.alloc(1 << 20, 0x5a));
    await expectSameAsQemu(junk, a);
  });
  it('random pairs agree with qemu-img compare', async () => {
    let x = 12345;
    const rnd = (n: number) => {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      return Math.floor((x / 2 ** 31) * n);
    };
    const sizes = [80 * M, 3 * G, T];
    for (let k = 0; k < 12; k++) {
      const size = sizes[rnd(sizes.length)]!;
      const cluster = size === T ? 65536 : [4096, 65536, 2 * M][rnd(3)]!;
      const ops = Array.from({ length: 1 + rnd(4) }, () => {
        const len = 512 * (1 + rnd(300));
        return `write -P ${1 + rnd(3)} ${512 * rnd((size - len) / 512)} ${len}`;
      });
      const tweak = Array.from(
        { length: rnd(3) },
        () => `write -P ${rnd(3)} ${512 * rnd(size / 512 - 8)} ${512 * (1 + rnd(8))}`,
      );
      const opts = `cluster_size=${cluster}`;
      await expectSameAsQemu(
        await img(String(size), ops, opts),
        await img(String(size + (rnd(4) === 0 ? 512 * rnd(4096) : 0)), [...ops, ...tweak], opts),
      );
    }
  });
});

describe('compareContent costs', () => {
  it('one plain compare for small images, one window for data at the start of 1 TiB', async () => {
    const small = await compareContent(await img('16M', ['write -P 1 0 1M']), await img('16M', ['write -P 1 0 1M']), {
      timeoutMs: 60_000,
      run,
    });
    assert.deepEqual([small.method, small.processes, small.exitCode], ['plain', 1, 0]);
    const big = await compareContent(await img('1T', ['write -P 1 0 1M']), await img('1T', ['write -P 1 0 1M']), {
      timeoutMs: 60_000,
      run,
    });
    assert.deepEqual([big.method, big.processes, big.exitCode], ['windows', 1, 0]);
    assert.deepEqual(big.windows, [[0, M]]);
  });
  it('merges windows across small gaps and caps their number', () => {
    const r = (a: number, b: number): [number, number] => [a, b];
    assert.deepEqual(windowsOf([r(0, 10)], [r(20, 30)], 1000, 100), [[0, 512]]);
    assert.deepEqual(windowsOf([r(0, 512), r(10_000, 10_240)], [], 20_000, 100), [
      [0, 512],
      [9728, 10_240],
    ]);
    assert.deepEqual(windowsOf([r(0, 512), r(1024, 1536), r(8192, 8704)], [r(4096, 4608)], 20_000, 0, 2), [
      [0, 4608],
      [8192, 8704],
    ]);
    assert.deepEqual(windowsOf([], [], 1 << 30), [[0, 512]]);
  });
});

describe('compareContent runs only qemu-img', () => {
  it('passes hostile file names safely', async () => {
    const weird = s.path("we,ird $x 'q'.qcow2");
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', weird, '1T']);
    await expectSameAsQemu(weird, await img('1T', []));
  });
});

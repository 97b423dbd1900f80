// Backing images and external data files: the qemu-img 7.2 behaviour the case layout relies on
// (model/layout.ts caseLayout), generated base images of every kind building clean, and whole cases
// running through exec/run-case.ts in that layout with qemu-img on both sides.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import fc from 'fast-check';
import { gunzipSync } from 'node:zlib';
import { type Case, type ResizeStep } from '../model/case.ts';
import { BACKING, DATA_FILE, backingFileOf, caseLayout } from '../model/layout.ts';
import { runCase } from '../exec/run-case.ts';
import { workDirsRemoved } from '../exec/work-dir.ts';
import { structuralCheck } from '../qcow2/structure.ts';
import { qemuImg } from '../model/commands.ts';
import { caseArb } from '../generators/cases.ts';
import { structureOracle } from '../oracles/structure.ts';
import { buildBase } from './build-case.ts';
import { scratch } from './scratch.ts';

const dirs = scratch();
const MiB = 2 ** 20;
const qemu = (program: string, args: string[], cwd?: string) => execa(program, args, { cwd, reject: false });
const sha = async (file: string) =>
  createHash('sha256')
    .update(await readFile(file))
    .digest('hex');

describe('qemu-img 7.2 and the files an image names', () => {
  const resolves = 'resolves a relative backing name against the image, ';
  it(`${resolves}a relative data file name against the working directory`, async () => {
    const root = dirs.dir();
    const a = join(root, 'resolve');
    await mkdir(a);
    assert.equal((await qemu('qemu-img', ['create', '-q', '-f', 'qcow2', BACKING, '1M'], a)).exitCode, 0);
    assert.equal(
      (
        await qemu(
          'qemu-img',
          [
            'create',
            '-q',
            '-f',
            'qcow2',
            '-b',
            BACKING,
            '-F',
            'qcow2',
            '-o',
            `data_file=${DATA_FILE}`,
            'img.qcow2',
            '2M',
          ],
          a,
        )
      ).exitCode,
      0,
    );
    // from the image's own directory both resolve
    assert.equal((await qemu('qemu-img', ['check', '-q', 'img.qcow2'], a)).exitCode, 0);
    // from elsewhere the backing image still resolves, the data file does not
    const elsewhere = await qemu('qemu-img', ['check', '-q', join(a, 'img.qcow2')], root);
    assert.notEqual(elsewhere.exitCode, 0);
    assert.match(elsewhere.stderr, new RegExp(`Could not open '${DATA_FILE}'`));
    // unless it is named explicitly, as compareArgs does
    const opts = `driver=qcow2,file.filename=${join(a, 'img.qcow2')},data-file.filename=${join(a, DATA_FILE)}`;
    assert.equal((await qemu('qemu-img', ['compare', '--image-opts', opts, opts], root)).exitCode, 0);
  });

  it('writes the data file on a resize (so each side needs its own) but never the backing image', async () => {
    const a = join(dirs.dir(), 'writes');
    await mkdir(a);
    await qemu('qemu-img', ['create', '-q', '-f', 'qcow2', BACKING, '8M'], a);
    await qemu('qemu-io', ['-f', 'qcow2', '-c', 'write -P 5 0 8M', BACKING], a);
    await qemu(
      'qemu-img',
      [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-b',
        BACKING,
        '-F',
        'qcow2',
        '-o',
        `data_file=${DATA_FILE},lazy_refcounts=on`,
        'img.qcow2',
        '4M',
      ],
      a,
    );
    const backing = await sha(join(a, BACKING));
    for (const [program, args] of [
      ['qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 1M 64k', 'img.qcow2']],
      ['qemu-img', ['resize', '-f', 'qcow2', 'img.qcow2', '6M']],
      ['qemu-img', ['resize', '-f', 'qcow2', '--shrink', 'img.qcow2', '3M']],
      ['qemu-img', ['check', 'img.qcow2']],
      ['qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', 'img.qcow2', 'img.qcow2']],
      [
        'qemu-io',
        [
          '-f',
          'qcow2',
          '-c',
          'write -P 8 0 64k',
          '-c',
          'discard 0 64k',
          '-c',
          'truncate 7M',
          '-c',
          'write -P 9 6M 512',
          'img.qcow2',
        ],
      ],
    ] as const) {
      assert.equal((await qemu(program, [...args], a)).exitCode, 0, `${program} ${args.join(' ')}`);
    }
    assert.equal(await sha(join(a, BACKING)), backing, 'the backing image was written');
    // the data file follows the virtual size: truncated on the shrink, extended again
    assert.equal((await stat(join(a, DATA_FILE))).size, 7 * MiB);
  });

  const refuses = 'refuses to grow a v2 image over a longer backing image, ';
  it(`${refuses}after changing the file (registered as qemu behaviour)`, async () => {
    const a = join(dirs.dir(), 'v2');
    await mkdir(a);
    await qemu('qemu-img', ['create', '-q', '-f', 'qcow2', BACKING, '8M'], a);
    await qemu(
      'qemu-img',
      [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-o',
        'compat=0.10,cluster_size=512',
        '-b',
        BACKING,
        '-F',
        'qcow2',
        'img.qcow2',
        '1M',
      ],
      a,
    );
    const before = await sha(join(a, 'img.qcow2'));
    const r = await qemu('qemu-img', ['resize', '-f', 'qcow2', 'img.qcow2', '6M'], a);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /Failed to zero out new clusters/);
    assert.notEqual(await sha(join(a, 'img.qcow2')), before);
  });
});

/** The first `n` cases of a seeded sample that `want` picks. */
function pick(want: (c: Case) => boolean, n: number, seed = 31): Case[] {
  return fc.sample(caseArb, { seed, numRuns: 3000 }).filter(want).slice(0, n);
}
const KINDS: [string, (c: Case) => boolean][] = [
  ['a shorter backing image', (c) => c.image.backing !== null && c.image.backing.virtualSize < c.image.virtualSize],
  ['a longer backing image', (c) => c.image.backing !== null && c.image.backing.virtualSize > c.image.virtualSize],
  ['data_file', (c) => c.image.dataFile === 'data_file'],
  ['data_file with data_file_raw', (c) => c.image.dataFile === 'data_file_raw'],
  ['a backing image and a data file', (c) => c.image.backing !== null && c.image.dataFile !== 'none'],
  ['a raw backing image', (c) => c.image.backing?.format === 'raw'],
];

describe('generated base images with backing images and data files', () => {
  for (const [what, want] of KINDS) {
    it(`build clean with ${what}; the qcow2 reader agrees with qemu-img check`, async () => {
      const cases = pick((c) => want(c) && !c.image.dirty, 4);
      assert.equal(cases.length, 4);
      let throughBacking = 0;
      for (const c of cases) {
        const { image, cwd } = await buildBase(c, dirs.dir());
        const check = await qemu('qemu-img', ['check', '-f', 'qcow2', '--output=json', image], cwd);
        assert.equal(check.exitCode, 0, `${check.stdout} ${check.stderr} ${JSON.stringify(c)}`);
        const o = await structuralCheck(image);
        assert.ok(o.readable);
        assert.equal(
          o.allocatedClusters,
          (JSON.parse(check.stdout) as { 'allocated-clusters'?: number })['allocated-clusters'] ?? 0,
        );
        assert.deepEqual(structureOracle(o, o), []);
        if (c.image.dataFile !== 'none') {
          // as long as the virtual disk, or up to the end of the last cluster written into it
          const length = (await stat(join(cwd, DATA_FILE))).size;
          assert.ok(
            length >= c.image.virtualSize &&
              length <= Math.ceil(c.image.virtualSize / c.image.clusterSize) * c.image.clusterSize,
            `${length}`,
          );
        }
        if (c.image.backing) {
          assert.equal(o.backingFile, backingFileOf(c));
          // content through the backing image: qemu-img map shows ranges read from it
          const map = JSON.parse(
            (await qemu('qemu-img', ['map', '-f', 'qcow2', '--output=json', image], cwd)).stdout,
          ) as { depth: number; data: boolean }[];
          if (map.some((e) => e.depth === 1 && e.data)) throughBacking++;
        }
      }
      if (cases[0]!.image.backing) assert.ok(throughBacking > 0, 'data reads through the backing image');
    });
  }
});

describe('whole cases in the layout, qemu-img on both sides', () => {
  for (const [what, want] of KINDS.filter(([w]) => w !== 'a backing image and a data file')) {
    it(`${what}: no finding; the report keeps every file`, async () => {
      // no preallocated grows: the images stay small enough to be kept
      // not dirty, no bitmaps: qemu-img repairs a dirty image and stores bitmaps again even when it
      // refuses (registered findings of their own)
      const plain = (x: Case) => want(x) && !x.image.dirty && x.image.bitmaps === 0 && x.steps.length >= 2;
      const [c] = pick((x) => plain(x) && x.steps.every((s) => (s as ResizeStep).preallocation === null), 1, 41);
      assert.ok(c);
      const workdir = await mkdtemp(join(dirs.dir(), 'work-'));
      const result = await runCase(c, { subject: qemuImg, timeoutMs: 60_000, workdir, wantArtifacts: () => true });
      assert.deepEqual(result.findings, [], JSON.stringify(c));
      // the case directory is removed in the background, and gone once workDirsRemoved says so
      await workDirsRemoved();
      assert.deepEqual(await readdir(workdir), []);
      const layout = caseLayout(c);
      const names = result.artifacts.map((a) => a.name).sort();
      const expected = ['base.qcow2.gz', 'reference.qcow2.gz', 'subject.qcow2.gz'];
      expected.push(...layout.chain.map((f) => `${f}.gz`));
      if (layout.dataFile) expected.push(...['base', 'reference', 'subject'].map((s) => `${s}.${DATA_FILE}.gz`));
      assert.deepEqual(names, expected.sort());
      assert.deepEqual(result.artifactsSkipped, []);
      const image = gunzipSync(result.artifacts.find((a) => a.name === 'base.qcow2.gz')!.data);
      assert.equal(image.readUInt32BE(0), 0x514649fb);
      // every command on one side ran on that side's files
      for (const r of result.commands) assert.ok(!r.argv.some((w) => w.includes('..')), r.argv.join(' '));
    });
  }
});

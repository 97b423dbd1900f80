import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { planComparison } from '../exec/content-compare.ts';
import { contentHash } from '../exec/files.ts';
import { hasHostClustersFrom } from '../qcow2/reader.ts';
import { structuralCheck } from '../qcow2/structure.ts';
import { reader, startReaders } from '../exec/readers.ts';
import { ROOT } from './helpers.ts';
import { scratch } from './scratch.ts';

// The harness's in-process reading runs on reader threads (harness/readers.ts). A thread must
// answer exactly what the function answers in-process, pass errors on with their codes, answer
// in the order asked, and never keep a finished harness alive.

const s = scratch();
const G = 2 ** 30;

describe('reader threads', () => {
  it('answer what each reading function answers in-process', async () => {
    const small = await s.image('cluster_size=4096,refcount_bits=1', '16M', ['write -P 7 0 1M', 'write -P 9 9M 64k']);
    const spread = await s.image('', '2G', ['write -P 1 0 64k', 'write -P 2 1536M 1M']);
    const other = await s.image('', '2G', ['write -P 1 0 64k']);
    assert.equal(await reader.contentHash(small, spread), await contentHash(small, spread));
    assert.equal(await reader.contentHash(s.path('missing.qcow2')), await contentHash(s.path('missing.qcow2')));
    for (const image of [small, spread, s.path('absent.qcow2')])
      assert.deepEqual(await reader.structuralCheck(image), await structuralCheck(image));
    for (const at of [0, G, 1536 * 2 ** 20, 2 * G])
      assert.equal(await reader.hasHostClustersFrom(spread, at), await hasHostClustersFrom(spread, at));
    const opts = { cwd: dirname(spread) };
    const plan = await reader.planComparison(basename(spread), basename(other), opts);
    assert.equal(plan.kind, 'windows');
    assert.deepEqual(plan, await planComparison(basename(spread), basename(other), opts));
  });

  it('pass errors on with their code', async () => {
    const dir = s.path('a-directory');
    await mkdir(dir);
    await assert.rejects(
      reader.contentHash(dir),
      (err: NodeJS.ErrnoException) => err.code === 'EISDIR' && /EISDIR/.test(err.message),
    );
    await assert.rejects(
      reader.hasHostClustersFrom(s.path('gone.qcow2'), 0),
      (err: NodeJS.ErrnoException) => err.code === 'ENOENT',
    );
  });

  it('answer in the order asked: a case asks first for what it needs first', async () => {
    startReaders(1);
    const big = s.path('big.raw');
    await writeFile(big, Buffer.alloc(64 * 2 ** 20, 1));
    const tiny = await s.image('', '1M');
    const order: string[] = [];
    await Promise.all([
      reader.contentHash(big).then(() => order.push('big')),
      reader.contentHash(tiny).then(() => order.push('tiny')),
    ]);
    assert.deepEqual(order, ['big', 'tiny']);
  });

  it('do not keep a process alive once its work is done', async () => {
    const readers = JSON.stringify(new URL('../exec/readers.ts', import.meta.url).href);
    const script = `import { reader, startReaders } from ${readers};
startReaders(2);
console.log((await reader.contentHash('/etc/hostname')).length);`;
    const r = await execa(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: ROOT,
      timeout: 30_000,
      reject: false,
    });
    assert.equal(r.timedOut, false, 'the process did not exit: a reader thread held it open');
    assert.equal(r.stdout.trim(), '64', r.stderr);
  });
});

import assert from 'node:assert/strict';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { contentHash, copySparse, provenUnchanged, stampOf, TICK_MARGIN_MS } from '../exec/files.ts';
import { scratch } from './scratch.ts';

// The unchanged-on-refusal oracle rests on these: the hash sees every byte, holes and written
// zeros alike; and a stamp proves a file unwritten only when no write can hide in a timestamp tick.

const s = scratch();
const MiB = 2 ** 20;

/** A 4 MiB file with `data` at 1 MiB; the rest a hole, or written zeros. */
async function file(data: Buffer, holes: boolean): Promise<string> {
  const path = s.path();
  if (holes) {
    const fd = await open(path, 'w');
    await fd.truncate(4 * MiB);
    await fd.write(data, 0, data.length, MiB);
    await fd.close();
  } else {
    const bytes = Buffer.alloc(4 * MiB);
    data.copy(bytes, MiB);
    await writeFile(path, bytes);
  }
  return path;
}

describe('contentHash and copySparse', () => {
  it('hash content, not layout: holes and written zeros agree, one changed byte does not', async () => {
    const data = Buffer.from('qcow2 data');
    const sparse = await file(data, true);
    assert.equal(await contentHash(sparse), await contentHash(await file(data, false)));
    assert.notEqual(await contentHash(sparse), await contentHash(await file(Buffer.from('qcow2 dat!'), true)));
    // a zero block that is short (the file's end) still counts its length
    await writeFile(s.path('short-a'), Buffer.alloc(100));
    await writeFile(s.path('short-b'), Buffer.alloc(101));
    assert.notEqual(await contentHash(s.path('short-a')), await contentHash(s.path('short-b')));
    assert.notEqual(await contentHash(sparse), await contentHash(s.path('missing')));
  });

  it('copy every byte to each destination and keep the holes', async () => {
    const from = await file(Buffer.alloc(70_000, 5), true);
    const to = [s.path(), s.path()];
    await copySparse(from, to);
    for (const copy of to) {
      assert.ok((await readFile(copy)).equals(await readFile(from)));
      assert.ok((await stat(copy)).blocks * 512 < MiB, 'the copy is sparse');
    }
  });
});

describe('stamps', () => {
  it('prove a file unwritten once its last change is a margin old', async () => {
    const path = await file(Buffer.from('x'), true);
    await sleep(TICK_MARGIN_MS + 10);
    const before = await stampOf([path]);
    assert.equal(provenUnchanged(before, await stampOf([path])), true);
  });

  it('do not prove it when it was written, even with its size and mtime as they were', async () => {
    const path = await file(Buffer.from('x'), true);
    const times = s.path('times');
    await execa('touch', ['-r', path, times]); // keeps the mtime to the nanosecond
    await sleep(TICK_MARGIN_MS + 10);
    const before = await stampOf([path]);
    const fd = await open(path, 'r+');
    await fd.write(Buffer.from('y'), 0, 1, MiB);
    await fd.close();
    await execa('touch', ['-m', '-r', times, path]);
    assert.equal((await stat(path, { bigint: true })).mtimeNs, (await stat(times, { bigint: true })).mtimeNs);
    assert.equal(provenUnchanged(before, await stampOf([path])), false);
  });

  it('do not prove it when the last change was too recent to tell a later write apart', async () => {
    const path = await file(Buffer.from('x'), true);
    const before = await stampOf([path]);
    assert.equal(provenUnchanged(before, await stampOf([path])), false);
  });

  it('tell a missing file from a present one', async () => {
    const path = await file(Buffer.from('x'), true);
    await sleep(TICK_MARGIN_MS + 10);
    const before = await stampOf([path, s.path('absent')]);
    assert.equal(provenUnchanged(before, await stampOf([path, s.path('absent')])), true);
    assert.equal(provenUnchanged(before, await stampOf([path])), false);
  });
});

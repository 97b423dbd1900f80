import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import fc from 'fast-check';
import { structuralCheck } from '../qcow2/structure.ts';
import { caseArb, caseAt } from '../generators/cases.ts';
import type { Case } from '../model/case.ts';
import { infoFromStructure, parseInfo } from '../oracles/info.ts';
import { buildBase } from './build-case.ts';
import { scratch } from './scratch.ts';

// The info oracle reads its fields from the qcow2 header instead of running `qemu-img info`; the
// two must agree on every kind of image the harness meets.

const images = scratch();

/** `cwd`: where qemu-img must run to find a relative data file name (see caseLayout). */
async function bothViews(file: string, cwd?: string) {
  const r = await execa('qemu-img', ['info', '-f', 'qcow2', '--output=json', file], { reject: false, cwd });
  return {
    qemu: parseInfo(r.exitCode ?? null, r.stdout, r.stderr),
    reader: infoFromStructure(await structuralCheck(file)),
  };
}

describe('info fields from the header', () => {
  it('equal qemu-img info on generated base images', async () => {
    const cases = fc.sample(caseArb, { seed: 21, numRuns: 40 });
    // backing images and both kinds of external data file are among them
    assert.ok(
      cases.some((c) => c.image.backing) &&
        cases.some((c) => c.image.dataFile === 'data_file') &&
        cases.some((c) => c.image.dataFile === 'data_file_raw'),
    );
    for (const c of cases) {
      const { image, cwd } = await buildBase(c, images.dir());
      const { qemu, reader } = await bothViews(image, cwd);
      assert.deepEqual(reader, qemu, JSON.stringify(c.image));
    }
  });
  it('equal qemu-img info on zstd, dirty and corrupt images', async () => {
    const zstd = await images.image('compression_type=zstd,extended_l2=on', '1M');
    const dirty = await images.image('lazy_refcounts=on', '1M');
    const corrupt = await images.image('', '1M');
    const setBit = async (file: string, bit: number) => {
      const fh = await open(file, 'r+');
      const b = Buffer.alloc(8);
      await fh.read(b, 0, 8, 72);
      b.writeBigUInt64BE(b.readBigUInt64BE(0) | (1n << BigInt(bit)));
      await fh.write(b, 0, 8, 72);
      await fh.close();
    };
    await setBit(dirty, 0);
    await setBit(corrupt, 1);
    for (const file of [zstd, dirty, corrupt]) {
      const { qemu, reader } = await bothViews(file);
      assert.deepEqual(reader, qemu, file);
    }
  });
  it('equal qemu-img info on encrypted and preallocated images and over a raw backing image', async () => {
    const find = (p: (c: Case) => boolean) => {
      for (let i = 0; ; i++) if (p(caseAt(1, i))) return caseAt(1, i);
    };
    const cases = [
      find((c) => c.image.encrypted),
      find((c) => c.image.createdPreallocation === 'falloc'),
      find((c) => c.image.backing?.format === 'raw'),
    ];
    const formats: unknown[] = [];
    for (const c of cases) {
      const { image, cwd } = await buildBase(c, images.dir());
      const { qemu, reader } = await bothViews(image, cwd);
      assert.ok(qemu.ok, JSON.stringify(qemu));
      assert.deepEqual(reader, qemu, JSON.stringify(c.image));
      formats.push(qemu.fields['encrypt-format']);
    }
    assert.deepEqual(formats, ['luks', undefined, undefined]);
  });
  it('fail where qemu-img info fails', async () => {
    const empty = images.path('empty.qcow2');
    await execa('truncate', ['-s', '0', empty]);
    const { qemu, reader } = await bothViews(empty);
    assert.equal(qemu.ok, false);
    assert.equal(reader.ok, false);
  });
});

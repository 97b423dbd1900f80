// The structure oracle and infoFromStructure on small recorded images (testdata/images): built by
// qemu-img and qemu-io, resized by the test doubles, damaged with qcow2/edit.ts.
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { infoFromStructure, parseInfo } from '../../oracles/info.ts';
import {
  caseFiles,
  judged,
  kindsOf,
  observeImages,
  readCase,
  TESTDATA,
  UPDATE_HINT,
  type FindingView,
  type ImagesInput,
} from './testdata.ts';

const files = await caseFiles('images');

describe('testdata/images: stored expectations are what the images give', () => {
  for (const file of files) {
    test(file, async () => {
      const { stored, computed } = await judged('images', file);
      assert.deepEqual(computed, stored, `${file}: ${UPDATE_HINT}`);
    });
  }
});

describe('infoFromStructure reads the header as qemu-img info reports it', () => {
  for (const file of files) {
    test(file, async (t) => {
      const { input } = await readCase<ImagesInput>(file);
      const { subject } = await observeImages(input, join(TESTDATA, file));
      const info = input.info && parseInfo(input.info.exitCode, input.info.stdout, input.info.stderr);
      // qemu-img info refuses some damaged headers that the reader still reads
      if (!info?.ok || !subject.readable) return t.skip('qemu-img info or the reader cannot read it');
      assert.deepEqual(infoFromStructure(subject), info);
    });
  }
});

type Digest = { readable: boolean; refcountsChecked?: boolean; mismatchCounts?: Record<string, number> };
type Expected = { subject: Digest; reference: Digest | null; findings: FindingView[] };
const images = (name: string) => judged<ImagesInput, Expected>('images', `images/${name}.json`);

describe('structure oracle', () => {
  test("is silent on what qemu builds and on qemu's and the faithful double's resizes", async () => {
    for (const name of ['qemu-built', 'snapshots', 'bitmaps', 'extended-l2-subclusters', 'zstd-lazy-refcounts']) {
      assert.deepEqual(kindsOf((await images(name)).computed), [], name);
    }
    for (const name of ['faithful-shrink', 'v2-grow', 'used-clean'])
      assert.deepEqual(kindsOf((await images(name)).computed), [], name);
  });
  test('does not judge the refcounts of a dirty image', async () => {
    const { computed } = await images('dirty');
    assert.equal(computed.subject.refcountsChecked, false);
    assert.deepEqual(computed.findings, []);
  });
  test('tells undercounted, overcounted and leaked clusters apart', async () => {
    const counts = async (name: string) => (await images(name)).computed.subject.mismatchCounts;
    assert.deepEqual(await counts('undercounted'), { undercounted: 1, overcounted: 0, leaked: 0 });
    assert.deepEqual(await counts('overcounted'), { undercounted: 0, overcounted: 1, leaked: 0 });
    assert.deepEqual(await counts('leak-on-shrink'), { undercounted: 0, overcounted: 0, leaked: 1 });
  });
  test('names #365 by the garbled refcount blocks, whatever the sub-byte width', async () => {
    const signatures = await Promise.all(
      [1, 2, 4].map(async (bits) => (await images(`365-stride-${bits}bit`)).computed.findings[0]!.signature),
    );
    assert.deepEqual(
      new Set(signatures),
      new Set(['structure/refcount-mismatch/subject/refcount-blocks-garbled:sub-byte']),
    );
  });
  test("reports damage in qemu's result on the reference side", async () => {
    const { computed } = await images('reference-undercounted');
    assert.ok(computed.findings.length > 0);
    assert.ok(computed.findings.every((f) => f.side === 'reference'));
  });
  test('reports a missing or emptied image as unreadable, not as damage', async () => {
    assert.deepEqual(kindsOf((await images('deleted')).computed), ['structure/unreadable/subject']);
    assert.deepEqual((await images('deleted')).computed.subject, { readable: false, reason: 'missing' });
    assert.deepEqual((await images('truncated-to-zero')).computed.subject, { readable: false, reason: 'not-qcow2' });
  });
});

test('the images stay small: each below 16 KiB gzipped, all below 1 MiB', async () => {
  const dir = join(TESTDATA, 'images');
  const sizes = await Promise.all(
    (await readdir(dir))
      .filter((n) => n.endsWith('.gz'))
      .map(async (n) => [n, (await stat(join(dir, n))).size] as const),
  );
  assert.ok(sizes.length > 0);
  assert.deepEqual(
    sizes.filter(([, size]) => size > 16 * 1024),
    [],
  );
  assert.ok(sizes.reduce((sum, [, size]) => sum + size, 0) < 2 ** 20);
});

test('every gzipped image belongs to a case', async () => {
  const named = new Set<string>();
  for (const file of files) {
    const { input } = await readCase<ImagesInput>(file);
    for (const name of [input.subject, input.reference, input.before]) if (name) named.add(name);
  }
  const stored = (await readdir(join(TESTDATA, 'images'))).filter((n) => n.endsWith('.gz'));
  assert.deepEqual(
    stored.filter((n) => !named.has(n)),
    [],
  );
});

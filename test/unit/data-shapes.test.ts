// The data shapes the coverage table counts (triage/coverage.ts dataShapes): each has a case of
// its own, and seed 1's first 250 cases reach every one of them, a few percent each.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { caseAt } from '../../generators/cases.ts';
import type { Case, DataOp } from '../../model/case.ts';
import { dataShapes } from '../../triage/coverage.ts';

const MiB = 2 ** 20;
const caseOf = (data: DataOp[], image: Partial<Case['image']> = {}, size = '4M'): Case => ({
  image: {
    format: 'qcow2',
    virtualSize: 16 * MiB,
    clusterSize: 65536,
    refcountBits: 16,
    compat: '1.1',
    lazyRefcounts: false,
    extendedL2: false,
    compressionType: 'zlib',
    createdWithRefcountBits: null,
    bitmaps: 0,
    dirty: false,
    backing: null,
    dataFile: 'none',
    createdPreallocation: 'off',
    encrypted: false,
    ...image,
  },
  data,
  steps: [{ size, shrink: true, preallocation: null }],
});
const shapes = (c: Case) =>
  Object.entries(dataShapes(c))
    .filter(([, v]) => v)
    .map(([k]) => k);

test('each shape from a case made for it', () => {
  assert.deepEqual(shapes(caseOf([{ op: 'zero', offset: 8 * MiB, length: 65536 }])), ['zeroFlagDiscarded']);
  assert.deepEqual(shapes(caseOf([{ op: 'zero', offset: 8 * MiB, length: 65536 }], { compat: '0.10' })), []);
  const compress = (offset: number): DataOp => ({ op: 'compress', offset, length: 65536, pattern: 3 });
  assert.deepEqual(shapes(caseOf([compress(0), compress(8 * MiB)])), ['compressedAcrossNewEnd']);
  assert.deepEqual(shapes(caseOf([compress(8 * MiB)])), []);
  const write: DataOp = { op: 'write', offset: 8 * MiB, length: 4096, pattern: 1 };
  assert.deepEqual(shapes(caseOf([write, { op: 'snapshot-create', name: 's0' }])), ['snapshotSharedPastEnd']);
  assert.deepEqual(shapes(caseOf([{ op: 'snapshot-create', name: 's0' }, write])), []);
  // 512-byte clusters: one L1 cluster maps 64 L2 tables of 32 KiB, 2 MiB
  const far: DataOp = { op: 'write', offset: 3 * MiB, length: 512, pattern: 1 };
  assert.deepEqual(shapes(caseOf([far], { clusterSize: 512, virtualSize: 4 * MiB }, '8M')), ['multiClusterL1']);
});

test("seed 1's first 250 cases reach every shape", () => {
  const counts: Record<string, number> = {};
  for (let i = 0; i < 250; i++) for (const k of shapes(caseAt(1, i))) counts[k] = (counts[k] ?? 0) + 1;
  for (const shape of Object.keys(dataShapes(caseAt(1, 0))))
    assert.ok((counts[shape] ?? 0) >= 5, `${shape}: ${counts[shape] ?? 0} of 250 cases`);
});

test('the snapshots a case is built with fit in its refcounts, at creation and after an amend', () => {
  // a cluster every snapshot shares is counted once by the image and once by each snapshot
  const ops = ['resize', 'amend', 'snapshot'] as const;
  let sixteen = 0;
  for (const seed of [1, 6, 11])
    for (let i = 0; i < 400; i++) {
      const { image, data } = caseAt(seed, i, ['qcow2'], null, ops);
      const snapshots = data.filter((d) => d.op === 'snapshot-create').length;
      if (snapshots >= 16) sixteen++;
      const bits = Math.min(image.refcountBits, image.createdWithRefcountBits ?? 64);
      assert.ok(snapshots + 1 <= 2 ** bits - 1, `seed ${seed} case ${i}: ${snapshots} snapshots at ${bits} bits`);
    }
  assert.ok(sixteen >= 10, `${sixteen} cases with sixteen snapshots`);
});

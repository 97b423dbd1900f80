import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseCase, RAW_IMAGE } from '../../model/case.ts';
import { qemuImg, type Resizer } from '../../model/commands.ts';
import type { ImageState } from '../../model/state.ts';
import {
  bitmapArgs,
  bitmapKind,
  instarOrder,
  planBitmap,
  storableGranularity,
  type BitmapAction,
  type BitmapStep,
} from '../../operations/bitmap/step.ts';
import { bitmapsOracle } from '../../oracles/bitmaps.ts';
import { readBitmapBits } from '../../qcow2/bitmaps.ts';
import type { BitmapBits } from '../../qcow2/bitmaps.ts';

// The bitmap operation's pure parts: qemu's rules for a call, its kinds, instar's order, both
// command lines, the bits read from a bitmap table, and the bitmaps oracle.

const instar: Resizer = { dialect: 'instar', program: 'instar' } as Resizer;
const state = (bitmaps: ImageState['bitmaps'], compat: '1.1' | '0.10' = '1.1'): ImageState => ({
  size: 4 << 20,
  compat,
  refcountBits: 16,
  lazyRefcounts: false,
  extendedL2: false,
  dataFile: false,
  snapshots: [],
  clusterSize: 65536,
  bitmaps,
});
const b0 = { name: 'b0', granularity: 65536, enabled: true };
const b1 = { name: 'b1', granularity: 4096, enabled: false };
const step = (actions: (BitmapAction['action'] | BitmapAction)[], name = 'b0', granularity: number | null = null) =>
  ({
    op: 'bitmap',
    actions: actions.map((a) => (typeof a === 'string' ? { action: a } : a)),
    name,
    granularity,
  }) as BitmapStep;

describe("qemu's rules for a bitmap call", () => {
  const cases: [string, BitmapStep, ImageState, boolean, string][] = [
    ['an add of a new bitmap', step(['add'], 'b2'), state([b0]), true, 'add'],
    ['an add of one the image has', step(['add']), state([b0]), false, 'add'],
    ['an add on a v2 image', step(['add']), state([], '0.10'), false, 'add'],
    ['a clear of one the image lacks', step(['clear'], 'nosuch'), state([b0]), false, 'clear'],
    [
      'a merge of another granularity',
      step([{ action: 'merge', source: 'b1' }]),
      state([b0, b1]),
      true,
      'merge-rescaled',
    ],
    ['a merge of a missing source', step([{ action: 'merge', source: 'x' }]), state([b0]), false, 'merge'],
    ['add, remove, add', step(['add', 'remove', 'add'], 'b2'), state([b0]), true, 'repeated'],
    ['add then merge', step(['add', { action: 'merge', source: 'b0' }], 'b2'), state([b0]), true, 'merge-mixed'],
    ['nine actions', step(Array(9).fill('enable')), state([b0]), true, 'over-eight'],
    ['add then disable', step(['add', 'disable'], 'b2'), state([b0]), true, 'several'],
    ['remove then clear', step(['remove', 'clear']), state([b0]), false, 'several'],
  ];
  for (const [what, s, st, accepted, kind] of cases)
    test(what, () => {
      const plan = planBitmap(s, st);
      assert.equal(plan.accepted, accepted);
      assert.equal(plan.kind, kind);
      assert.equal(bitmapKind(s, st.bitmaps!), kind);
    });
  test('an accepted call leaves the bitmaps it made: the default granularity follows the cluster size', () => {
    const next = planBitmap(step(['add', 'disable'], 'b2'), state([b0])).next.bitmaps;
    assert.deepEqual(next, [b0, { name: 'b2', granularity: 65536, enabled: false }]);
  });
});

test("instar's order runs every use of a flag at its first place", () => {
  const names = (a: BitmapAction[]) => a.map((x) => x.action).join(',');
  assert.equal(names(instarOrder(step(['add', 'remove', 'add']).actions)), 'add,add,remove');
  assert.equal(names(instarOrder(step(['enable', 'disable', 'enable']).actions)), 'enable,enable,disable');
  assert.equal(names(instarOrder(step(['clear', 'enable']).actions)), 'clear,enable');
});

test('both command lines', () => {
  const s = step(['add', 'disable'], 'b2', 512);
  const image = { format: 'qcow2' as const, encrypted: false };
  assert.deepEqual(bitmapArgs(qemuImg, s, 'img.qcow2', image, 'human'), [
    'bitmap',
    '--add',
    '--disable',
    '-g',
    '512',
    '-f',
    'qcow2',
    'img.qcow2',
    'b2',
  ]);
  const merge = step([{ action: 'merge', source: 'b1' }]);
  assert.deepEqual(bitmapArgs(instar, merge, 'img.qcow2', image, 'json'), [
    'bitmap',
    '--merge',
    'b1',
    '-f',
    'qcow2',
    '--output',
    'json',
    'img.qcow2',
    'b0',
  ]);
});

test('a granularity qemu cannot store for the disk is raised to one it can', () => {
  assert.equal(storableGranularity(512, 4 << 20), 512);
  assert.equal(storableGranularity(512, 2 ** 42), 1024);
  assert.equal(storableGranularity(null, 2 ** 42), null);
});

test('a case with a bitmap added among its data parses, and a bad one is named', () => {
  const c = {
    image: { ...RAW_IMAGE, format: 'qcow2', virtualSize: 1 << 20, createdPreallocation: 'off' },
    data: [{ op: 'bitmap-add', name: 'b0', granularity: 4096, enabled: true }],
    steps: [{ op: 'bitmap', actions: [{ action: 'clear' }], name: 'b0', granularity: null }],
  };
  assert.doesNotThrow(() => parseCase(structuredClone(c)));
  const bad = structuredClone(c);
  bad.steps[0]!.actions = [{ action: 'merge' }];
  assert.throws(() => parseCase(bad), /steps\[0\]\.actions\[0\]\.source/);
});

describe('the bits of a bitmap table', () => {
  const entry = {
    tableOffset: 0,
    tableSize: 2,
    flags: 2,
    type: 1,
    granularityBits: 12,
    name: 'b0',
    extraData: Buffer.alloc(0),
  };
  test('LSB first in each byte, runs joined across bytes; an unallocated entry with bit 0 is all ones', async () => {
    const cs = 512; // 4096 bits per data cluster
    const data = Buffer.alloc(cs);
    data[0] = 0b10000010; // bits 1 and 7
    data[1] = 0b00000001; // bit 8: joins 7
    const read = async () => data;
    const table = [512n, 1n];
    const bits = await readBitmapBits(entry, table, 2 * 4096 * 4096, cs, read);
    assert.equal(bits.runs, '1,7-8,4096-8191');
    assert.equal(bits.set, 3 + 4096);
    assert.deepEqual(bits.flags, ['auto']);
  });
  test('whole bytes of ones and zeros are one run or none', async () => {
    const data = Buffer.alloc(512);
    data.fill(0xff, 2, 4); // bits 16-31
    data[4] = 0b00000011; // bits 32-33: the same run
    data[100] = 0x80; // bit 807
    const bits = await readBitmapBits({ ...entry, tableSize: 1 }, [512n], 4096 * 4096, 512, async () => data);
    assert.equal(bits.runs, '16-33,807');
    assert.equal(bits.set, 19);
  });
  test('bits past the end of the disk are not counted', async () => {
    const bits = await readBitmapBits({ ...entry, tableSize: 1 }, [1n], 3 * 4096, 512, async () => Buffer.alloc(0));
    assert.equal(bits.set, 3);
  });
});

describe('the bitmaps oracle', () => {
  const bm = (over: Partial<BitmapBits> = {}): BitmapBits => ({
    name: 'b0',
    granularity: 4096,
    flags: ['auto'],
    set: 2,
    runs: '0-1',
    ...over,
  });
  const kinds = (ref: BitmapBits[], sub: BitmapBits[]) => bitmapsOracle(ref, sub).map((f) => `${f.kind}/${f.detail}`);
  test('the same bitmaps in another order: nothing', () => {
    assert.deepEqual(kinds([bm(), bm({ name: 'b1' })], [bm({ name: 'b1' }), bm()]), []);
  });
  test('names each difference once, whatever the direction of the bits', () => {
    assert.deepEqual(kinds([bm()], [bm({ set: 1, runs: '0' })]), ['bitmap-bits-differ/bits']);
    assert.deepEqual(kinds([bm()], [bm({ set: 3, runs: '0-2' })]), ['bitmap-bits-differ/bits']);
    assert.deepEqual(kinds([bm()], [bm({ flags: [] })]), ['bitmap-directory-differs/flags']);
    assert.deepEqual(kinds([bm()], []), ['bitmap-directory-differs/missing']);
    assert.deepEqual(kinds([], [bm()]), ['bitmap-directory-differs/extra']);
  });
  test('bits are compared only at the same granularity', () => {
    assert.deepEqual(kinds([bm()], [bm({ granularity: 512, set: 16, runs: '0-15' })]), [
      'bitmap-directory-differs/granularity',
    ]);
  });
  test('after another operation, only bits the subject lacks are a finding', () => {
    const inexact = (ref: BitmapBits[], sub: BitmapBits[]) =>
      bitmapsOracle(ref, sub, false).map((f) => `${f.kind}/${f.detail}`);
    // more bits: the subject wrote more guest data, which the content oracle judges
    assert.deepEqual(inexact([bm()], [bm({ set: 4, runs: '0-1,9-10' })]), []);
    assert.deepEqual(inexact([bm()], [bm({ set: 1, runs: '0' })]), ['bitmap-bits-differ/bits']);
    assert.deepEqual(inexact([bm()], [bm({ set: 2, runs: '5-6' })]), ['bitmap-bits-differ/bits']);
    assert.deepEqual(inexact([bm()], [bm({ flags: [] })]), ['bitmap-directory-differs/flags']);
  });
  test('steps recorded before bits were read are not judged', () => {
    assert.deepEqual(bitmapsOracle(undefined, [bm()]), []);
  });
});

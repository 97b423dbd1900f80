import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  RAW_DATA_OPS,
  REFCOUNT_WIDTHS,
  isIoOp,
  parseCase,
  type Case,
  type IoOp,
  type ResizeStep,
} from '../model/case.ts';
import { parseSize, planStep, plannedSizes } from '../model/plan.ts';
import {
  HUGE_CLUSTER,
  MAX_CREATED_PREALLOCATED,
  MAX_DATA_FILE_IMAGE,
  MAX_RAW_SIZE,
  imageSizeLimit,
  maxVirtualSize,
  sizeLimit,
  stepSizeLimit,
} from '../generators/bounds.ts';
import { caseArb, caseAt, formatAt } from '../generators/cases.ts';
import { rawCaseArb } from '../generators/raw.ts';
import { formatBytes } from '../generators/steps.ts';

describe('SIZE parsing, as qemu-img does it', () => {
  it('reads bytes, suffixes, fractions with a suffix and relative sizes', () => {
    assert.equal(parseSize('8388608', 0), 8388608);
    assert.equal(parseSize('8M', 0), 8 * 2 ** 20);
    assert.equal(parseSize('1.5k', 0), 1536);
    assert.equal(parseSize('+1M', 1024), 1024 + 2 ** 20);
    assert.equal(parseSize('-512', 1024), 512);
    assert.equal(parseSize('1.5', 0), null);
    assert.equal(parseSize('abc', 0), null);
  });
  it('plans steps by qemu-img rules', () => {
    const step = (size: string, shrink = false, preallocation: ResizeStep['preallocation'] = null) =>
      planStep({ size, shrink, preallocation }, 4096, 'qcow2');
    assert.deepEqual(step('8192'), { kind: 'grow', target: 8192, accepted: true });
    assert.equal(step('2048').accepted, false, 'a shrink needs --shrink');
    assert.equal(step('2048', true).accepted, true);
    assert.equal(step('2048', true, 'full').accepted, false, 'no preallocation on a shrink');
    assert.equal(step('4096', false, 'falloc').accepted, false, 'no preallocation without growth');
    assert.equal(step('4097').kind, 'invalid');
    assert.equal(step('-4096').kind, 'invalid');
  });
  it('plans raw steps by qemu-img rules for raw: any byte count, no metadata preallocation', () => {
    const step = (size: string, shrink = false, preallocation: ResizeStep['preallocation'] = null) =>
      planStep({ size, shrink, preallocation }, 4096, 'raw');
    assert.deepEqual(step('4097'), { kind: 'grow', target: 4097, accepted: true });
    assert.deepEqual(step('1000', true), { kind: 'shrink', target: 1000, accepted: true });
    assert.equal(step('8192', false, 'metadata').accepted, false, 'raw has no metadata to preallocate');
    assert.equal(step('8192', false, 'falloc').accepted, true);
    assert.equal(step('0', true).kind, 'invalid');
  });
  it('spells sizes every way qemu-img reads back to the same number', () => {
    const spellings = ['bytes', 'upper', 'lower', 'fraction', 'B', 'b'] as const;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 40 }),
        fc.constantFrom(...spellings),
        (n, spelling) => parseSize(formatBytes(n * 512, spelling), 0) === n * 512,
      ),
    );
    assert.deepEqual(
      spellings.map((sp) => formatBytes(3 * 2 ** 19, sp)),
      ['1572864', '1536K', '1536k', '1.5M', '1572864B', '1572864b'],
    );
  });
});

describe('case generator', () => {
  it('only makes images qemu-img can create', () => {
    fc.assert(
      fc.property(caseArb, ({ image }) => {
        assert.ok(image.virtualSize >= 512 && image.virtualSize % 512 === 0);
        assert.ok(image.virtualSize <= sizeLimit(image.clusterSize, image.extendedL2) / 2);
        if (image.clusterSize < HUGE_CLUSTER)
          assert.ok(
            image.virtualSize <= maxVirtualSize(image.clusterSize, image.extendedL2),
            'small clusters keep images small',
          );
        if (image.compat === '0.10') {
          assert.ok(image.refcountBits === 16 && !image.lazyRefcounts && !image.extendedL2);
          assert.ok(image.compressionType === 'zlib' && image.bitmaps === 0 && image.createdWithRefcountBits === null);
        }
        if (image.extendedL2) assert.ok(image.clusterSize >= 16384);
        if (image.dirty) assert.ok(image.lazyRefcounts);
        assert.notEqual(image.createdWithRefcountBits, image.refcountBits);
      }),
      { numRuns: 2000 },
    );
  });
  it('keeps qemu-io commands inside the image, sector-aligned, compressed writes first and whole', () => {
    fc.assert(
      fc.property(caseArb, ({ image, data }) => {
        let compressedPhase = true;
        for (const op of data.filter((d): d is IoOp => 'offset' in d)) {
          assert.ok(op.offset % 512 === 0 && op.length % 512 === 0 && op.length > 0);
          assert.ok(op.offset + op.length <= image.virtualSize);
          if (op.op === 'compress') {
            assert.ok(compressedPhase, 'compressed writes come first');
            assert.ok(op.offset % image.clusterSize === 0 && op.length === image.clusterSize);
          } else compressedPhase = false;
        }
      }),
      { numRuns: 2000 },
    );
  });
  it('creates snapshots only where refcounts can exceed 1, and deletes only existing ones', () => {
    fc.assert(
      fc.property(caseArb, ({ image, data }) => {
        const alive = new Set<string>();
        for (const op of data) {
          if (op.op === 'snapshot-create') {
            assert.ok(Math.min(image.refcountBits, image.createdWithRefcountBits ?? 64) >= 4);
            alive.add(op.name);
            assert.ok(alive.size <= 3);
          }
          if (op.op === 'snapshot-delete') assert.ok(alive.delete(op.name), `${op.name} does not exist`);
        }
      }),
      { numRuns: 2000 },
    );
  });
  const amended = 'images amended down to 1 or 2 bits (qemu-img amend refuses shared clusters there)';
  it(`writes no compressed clusters into ${amended}`, () => {
    fc.assert(
      fc.property(caseArb, ({ image, data }) => {
        if (image.createdWithRefcountBits !== null && image.refcountBits < 4)
          assert.ok(data.every((d) => d.op !== 'compress'));
      }),
      { numRuns: 2000 },
    );
  });
  it('draws every refcount width equally often (no default-16 bias)', () => {
    const counts = new Map<number, number>();
    for (const c of fc.sample(caseArb, { seed: 7, numRuns: 7000 }))
      counts.set(c.image.refcountBits, (counts.get(c.image.refcountBits) ?? 0) + 1);
    for (const bits of REFCOUNT_WIDTHS)
      assert.ok(Math.abs(counts.get(bits)! - 1000) < 120, `refcount_bits=${bits}: ${counts.get(bits)} of 7000`);
  });
  it('generates grows, shrinks (that discard written data) and refusals on purpose', () => {
    const kinds = new Map<string, number>();
    let discarding = 0;
    for (const c of fc.sample(caseArb, { seed: 3, numRuns: 2000 })) {
      for (const { plan } of plannedSizes(c))
        kinds.set(`${plan.kind}:${plan.accepted}`, (kinds.get(`${plan.kind}:${plan.accepted}`) ?? 0) + 1);
      const first = plannedSizes(c)[0]!.plan;
      if (
        first.kind === 'shrink' &&
        first.accepted &&
        c.data.some((d) => (d.op === 'write' || d.op === 'compress') && d.offset + d.length > first.target!)
      )
        discarding++;
    }
    for (const k of ['grow:true', 'shrink:true', 'shrink:false', 'same:true', 'same:false', 'invalid:false'])
      assert.ok((kinds.get(k) ?? 0) > 20, `${k}: ${kinds.get(k)}`);
    assert.ok(discarding > 500, `first-step shrinks that discard written data: ${discarding} of 2000`);
  });
  it('keeps preallocated grows small, whatever steps come before them', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        for (const [i, { plan }] of plannedSizes(c).entries()) {
          const mode = (c.steps[i] as ResizeStep).preallocation;
          if (!plan.accepted || plan.kind !== 'grow') continue;
          if (mode === 'full' || mode === 'falloc')
            assert.ok(plan.target! <= 64 * 2 ** 20, `${mode} grow to ${plan.target}`);
          if (mode === 'metadata') assert.ok(plan.target! <= 2 ** 30, `metadata grow to ${plan.target}`);
        }
      }),
      { numRuns: 3000 },
    );
  });
  it('spreads image sizes: few images of a single cluster', () => {
    const cases = fc.sample(caseArb, { seed: 11, numRuns: 2000 });
    const single = cases.filter((c) => c.image.virtualSize <= c.image.clusterSize).length;
    assert.ok(single < 200, `${single} of 2000 images fit in one cluster`);
  });
  it('makes backing images and external data files only as qemu-img builds them', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const { image, data } = c;
        if (image.dataFile !== 'none') {
          // qemu: data_file needs compat 1.1; no internal snapshots, no compressed clusters
          assert.equal(image.compat, '1.1');
          assert.ok(
            data.every((d) => d.op !== 'snapshot-create' && d.op !== 'compress'),
            JSON.stringify(data),
          );
          assert.ok(image.virtualSize <= MAX_DATA_FILE_IMAGE);
        }
        // qemu-img create refuses data_file_raw with a backing file
        if (image.dataFile === 'data_file_raw') assert.equal(image.backing, null);
        if (image.backing) {
          const { virtualSize, data: writes } = image.backing;
          assert.ok(virtualSize % 512 === 0 && virtualSize >= 512 && virtualSize !== image.virtualSize);
          assert.ok(
            virtualSize <= image.virtualSize + 64 * 2 ** 20,
            'a longer backing image is longer by a bounded amount',
          );
          assert.ok(writes.length > 0, 'data in the backing image, so that content through it matters');
          for (const w of writes)
            assert.ok(
              w.offset % 512 === 0 && w.length % 512 === 0 && w.length > 0 && w.offset + w.length <= virtualSize,
            );
        }
        if (image.backing || image.dataFile !== 'none') {
          // no TiB images or steps: a grow over a longer backing image zero-fills the new area
          assert.ok(image.virtualSize <= imageSizeLimit(image));
          for (const { plan } of plannedSizes(c))
            if (plan.accepted && plan.target !== null) assert.ok(plan.target <= stepSizeLimit(image), `${plan.target}`);
        }
      }),
      { numRuns: 3000 },
    );
  });
  it('makes encrypted and preallocated images only as qemu-img builds and compares them', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const { image, data, steps } = c;
        // the key is only ever given for an encrypted image, which has no backing image or data file
        if (!image.encrypted) assert.ok(steps.every((s) => (s as ResizeStep).key === undefined));
        if (image.encrypted) {
          assert.ok(image.backing === null && image.dataFile === 'none');
          assert.ok(steps.every((s) => typeof (s as ResizeStep).key === 'boolean'));
          // qemu-img compare fails an assertion on encrypted images from 2 GiB
          for (const { plan } of plannedSizes(c)) if (plan.target !== null) assert.ok(plan.target < 2 * 2 ** 30);
        }
        if (image.createdPreallocation !== 'off') {
          assert.ok(image.virtualSize <= MAX_CREATED_PREALLOCATED[image.createdPreallocation]);
          // qemu writes compressed data only into unallocated clusters
          assert.ok(data.every((d) => d.op !== 'compress'));
          // qemu-img create refuses preallocation over a backing image without extended L2
          if (image.backing) assert.ok(image.extendedL2);
        }
        if (image.backing) assert.notEqual(image.backing.virtualSize, image.virtualSize);
      }),
      { numRuns: 3000 },
    );
  });
  it('reaches every new way of creating an image in a few percent of the cases', () => {
    const cases = Array.from({ length: 500 }, (_, i) => caseAt(3, i));
    const share = (p: (c: Case) => boolean) => cases.filter(p).length / cases.length;
    for (const [what, s] of [
      ['encrypted', share((c) => c.image.encrypted)],
      ['the key given in a step', share((c) => c.steps.some((s) => (s as ResizeStep).key))],
      ['the key withheld in a step', share((c) => c.steps.some((s) => (s as ResizeStep).key === false))],
      ['created preallocated', share((c) => c.image.createdPreallocation !== 'off')],
      ['a raw backing image', share((c) => c.image.backing?.format === 'raw')],
    ] as const)
      assert.ok(s >= 0.01 && s <= 0.2, `${what}: ${s}`);
  });
  const externals = 'backing images shorter and longer than the image and both kinds of data file';
  it(`draws ${externals}, in a minority of cases`, () => {
    const cases = fc.sample(caseArb, { seed: 13, numRuns: 2000 });
    const count = (f: (c: Case) => boolean) => cases.filter(f).length;
    const shorter = count((c) => c.image.backing !== null && c.image.backing.virtualSize < c.image.virtualSize);
    const longer = count((c) => c.image.backing !== null && c.image.backing.virtualSize > c.image.virtualSize);
    const dataFile = count((c) => c.image.dataFile === 'data_file');
    const raw = count((c) => c.image.dataFile === 'data_file_raw');
    const both = count((c) => c.image.backing !== null && c.image.dataFile !== 'none');
    for (const [what, n] of Object.entries({ shorter, longer, dataFile, raw, both }))
      assert.ok(n > 30, `${what}: ${n} of 2000`);
    assert.ok(count((c) => c.image.backing === null && c.image.dataFile === 'none') > 1200, 'most cases have neither');
  });
  it('gives the same case for the same seed and iteration', () => {
    assert.deepEqual(caseAt(42, 17), caseAt(42, 17));
    assert.notDeepEqual(caseAt(42, 17), caseAt(43, 17));
  });
  it('produces cases that survive a JSON round trip and validation', () => {
    fc.assert(
      fc.property(caseArb, (c) => assert.deepEqual(parseCase(JSON.parse(JSON.stringify(c))), c)),
      { numRuns: 300 },
    );
  });
});

describe('case validation', () => {
  const good = caseAt(1, 0);
  it('names the bad field', () => {
    assert.throws(
      () => parseCase({ ...good, image: { ...good.image, refcountBits: 3 } }),
      /case\.image\.refcountBits must be one of/,
    );
    assert.throws(() => parseCase({ ...good, steps: [] }), /case\.steps must be a non-empty array/);
    assert.throws(() => parseCase({ ...good, data: [{ op: 'erase', offset: 0, length: 1 }] }), /case\.data\[0\]\.op/);
    assert.throws(
      () => parseCase({ ...good, image: { ...good.image, dataFile: 'raw' } }),
      /case\.image\.dataFile must be one of none, data_file, data_file_raw/,
    );
    assert.throws(
      () => parseCase({ ...good, image: { ...good.image, backing: { virtualSize: 1000, data: [] } } }),
      /case\.image\.backing\.virtualSize must be a multiple of 512/,
    );
  });
  it('reads cases filed before backing images and data files existed as having neither', () => {
    const { backing: _b, dataFile: _d, ...old } = good.image;
    const c = parseCase(JSON.parse(JSON.stringify({ ...good, image: old })));
    assert.equal(c.image.backing, null);
    assert.equal(c.image.dataFile, 'none');
  });
});

describe('raw cases', () => {
  const raws = Array.from(
    { length: 300 },
    (_, i) => fc.sample(rawCaseArb, { seed: 5, path: String(i), numRuns: 1 })[0]!,
  );
  it('are raw images qemu-img can create, with only the data a raw image takes, within their bound', () => {
    for (const c of raws) {
      assert.equal(c.image.format, 'raw');
      assert.deepEqual(parseCase(JSON.parse(JSON.stringify(c))), c);
      assert.ok(c.image.virtualSize % 512 === 0 && c.image.virtualSize <= MAX_RAW_SIZE);
      assert.notEqual(c.image.createdPreallocation, 'metadata');
      for (const d of c.data.filter(isIoOp)) {
        assert.ok((RAW_DATA_OPS as readonly string[]).includes(d.op), d.op);
        assert.ok(d.offset + d.length <= c.image.virtualSize, JSON.stringify(d));
      }
      for (const { plan } of plannedSizes(c))
        if (plan.accepted && plan.target !== null) assert.ok(plan.target <= MAX_RAW_SIZE, `${plan.target}`);
    }
  });
  it('grow, shrink, go off the sector grid and preallocate, every one in some cases', () => {
    const plans = raws.flatMap((c) => plannedSizes(c).map(({ plan }, i) => ({ plan, step: c.steps[i]! })));
    const share = (p: (x: (typeof plans)[number]) => boolean) => plans.filter(p).length / plans.length;
    assert.ok(share((x) => x.plan.kind === 'grow' && x.plan.accepted) > 0.2);
    assert.ok(share((x) => x.plan.kind === 'shrink' && x.plan.accepted) > 0.2);
    assert.ok(share((x) => x.plan.accepted && x.plan.target! % 512 !== 0) > 0.01);
    assert.ok(
      share((x) => x.plan.accepted && ['falloc', 'full'].includes((x.step as ResizeStep).preallocation ?? '')) > 0.05,
    );
  });
  it('reject what a raw image cannot have', () => {
    const good = raws[0]!;
    assert.throws(
      () => parseCase({ ...good, image: { ...good.image, refcountBits: 1 } }),
      /case\.image\.refcountBits must be 16 for a raw image/,
    );
    assert.throws(
      () => parseCase({ ...good, data: [{ op: 'compress', offset: 0, length: 65536, pattern: 1 }] }),
      /case\.data\[0\]\.op of a raw image must be one of write, zero, discard/,
    );
  });
  it('come up one case in four when a run covers raw and qcow2, and leave the qcow2 cases as they were', () => {
    const formats = Array.from({ length: 400 }, (_, i) => formatAt(1, i, ['qcow2', 'raw']));
    const raw = formats.filter((f) => f === 'raw').length / formats.length;
    assert.ok(raw > 0.15 && raw < 0.35, `${raw}`);
    const i = formats.indexOf('qcow2');
    assert.deepEqual(caseAt(1, i, ['qcow2', 'raw']), caseAt(1, i));
    assert.equal(caseAt(1, formats.indexOf('raw'), ['qcow2', 'raw']).image.format, 'raw');
  });
});

// Tests of qcow2/ against real images built by qemu-img / qemu-io.
import assert from 'node:assert/strict';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { scratch } from './scratch.ts';
import {
  AUTOCLEAR_BITMAPS,
  COMPAT_LAZY_REFCOUNTS,
  EXT_BACKING_FORMAT,
  EXT_BITMAPS,
  EXT_FEATURE_TABLE,
  INCOMPAT_COMPRESSION,
  INCOMPAT_EXTL2,
  parseFeatureNameTable,
} from '../qcow2/format.ts';
import { readQcow2Header, withQcow2 } from '../qcow2/reader.ts';
import {
  decodeCompressedDescriptor,
  decodeL1Entry,
  decodeL2Entry,
  getRefcountEntry,
  l1EntriesNeeded,
  nonZeroChunks,
  nonZeroRefcounts,
  refcountEntriesPerBlock,
  type L2Entry,
} from '../qcow2/tables.ts';
import {
  encodeHeaderExtensions,
  readHeaderExtensions,
  readRefcountBlock,
  readRefcountBlocks,
  readRefcounts,
  rewriteRefcountBlocks,
  rewriteHeaderExtensions,
  setRefcountEntry,
  writeRefcountBlock,
} from '../qcow2/edit.ts';

const WIDTHS = [1, 2, 4, 8, 16, 32, 64];
const scratchDir = scratch();

const image = scratchDir.image;

interface Check {
  exitCode: number;
  json: { corruptions?: number; leaks?: number; 'image-end-offset'?: number };
}
async function check(path: string): Promise<Check> {
  const r = await execa('qemu-img', ['check', '--output=json', path], { reject: false });
  return { exitCode: r.exitCode ?? -1, json: JSON.parse(r.stdout) as Check['json'] };
}

/** The fields of `qemu-img info --output=json` these tests read. */
interface Info {
  'cluster-size': number;
  'virtual-size': number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  'format-specific': { data: { compat: string; 'refcount-bits': number } };
}

async function info(path: string): Promise<Info> {
  return JSON.parse((await execa('qemu-img', ['info', '--output=json', path])).stdout) as Info;
}

/** Number of host clusters a freshly written (contiguous, unfragmented) image uses, per qemu. */
async function usedClusters(path: string, clusterSize: number): Promise<number> {
  const end = (await check(path)).json['image-end-offset'];
  assert.ok(end !== undefined && end % clusterSize === 0, `image-end-offset ${end}`);
  return end / clusterSize;
}

describe('readQcow2Header', () => {
  for (const rb of WIDTHS) {
    test(`refcount_bits=${rb} matches qemu-img info`, async () => {
      const p = await image(`refcount_bits=${rb}`, '16M');
      const h = await readQcow2Header(p);
      const i = await info(p);
      assert.equal(h.version, 3);
      assert.equal(h.refcountBits, rb);
      assert.equal(h.refcountBits, i['format-specific'].data['refcount-bits']);
      assert.equal(h.refcountOrder, Math.log2(rb));
      assert.equal(h.clusterBits, 16);
      assert.equal(h.clusterSize, i['cluster-size']);
      assert.equal(h.size, i['virtual-size']);
      assert.equal(h.size, 16 * 2 ** 20);
      assert.equal(h.headerLength, 112);
      assert.equal(h.l1Size, 1);
      // qemu's fresh layout: header, reftable, refblock, L1.
      assert.equal(h.refcountTableOffset, 0x10000);
      assert.equal(h.refcountTableClusters, 1);
      assert.equal(h.l1TableOffset, 0x30000);
      assert.equal(h.nbSnapshots, 0);
      assert.equal(h.snapshotsOffset, 0);
      assert.equal(h.incompatibleFeatures, 0n);
      assert.equal(h.compatibleFeatures, 0n);
      assert.equal(h.autoclearFeatures, 0n);
      assert.equal(h.compressionType, 0);
    });
  }

  for (const cs of [512, 4096, 2 * 2 ** 20]) {
    test(`cluster_size=${cs}`, async () => {
      const p = await image(`cluster_size=${cs},refcount_bits=4`, '3M');
      const h = await readQcow2Header(p);
      assert.equal(h.clusterSize, cs);
      assert.equal(h.clusterBits, Math.log2(cs));
      assert.equal(h.clusterSize, (await info(p))['cluster-size']);
      assert.equal(h.size, 3 * 2 ** 20);
      assert.equal(h.l1Size, Math.ceil(h.size / (cs * (cs / 8))));
      assert.equal(h.refcountBits, 4);
    });
  }

  test('compat=0.10 is version 2 with 16-bit refcounts', async () => {
    const p = await image('compat=0.10', '5M');
    const h = await readQcow2Header(p);
    assert.equal(h.version, 2);
    assert.equal(h.refcountBits, 16);
    assert.equal(h.refcountOrder, 4);
    assert.equal(h.headerLength, 72);
    assert.equal(h.size, 5 * 2 ** 20);
    assert.equal(h.compatibleFeatures, 0n);
    assert.equal((await info(p))['format-specific'].data.compat, '0.10');
  });

  test('feature fields, compression type, snapshots', async () => {
    const lazy = await readQcow2Header(await image('lazy_refcounts=on', '1M'));
    assert.equal(lazy.compatibleFeatures, COMPAT_LAZY_REFCOUNTS);
    const zstd = await readQcow2Header(await image('compression_type=zstd,extended_l2=on', '1M'));
    assert.equal(zstd.compressionType, 1);
    assert.equal(zstd.incompatibleFeatures, INCOMPAT_COMPRESSION | INCOMPAT_EXTL2);
    const snap = await image('', '1M', ['write -P 1 0 64k']);
    await execa('qemu-img', ['snapshot', '-c', 's1', snap]);
    const h = await readQcow2Header(snap);
    assert.equal(h.nbSnapshots, 1);
    assert.ok(h.snapshotsOffset > 0 && h.snapshotsOffset % h.clusterSize === 0);
  });

  test('rejects a non-qcow2 file', async () => {
    const raw = join(scratchDir.dir(), 'raw.img');
    await execa('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
    await assert.rejects(readQcow2Header(raw), /not a qcow2/);
  });
});

describe('refcount entry codec', () => {
  test('known byte layouts (LSB-first sub-byte, big-endian wide)', () => {
    const b1 = Buffer.alloc(2);
    for (let i = 0; i < 6; i++) setRefcountEntry(b1, i, 1, 1);
    setRefcountEntry(b1, 9, 1, 1);
    assert.deepEqual([...b1], [0x3f, 0x02]);

    const b2 = Buffer.alloc(2);
    setRefcountEntry(b2, 1, 2, 3);
    setRefcountEntry(b2, 4, 2, 1);
    setRefcountEntry(b2, 7, 2, 2);
    assert.deepEqual([...b2], [0x0c, 0x81]);

    const b4 = Buffer.alloc(2);
    setRefcountEntry(b4, 0, 4, 1);
    setRefcountEntry(b4, 1, 4, 2);
    setRefcountEntry(b4, 3, 4, 0xf);
    assert.deepEqual([...b4], [0x21, 0xf0]);

    const b16 = Buffer.alloc(4);
    setRefcountEntry(b16, 1, 16, 0x1234);
    assert.deepEqual([...b16], [0, 0, 0x12, 0x34]);
    const b32 = Buffer.alloc(8);
    setRefcountEntry(b32, 1, 32, 0x01020304);
    assert.deepEqual([...b32], [0, 0, 0, 0, 1, 2, 3, 4]);
    const b64 = Buffer.alloc(16);
    setRefcountEntry(b64, 1, 64, 2 ** 53 - 1);
    assert.equal(b64.readBigUInt64BE(8), 2n ** 53n - 1n);
    assert.equal(getRefcountEntry(b64, 1, 64), 2 ** 53 - 1);
    assert.equal(getRefcountEntry(Buffer.from([0x00, 0x00, 0x01, 0x00]), 1, 16), 0x100);
    assert.equal(getRefcountEntry(Buffer.from([0xa5]), 0, 4), 0x5);
    assert.equal(getRefcountEntry(Buffer.from([0xa5]), 1, 4), 0xa);
  });

  for (const bits of WIDTHS) {
    test(`${bits}-bit round trip, neighbours untouched`, () => {
      const n = 64;
      const max = bits >= 53 ? 2 ** 53 - 1 : 2 ** bits - 1;
      const block = Buffer.alloc((n * bits) / 8);
      const values = Array.from({ length: n }, (_, i) => (i * 2654435761) % (max + 1));
      values[3] = max;
      values.forEach((v, i) => setRefcountEntry(block, i, bits, v));
      assert.deepEqual(
        values.map((_, i) => getRefcountEntry(block, i, bits)),
        values,
      );
      // Overwrite one entry; all others keep their values.
      setRefcountEntry(block, 5, bits, 0);
      values[5] = 0;
      assert.deepEqual(
        values.map((_, i) => getRefcountEntry(block, i, bits)),
        values,
      );
      if (bits < 53) assert.throws(() => setRefcountEntry(block, 0, bits, 2 ** bits), RangeError);
      assert.throws(() => setRefcountEntry(block, 0, bits, -1), RangeError);
    });
  }
  test('rejects widths that are not a power of two up to 64', () => {
    assert.throws(() => getRefcountEntry(Buffer.alloc(8), 0, 3), RangeError);
  });
});

describe('refcount structures against qemu', () => {
  // Full-byte patterns of consecutive refcount-1 entries, packed LSB-first.
  const FULL: Record<number, number> = { 1: 0xff, 2: 0x55, 4: 0x11 };

  for (const rb of WIDTHS) {
    test(`refcount_bits=${rb}: raw block bytes and readRefcounts match qemu's allocation`, async () => {
      const p = await image(`refcount_bits=${rb}`, '16M', ['write -P 7 0 192k', 'write -P 9 12M 128k']);
      const h = await readQcow2Header(p);
      const n = await usedClusters(p, h.clusterSize); // header, reftable, refblock, L1, L2, 5 data
      assert.equal(n, 10);
      const blocks = await readRefcountBlocks(p);
      assert.deepEqual(blocks, [{ tableIndex: 0, offset: 0x20000 }]);
      const raw = await readRefcountBlock(p, 0x20000, h.clusterSize);
      if (rb < 8) {
        const perByte = 8 / rb;
        const full = Math.floor(n / perByte);
        let partial = 0;
        for (let j = 0; j < n % perByte; j++) partial |= 1 << (j * rb);
        const expected = Buffer.alloc(full + 1, FULL[rb]);
        expected[full] = partial;
        assert.deepEqual(raw.subarray(0, full + 1), expected);
      } else {
        // Big-endian: each entry is zero bytes then 0x01 in its last byte.
        const expected = Buffer.alloc((n * rb) / 8);
        for (let i = 0; i < n; i++) expected[((i + 1) * rb) / 8 - 1] = 1;
        assert.deepEqual(raw.subarray(0, expected.length), expected);
      }
      assert.ok(
        raw.subarray(Math.ceil((n * rb) / 8)).every((b) => b === 0),
        'no refcounts past the end',
      );
      const counts = await readRefcounts(p);
      assert.deepEqual(
        [...counts.keys()].sort((a, b) => a - b),
        [...Array(n).keys()],
      );
      assert.ok([...counts.values()].every((v) => v === 1));
    });
  }

  test('snapshot: every data cluster from qemu-img map has refcount 2', async () => {
    const p = await image('refcount_bits=64', '4M', ['write -P 1 0 128k', 'write -P 2 3M 64k']);
    await execa('qemu-img', ['snapshot', '-c', 's', p]);
    const cs = 65536;
    const map = JSON.parse((await execa('qemu-img', ['map', '--output=json', p])).stdout) as {
      data: boolean;
      length: number;
      offset?: number;
    }[];
    const dataClusters = map
      .filter((e) => e.data && e.offset !== undefined)
      .flatMap((e) => Array.from({ length: e.length / cs }, (_, k) => (e.offset as number) / cs + k));
    assert.equal(dataClusters.length, 3);
    const counts = await readRefcounts(p);
    for (const c of dataClusters) assert.equal(counts.get(c), 2, `cluster ${c}`);
    // Shared: data clusters and the one L2 table. Everything else qemu uses has refcount 1.
    assert.equal([...counts.values()].filter((v) => v === 2).length, dataClusters.length + 1);
    assert.equal((await check(p)).exitCode, 0);
  });

  test('several refcount blocks (512 B clusters, 64-bit refcounts: 64 entries per block)', async () => {
    const p = await image('cluster_size=512,refcount_bits=64', '1M', ['write -P 3 0 100k']);
    const n = await usedClusters(p, 512);
    const per = refcountEntriesPerBlock(512, 64);
    const blocks = await readRefcountBlocks(p);
    assert.equal(blocks.length, Math.ceil(n / per));
    assert.deepEqual(
      blocks.map((b) => b.tableIndex),
      [...blocks.keys()],
    );
    const counts = await readRefcounts(p);
    assert.deepEqual(
      [...counts.keys()].sort((a, b) => a - b),
      [...Array(n).keys()],
    );
  });

  test('compat=0.10 refcounts are read as 16-bit', async () => {
    const p = await image('compat=0.10', '4M', ['write -P 5 0 64k']);
    assert.equal((await readRefcounts(p)).size, await usedClusters(p, 65536));
  });

  for (const rb of [1, 2, 4, 16, 64]) {
    test(`refcount_bits=${rb}: setRefcountEntry edits are seen by qemu-img check`, async () => {
      const p = await image(`refcount_bits=${rb}`, '4M', ['write -P 7 0 64k']);
      const h = await readQcow2Header(p);
      const n = await usedClusters(p, h.clusterSize);
      const [ref] = await readRefcountBlocks(p);
      assert.ok(ref);
      const block = await readRefcountBlock(p, ref.offset, h.clusterSize);

      // Writing back identical values leaves the image clean (the write path itself is harmless).
      setRefcountEntry(block, n - 1, rb, getRefcountEntry(block, n - 1, rb));
      await writeRefcountBlock(p, ref.offset, block);
      assert.equal((await check(p)).exitCode, 0);

      // Refcount 0 for the last data cluster: qemu counts the mismatch and the stale COPIED flag.
      setRefcountEntry(block, n - 1, rb, 0);
      await writeRefcountBlock(p, ref.offset, block);
      const bad = await check(p);
      assert.equal(bad.exitCode, 2);
      assert.equal(bad.json.corruptions, 2);

      // Restore it, then mark an unused cluster as used: a leak only (exit 3). qemu checks only
      // clusters inside the file, so extend the file with zeros first.
      await truncate(p, (n + 4) * h.clusterSize);
      setRefcountEntry(block, n - 1, rb, 1);
      setRefcountEntry(block, n + 2, rb, 1);
      await writeRefcountBlock(p, ref.offset, block);
      const leak = await check(p);
      assert.equal(leak.exitCode, 3);
      assert.equal(leak.json.leaks, 1);
      assert.equal((await readRefcounts(p)).get(n + 2), 1);
    });
  }

  test('rewriteRefcountBlocks writes back what the transform returns', async () => {
    const p = await image('refcount_bits=4', '4M');
    assert.equal(await rewriteRefcountBlocks(p, () => undefined), 0);
    assert.equal((await check(p)).exitCode, 0);
    const written = await rewriteRefcountBlocks(p, (block) => {
      const out = Buffer.from(block);
      setRefcountEntry(out, 0, 4, 0);
      return out;
    });
    assert.equal(written, 1);
    assert.equal((await readRefcounts(p)).get(0), undefined);
    assert.equal((await check(p)).exitCode, 2);
  });
});

describe('entry decoding', () => {
  const fmt = { clusterBits: 16, extendedL2: false, dataFile: false };
  test('compressed descriptors: offset / additional-sector split moves with cluster_bits', () => {
    // 64 KiB clusters: x = 62 - 8 = 54 offset bits, 8 sector bits.
    const raw = (1n << 62n) | (3n << 54n) | 0x12345n;
    assert.deepEqual(decodeCompressedDescriptor(raw, 16), {
      offset: 0x12345,
      additionalSectors: 3,
      length: 4 * 512 - 0x145,
    });
    // 2 MiB clusters: x = 49, 13 sector bits; 512 B clusters: x = 61, 1 sector bit.
    assert.deepEqual(decodeCompressedDescriptor((0x1fffn << 49n) | 0x200n, 21), {
      offset: 0x200,
      additionalSectors: 0x1fff,
      length: 0x2000 * 512,
    });
    assert.deepEqual(decodeCompressedDescriptor((1n << 61n) | 0x3ffn, 9), {
      offset: 0x3ff,
      additionalSectors: 1,
      length: 2 * 512 - 511,
    });
    const e = decodeL2Entry(raw, fmt);
    assert.equal(e.type, 'compressed');
  });

  test('L1 and L2 flags: COPIED, compressed, zero; reserved bits ignored', () => {
    assert.deepEqual(decodeL1Entry((1n << 63n) | 0x30000n | 0x1ffn), { offset: 0x30000, copied: true });
    const cases: [bigint, L2Entry['type']][] = [
      [0n, 'unallocated'],
      [1n << 63n, 'unallocated'], // COPIED without an offset maps nothing (no data file)
      [1n, 'zero-plain'],
      [(1n << 63n) | 0x50000n | 1n, 'zero-alloc'],
      [(1n << 63n) | 0x50000n, 'normal'],
      [0x50000n, 'normal'],
      [(1n << 62n) | 0x50000n, 'compressed'],
    ];
    for (const [raw, type] of cases) assert.equal(decodeL2Entry(raw, fmt).type, type, raw.toString(16));
    // Extended L2: bit 0 is not a zero flag; the bitmap travels with the entry.
    const ext = decodeL2Entry(0x50000n | 1n, { ...fmt, extendedL2: true }, 0xffn);
    assert.deepEqual(ext, { type: 'normal', offset: 0x50000, copied: false, bitmap: 0xffn });
    // External data file: offset 0 with COPIED is guest cluster 0 of the data file.
    assert.equal(decodeL2Entry(1n << 63n, { ...fmt, dataFile: true }).type, 'normal');
    assert.equal(l1EntriesNeeded(2 ** 30, 65536, false), 2);
    assert.equal(l1EntriesNeeded(2 ** 30 + 1, 65536, false), 3);
    assert.equal(l1EntriesNeeded(2 ** 30, 65536, true), 4);
  });

  for (const bits of WIDTHS) {
    test(`nonZeroRefcounts agrees with getRefcountEntry at ${bits} bits`, () => {
      const block = Buffer.alloc(512);
      const n = (512 * 8) / bits;
      const max = bits >= 53 ? 2 ** 53 - 1 : 2 ** bits - 1;
      for (let i = 0; i < n; i += 1 + (i % 7)) setRefcountEntry(block, i, bits, 1 + ((i * 31) % max));
      const expected = Array.from(
        { length: n },
        (_, i) => [i, getRefcountEntry(block, i, bits)] as [number, number],
      ).filter(([, v]) => v !== 0);
      assert.deepEqual([...nonZeroRefcounts(block, bits)], expected);
    });
  }

  test('nonZeroChunks leaves out exactly the all-zero 4 KiB chunks, from any start', () => {
    const buf = Buffer.alloc(5 * 4096 + 100);
    buf[4095] = 1; // last byte of chunk 0
    buf[3 * 4096] = 1; // first byte of chunk 3
    buf[5 * 4096 + 99] = 1; // last byte of the short tail
    assert.deepEqual(
      [...nonZeroChunks(buf)],
      [
        [0, 4096],
        [3 * 4096, 4 * 4096],
        [5 * 4096, 5 * 4096 + 100],
      ],
    );
    assert.deepEqual(
      [...nonZeroChunks(buf, 4000)],
      [
        [4000, 4096],
        [3 * 4096, 4 * 4096],
        [5 * 4096, 5 * 4096 + 100],
      ],
    );
    assert.deepEqual(
      [...nonZeroChunks(buf, 4096)],
      [
        [3 * 4096, 4 * 4096],
        [5 * 4096, 5 * 4096 + 100],
      ],
    );
    assert.deepEqual([...nonZeroChunks(Buffer.alloc(3 * 4096))], []);
  });

  for (const bits of WIDTHS) {
    test(`nonZeroRefcounts skips zero runs of a 64 KiB block but not the entries around them, at ${bits} bits`, () => {
      const block = Buffer.alloc(65536);
      const perByte = 8 / bits;
      // entries at the first and last byte of 4 KiB runs, one run apart, and the block's last
      const at = [0, 4095, 4096, 8191, 12288, 65535].map((byte) => Math.floor(byte * perByte));
      for (const i of at) setRefcountEntry(block, i, bits, 1);
      assert.deepEqual(
        [...nonZeroRefcounts(block, bits)],
        [...new Set(at)].map((i) => [i, 1]),
      );
    });
  }

  test('header extensions encode padded to 8 bytes and end with a zero marker', () => {
    const out = encodeHeaderExtensions([{ type: 0xe2792aca, data: Buffer.from('qcow2') }]);
    assert.deepEqual(
      [...out],
      [0xe2, 0x79, 0x2a, 0xca, 0, 0, 0, 5, ...Buffer.from('qcow2'), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
  });
});

describe('structure reader against qemu', () => {
  test("header extensions: qemu's feature name table, backing format; a rewrite keeps the image valid", async () => {
    const base = await image('', '4M', ['write -P 1 0 64k']);
    const p = scratchDir.path();
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', p]);
    const exts = await readHeaderExtensions(p);
    assert.deepEqual(
      exts.map((e) => e.name),
      ['backing-format', 'feature-name-table'],
    );
    assert.equal(exts[0]!.type, EXT_BACKING_FORMAT);
    assert.equal(exts[0]!.data.toString(), 'qcow2');
    const names = parseFeatureNameTable(exts[1]!.data);
    assert.deepEqual(names.slice(0, 2), [
      { type: 0, bit: 0, name: 'dirty bit' },
      { type: 0, bit: 1, name: 'corrupt bit' },
    ]);
    assert.ok(names.some((f) => f.type === 1 && f.bit === 0 && f.name === 'lazy refcounts'));
    // Drop the feature table: qemu still opens it, keeps the backing file and its format.
    assert.equal(await rewriteHeaderExtensions(p, (xs) => xs.filter((x) => x.type !== EXT_FEATURE_TABLE)), true);
    assert.deepEqual(
      (await readHeaderExtensions(p)).map((e) => e.name),
      ['backing-format'],
    );
    const i = await info(p);
    assert.equal(i['backing-filename'], base);
    assert.equal(i['backing-filename-format'], 'qcow2');
    assert.equal((await check(p)).exitCode, 0);
    assert.equal(await rewriteHeaderExtensions(p, (xs) => xs), false);
  });

  test('L1/L2 walk maps guest clusters to the host offsets qemu-img map reports', async () => {
    const p = await image('cluster_size=4096,refcount_bits=2', '8M', [
      'write -P 1 0 12k',
      'write -P 2 2M 8k',
      'write -z 4M 4k',
      'write -P 3 8188k 4k',
    ]);
    const cs = 4096;
    const mapped = new Map<number, number>();
    const map = JSON.parse((await execa('qemu-img', ['map', '--output=json', p])).stdout) as {
      start: number;
      length: number;
      data: boolean;
      offset?: number;
    }[];
    for (const e of map)
      if (e.data && e.offset !== undefined)
        for (let k = 0; k < e.length / cs; k++) mapped.set(e.start / cs + k, e.offset / cs + k);
    const walked = new Map<number, number>();
    await withQcow2(p, async (r) => {
      const l1 = await r.readL1Table();
      assert.equal(l1.length, 4); // 8M / (4K * 512 entries)
      for (const [i, raw] of l1.entries()) {
        const { offset, copied } = decodeL1Entry(raw);
        if (!offset) continue;
        assert.ok(copied);
        for (const [j, e] of (await r.readL2Entries(offset)).entries()) {
          if (e.type === 'normal') walked.set(i * 512 + j, e.offset / cs);
        }
      }
    });
    assert.equal(mapped.size, 6);
    assert.deepEqual(walked, mapped);
  });

  test('extended L2: subcluster bitmaps', async () => {
    const p = await image('extended_l2=on,cluster_size=16k', '1M', ['write -P 1 4k 4k', 'write -z 32k 16k']);
    await withQcow2(p, async (r) => {
      const entries = await r.readL2Entries(decodeL1Entry((await r.readL1Table())[0]!).offset);
      assert.equal(entries.length, 1024);
      // 512-byte subclusters: 4k..8k are subclusters 8-15; cluster 2 reads as zero without a host cluster.
      assert.deepEqual({ ...entries[0]!, offset: 0 }, { type: 'normal', offset: 0, copied: true, bitmap: 0xff00n });
      assert.deepEqual(entries[2], { type: 'unallocated', copied: false, bitmap: 0xffffffffn << 32n });
    });
  });

  test('snapshot table entries and their L1 tables', async () => {
    const p = await image('refcount_bits=16', '4M', ['write -P 1 0 64k']);
    await execa('qemu-img', ['snapshot', '-c', 'first', p]);
    await execa('qemu-img', ['resize', '-q', p, '8M']);
    await execa('qemu-img', ['snapshot', '-c', 'second-one', p]);
    await withQcow2(p, async (r) => {
      const { entries, size } = await r.readSnapshots();
      assert.deepEqual(
        entries.map((s) => [s.id, s.name, s.diskSize, s.l1Size, s.vmStateSize]),
        [
          ['1', 'first', 4 * 2 ** 20, 1, 0],
          ['2', 'second-one', 8 * 2 ** 20, 1, 0],
        ],
      );
      assert.equal(
        size,
        entries.reduce((n, s) => n + s.entryLength, 0),
      );
      assert.ok(entries.every((s) => s.entryLength % 8 === 0 && s.extraData.length >= 16));
      // Both snapshot L1 tables share the active L2 table: refcount 3.
      const active = decodeL1Entry((await r.readL1Table())[0]!).offset;
      for (const s of entries)
        assert.equal(decodeL1Entry((await r.readL1Table(s.l1TableOffset, s.l1Size))[0]!).offset, active);
      assert.equal(await r.refcountOf(active / r.header.clusterSize), 3);
    });
  });

  test('bitmaps extension and directory', async () => {
    const p = await image('', '4M');
    await execa('qemu-img', ['bitmap', '--add', '-g', '128k', p, 'dirty-1']);
    await execa('qemu-img', ['bitmap', '--add', '--disable', p, 'b2']);
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 64k', p]);
    await withQcow2(p, async (r) => {
      assert.equal(r.header.autoclearFeatures & AUTOCLEAR_BITMAPS, AUTOCLEAR_BITMAPS);
      assert.ok(r.extensions().some((e) => e.type === EXT_BITMAPS));
      const bm = await r.readBitmaps();
      assert.ok(bm);
      assert.equal(bm.extension.nbBitmaps, 2);
      assert.deepEqual(
        bm.directory.map((b) => [b.name, b.granularityBits, b.type, b.flags]),
        [
          ['dirty-1', 17, 1, 2], // auto (enabled)
          ['b2', 16, 1, 0],
        ],
      );
      // The enabled bitmap recorded the write: one allocated bitmap data cluster.
      const tables = await Promise.all(bm.directory.map((b) => r.readBitmapTable(b)));
      assert.deepEqual(
        tables.map((t) => t.filter((e) => e !== 0n).length),
        [1, 0],
      );
    });
  });
});

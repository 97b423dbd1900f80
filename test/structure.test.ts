// The structure oracle (oracles/structure.ts over qcow2/ structuralCheck) on real images
// built by qemu-img / qemu-io: silent on everything qemu builds and on qemu's own grow and shrink
// results, in agreement with `qemu-img check` on allocated clusters, and firing on images damaged
// on purpose, one kind of damage per test.
import assert from 'node:assert/strict';
import { copyFile, open, truncate, unlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { before, describe, test } from 'node:test';
import { execa } from 'execa';
import { scratch } from './scratch.ts';
import { EXT_BITMAPS, EXT_FEATURE_TABLE, HEADER_OFFSET, INCOMPAT_DIRTY } from '../qcow2/format.ts';
import { readQcow2Header, withQcow2, type Qcow2Reader } from '../qcow2/reader.ts';
import { structuralCheck, type StructureObservation } from '../qcow2/structure.ts';
import { decodeL1Entry } from '../qcow2/tables.ts';
import { rewriteHeaderExtensions, setRefcount as setStoredRefcount, writeBytes } from '../qcow2/edit.ts';
import { headerInconsistencies, structureOracle } from '../oracles/structure.ts';
import { signatureOf, type Finding } from '../oracles/finding.ts';

const KiB = 1024;
const MiB = 2 ** 20;
const scratchDir = scratch();
/** Half random, half zero per 64 KiB: compresses to a bit over half a cluster, so compressed
 * clusters straddle host cluster boundaries. Deterministic (xorshift), so failures reproduce. */
let halfRandom: string;
before(async () => {
  halfRandom = join(scratchDir.dir(), 'half-random.bin');
  const buf = Buffer.alloc(8 * 64 * KiB);
  let x = 0x9e3779b9;
  for (let c = 0; c < 8; c++) {
    for (let i = 0; i < 32 * KiB; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf[c * 64 * KiB + i] = x & 0xff;
    }
  }
  await writeFile(halfRandom, buf);
});

const image = scratchDir.image;

async function copy(path: string): Promise<string> {
  const to = scratchDir.path();
  await copyFile(path, to);
  return to;
}

interface CheckJson {
  'allocated-clusters'?: number;
  'compressed-clusters'?: number;
  corruptions?: number;
  leaks?: number;
}
async function check(path: string): Promise<{ exitCode: number; json: CheckJson }> {
  const r = await execa('qemu-img', ['check', '--output=json', path], { reject: false });
  return { exitCode: r.exitCode ?? -1, json: JSON.parse(r.stdout || '{}') as CheckJson };
}

type Readable = Extract<StructureObservation, { readable: true }>;
async function observe(path: string): Promise<Readable> {
  const o = await structuralCheck(path);
  assert.ok(o.readable, `readable: ${JSON.stringify(o)}`);
  return o;
}

const sigs = (fs: Finding[]) => fs.map(signatureOf);

/** The image is clean to qemu and to the oracle, and both count the same allocated clusters. */
async function assertSilent(path: string, label: string): Promise<Readable> {
  const o = await observe(path);
  assert.deepEqual(JSON.parse(JSON.stringify(o)), o, 'observations are plain JSON (reports store them)');
  assert.deepEqual(
    sigs(structureOracle(o, o)),
    [],
    `${label}: ${JSON.stringify(structureOracle(o, o).map((f) => f.message))}`,
  );
  const c = await check(path);
  assert.equal(c.exitCode, 0, `${label}: qemu-img check`);
  assert.equal(o.allocatedClusters, c.json['allocated-clusters'] ?? 0, `${label}: allocated-clusters`);
  assert.equal(o.compressedClusters, c.json['compressed-clusters'] ?? 0, `${label}: compressed-clusters`);
  assert.equal(o.storedClusters, o.referencedClusters, `${label}: stored and referenced clusters`);
  return o;
}

/** Silent on the image, and on qemu's grow and shrink results (each also compared with itself). */
async function assertSilentThroughResizes(path: string, grow: string[], shrink: string[]): Promise<void> {
  await assertSilent(path, 'base');
  for (const args of [grow, shrink]) {
    const p = await copy(path);
    await execa('qemu-img', ['resize', '-q', '-f', 'qcow2', ...args.slice(0, -1), p, args.at(-1)!]);
    const o = await assertSilent(p, args.join(' '));
    const base = await observe(path);
    // qemu keeps extensions and refcount order through a resize: no comparison finding either.
    assert.deepEqual(sigs(structureOracle(o, base)), [], args.join(' '));
  }
}

const WIDTHS = [1, 2, 4, 8, 16, 32, 64];
const DATA = (extra: string[] = []) => [
  'write -P 7 0 192k',
  'write -c -P 3 1M 128k', // compresses to a few bytes: several compressed clusters per host cluster
  'write -z 3M 64k', // zero flag, no host cluster
  'write -z 64k 64k', // zero flag over an allocated cluster: qemu keeps the host cluster
  'discard 0 64k',
  'write -P 9 12M 128k',
  ...extra,
];

describe("silent on qemu-built images and qemu's resizes; agrees with qemu-img check", { concurrency: 4 }, () => {
  for (const rb of WIDTHS) {
    test(`refcount_bits=${rb}, 64 KiB clusters, plain, zero, discarded and compressed clusters`, async () => {
      const p = await image(`refcount_bits=${rb}`, '16M', DATA([`write -c -s ${halfRandom} 2M 512k`]));
      const o = await observe(p);
      assert.ok(o.compressedClusters >= 10);
      await assertSilentThroughResizes(p, ['+5M'], ['--shrink', '1536K']);
    });
  }

  for (const [cs, rb, size, shrinkTo] of [
    [512, 64, '4M', '100K'],
    [512, 1, '3M', '77312'],
    [4096, 8, '16M', '5M'],
    [2 * MiB, 16, '64M', '3M'],
  ] as const) {
    test(`cluster_size=${cs}, refcount_bits=${rb}`, async () => {
      const io = ['write -P 1 0 100k', 'write -P 2 1M 64k', `write -c -P 5 2M ${Math.max(cs, 64 * KiB)}`];
      const p = await image(`cluster_size=${cs},refcount_bits=${rb}`, size, io);
      await assertSilentThroughResizes(p, ['+3M'], ['--shrink', shrinkTo]);
    });
  }

  for (const cs of [16 * KiB, 64 * KiB]) {
    test(`extended L2, cluster_size=${cs}: subclusters, zeroes, compressed`, async () => {
      const io = [
        'write -P 1 4k 4k',
        'write -P 2 1M 68k',
        'write -z 2M 128k',
        'write -c -P 3 3M 64k',
        'write -P 4 7M 512',
        'discard 1M 16k',
      ];
      const p = await image(`extended_l2=on,cluster_size=${cs},refcount_bits=4`, '8M', io);
      await assertSilentThroughResizes(p, ['+2M'], ['--shrink', '1032K']);
    });
  }

  test('compat=0.10 (version 2, no extensions)', async () => {
    const p = await image('compat=0.10', '8M', ['write -P 1 0 64k', 'write -c -P 2 4M 64k', 'write -P 3 7M 64k']);
    assert.deepEqual((await observe(p)).extensions, []);
    await assertSilentThroughResizes(p, ['+1M'], ['--shrink', '2M']);
  });

  test('lazy refcounts, and preallocated grows', async () => {
    const p = await image('lazy_refcounts=on,refcount_bits=8', '4M', ['write -P 1 0 64k', 'write -P 2 3M 64k']);
    await assertSilentThroughResizes(p, ['+2M'], ['--shrink', '1M']);
    for (const mode of ['metadata', 'falloc', 'full']) {
      const q = await copy(p);
      await execa('qemu-img', ['resize', '-q', '-f', 'qcow2', `--preallocation=${mode}`, q, '+3M']);
      await assertSilent(q, mode);
    }
  });

  for (const [rb, snaps] of [
    [2, 1],
    [16, 2],
    [64, 3],
  ] as const) {
    test(`refcount_bits=${rb} with ${snaps} internal snapshot(s) and copy-on-write after each`, async () => {
      const p = await image(`refcount_bits=${rb}`, '8M', [
        'write -P 1 0 128k',
        'write -c -P 2 1M 64k',
        'write -P 3 6M 64k',
      ]);
      for (let i = 0; i < snaps; i++) {
        await execa('qemu-img', ['snapshot', '-c', `s${i}`, p]);
        await execa('qemu-io', ['-f', 'qcow2', '-c', `write -P ${10 + i} ${i * 64}k 64k`, '-c', `write -P 9 6M 4k`, p]);
      }
      const o = await observe(p);
      assert.equal(o.snapshots, snaps);
      await assertSilentThroughResizes(p, ['+1M'], ['--shrink', '2M']);
    });
  }

  test('persistent dirty bitmaps (directory, tables and data clusters are refcounted)', async () => {
    const p = await image('refcount_bits=16', '8M');
    await execa('qemu-img', ['bitmap', '--add', '-g', '64k', p, 'b0']);
    await execa('qemu-img', ['bitmap', '--add', p, 'b1']);
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', '-c', 'write -P 2 7M 64k', p]);
    const o = await observe(p);
    assert.equal(o.bitmaps, 2);
    assert.ok(o.extensions.some((e) => e.type === EXT_BITMAPS));
    // 1 MiB at 0 and 64 KiB at 7 MiB dirty 16 + 1 chunks of 64 KiB in each enabled bitmap
    const bits = o.readable ? o.bitmapBits : undefined;
    assert.deepEqual(
      bits?.map((b) => [b.name, b.granularity, b.set, b.runs]),
      [
        ['b0', 65536, 17, '0-15,112'],
        ['b1', 65536, 17, '0-15,112'],
      ],
    );
    await assertSilentThroughResizes(p, ['+1M'], ['--shrink', '4M']);
  });

  for (const raw of [false, true]) {
    const name =
      `external data file${raw ? ' with data_file_raw' : ''}: ` + 'data clusters live in the data file, unrefcounted';
    test(name, async () => {
      // an absolute name: qemu-img 7.2 resolves a relative one against its working directory
      const data = scratchDir.path(`data-${raw ? 'raw' : 'plain'}.raw`);
      const io = ['write -P 1 0 100k', 'write -z 1M 64k', 'write -P 2 2M 64k', 'discard 2M 64k', 'write -P 3 3M 64k'];
      const p = await image(
        `data_file=${data}${raw ? ',data_file_raw=on' : ''},refcount_bits=2,cluster_size=4096`,
        '4M',
        io,
      );
      const o = await observe(p);
      assert.equal(o.fileLength < 4 * MiB, true, 'no guest data in the qcow2 file');
      assert.ok(o.extensions.some((e) => e.name === 'data-file' && e.content === Buffer.from(data).toString('hex')));
      await assertSilentThroughResizes(p, ['+1M'], ['--shrink', '1M']);
    });
  }

  test('backing file with a backing format extension', async () => {
    const base = await image('', '4M', ['write -P 1 0 1M']);
    const p = scratchDir.path();
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', p]);
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 64k 64k', p]);
    const o = await observe(p);
    // an absolute name below the image's own directory, as copies in other directories compare it
    assert.equal(o.backingFile, `<image dir>/${basename(base)}`);
    assert.ok(
      o.extensions.some((e) => e.name === 'backing-format' && e.content === Buffer.from('qcow2').toString('hex')),
    );
    await assertSilentThroughResizes(p, ['+1M'], ['--shrink', '1M']);
  });
});

// ----------------------------------------------------------------------------------------------

async function patch(path: string, offset: number, bytes: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}
const u32 = (n: number) => Buffer.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};

/** Host cluster of the first data cluster mapped at guest offset 0. */
async function firstDataCluster(path: string): Promise<number> {
  return withQcow2(path, async (r) => {
    const l2 = await r.readL2Entries(decodeL1Entry((await r.readL1Table())[0]!).offset);
    const e = l2[0]!;
    assert.equal(e.type, 'normal');
    return (e as { offset: number }).offset / r.header.clusterSize;
  });
}

async function setRefcount(path: string, cluster: number, value: number): Promise<void> {
  assert.ok(await setStoredRefcount(path, cluster, value));
}

/** The host offset of the first L2 table of an image. */
const firstL2 = (path: string) => withQcow2(path, async (r) => decodeL1Entry((await r.readL1Table())[0]!).offset);

/** Oracle findings for `path` judged against a pristine copy made before the damage. */
async function damaged(
  opts: string,
  damage: (p: string) => Promise<void>,
  io = ['write -P 7 0 128k', 'write -P 9 3M 64k'],
) {
  const ref = await image(opts, '4M', io);
  const p = await copy(ref);
  assert.deepEqual(sigs(structureOracle(await structuralCheck(p), await structuralCheck(ref))), [], 'pristine copy');
  await damage(p);
  return { path: p, ref, findings: structureOracle(await structuralCheck(p), await structuralCheck(ref)) };
}

describe('fires on damaged images', { concurrency: 4 }, () => {
  for (const rb of [1, 4, 16, 64]) {
    test(`refcount_bits=${rb}: refcount 0 on a data cluster is undercounted (and a stale COPIED flag)`, async () => {
      const { findings, path } = await damaged(`refcount_bits=${rb}`, async (p) =>
        setRefcount(p, await firstDataCluster(p), 0),
      );
      assert.deepEqual(sigs(findings), [
        'structure/refcount-mismatch/subject/undercounted:data',
        'structure/copied-flag-mismatch/subject/l2',
      ]);
      assert.equal((await check(path)).exitCode, 2);
    });
  }

  test('a referenced cluster at refcount 2 is overcounted, and COPIED no longer holds', async () => {
    const { findings } = await damaged('refcount_bits=8', async (p) => setRefcount(p, await firstDataCluster(p), 2));
    assert.deepEqual(sigs(findings), [
      'structure/refcount-mismatch/subject/overcounted:data',
      'structure/copied-flag-mismatch/subject/l2',
    ]);
  });

  test('a free cluster inside the file at refcount 1 is leaked, as qemu-img check says', async () => {
    const { findings, path } = await damaged('refcount_bits=2', async (p) => {
      const end = (await structuralCheck(p)) as Readable;
      const cluster = end.referencedClusters + 1;
      await truncate(p, (cluster + 1) * 65536);
      await setRefcount(p, cluster, 1);
    });
    assert.deepEqual(sigs(findings), ['structure/refcount-mismatch/subject/leaked:unreferenced']);
    assert.equal((await check(path)).exitCode, 3);
  });

  test('a leak past the end of the file, which qemu-img check does not see', async () => {
    const { findings, path } = await damaged('refcount_bits=16', async (p) => {
      const o = (await structuralCheck(p)) as Readable;
      await setRefcount(p, Math.ceil(o.fileLength / 65536) + 3, 1);
    });
    assert.deepEqual(sigs(findings), ['structure/refcount-mismatch/subject/leaked:unreferenced']);
    assert.equal((await check(path)).exitCode, 0);
  });

  test('a host cluster shared by compressed clusters loses one reference', async () => {
    const io = ['write -c -P 1 0 64k', 'write -c -P 2 64k 64k', 'write -c -P 3 128k 64k'];
    const { findings } = await damaged(
      'refcount_bits=4',
      async (p) => {
        const shared = await withQcow2(p, async (r) => {
          const counts = await r.readRefcounts();
          return [...counts].find(([, v]) => v === 3)?.[0];
        });
        assert.ok(shared !== undefined, 'three compressed clusters share one host cluster');
        await setRefcount(p, shared, 2);
      },
      io,
    );
    // named as data, however it is stored and shared; the evidence says compressed, shared
    assert.deepEqual(sigs(findings), ['structure/refcount-mismatch/subject/undercounted:data']);
  });

  test("a snapshot's shared cluster counted once", async () => {
    const { findings } = await damaged('refcount_bits=16', async (p) => {
      await execa('qemu-img', ['snapshot', '-c', 's', p]);
      await setRefcount(p, await firstDataCluster(p), 1);
    });
    // The snapshot cleared COPIED on the shared entry; with refcount 1 stored, qemu-img check calls
    // that a corruption too. The image compared with has no snapshot: its table differs.
    assert.deepEqual(sigs(findings), [
      'structure/refcount-mismatch/subject/undercounted:data',
      'structure/copied-flag-mismatch/subject/l2',
      'structure/snapshot-table-differs/subject/entries',
    ]);
  });

  test('COPIED flags: cleared on an active L1 entry, set on a compressed L2 entry', async () => {
    const flip = async (p: string, where: (r: Qcow2Reader) => Promise<number>, bit: bigint) => {
      const { at, raw } = await withQcow2(p, async (r) => {
        const at = await where(r);
        return { at, raw: (await r.read(at, 8)).readBigUInt64BE() };
      });
      await writeBytes(p, at, u64(raw ^ bit));
    };
    const l1 = await damaged('', (p) => flip(p, async (r) => r.header.l1TableOffset, 1n << 63n));
    assert.deepEqual(sigs(l1.findings), ['structure/copied-flag-mismatch/subject/l1']);
    assert.equal((await check(l1.path)).exitCode, 2);
    const l2Entry0 = async (r: Qcow2Reader) => decodeL1Entry((await r.readL1Table())[0]!).offset;
    const compressed = await damaged('', (p) => flip(p, l2Entry0, 1n << 63n), ['write -c -P 1 0 64k']);
    assert.deepEqual(sigs(compressed.findings), ['structure/copied-flag-mismatch/subject/compressed']);
    assert.equal((await check(compressed.path)).exitCode, 2);
  });

  test('an L1 entry pointing into the middle of a cluster; an oversized refcount table', async () => {
    const { findings } = await damaged('', async (p) => {
      const { at, raw } = await withQcow2(p, async (r) => ({
        at: r.header.l1TableOffset,
        raw: (await r.read(r.header.l1TableOffset, 8)).readBigUInt64BE(),
      }));
      await writeBytes(p, at, u64(raw + 512n));
    });
    // The real L2 table is now referenced by nothing.
    assert.deepEqual(sigs(findings), [
      'structure/metadata-invalid/subject/l2-offset',
      'structure/refcount-mismatch/subject/leaked:unreferenced',
    ]);
    const big = await damaged('', (p) => patch(p, HEADER_OFFSET.refcountTableClusters, u32(2 ** 20)));
    assert.equal(sigs(big.findings)[0], 'structure/header-inconsistent/subject/refcount_table_clusters');
    assert.ok(sigs(big.findings).includes('structure/metadata-invalid/subject/refcount-table'));
  });

  test('l1_size too small for the virtual size', async () => {
    const { findings } = await damaged('cluster_size=512', (p) => patch(p, HEADER_OFFSET.l1Size, u32(2)));
    assert.equal(sigs(findings)[0], 'structure/header-inconsistent/subject/l1_size');
  });

  test('refcount table past the end of the file', async () => {
    const { findings } = await damaged('', (p) => patch(p, HEADER_OFFSET.refcountTableClusters, u32(40)));
    assert.equal(sigs(findings)[0], 'structure/header-inconsistent/subject/refcount_table_clusters');
    const moved = await damaged('', (p) => patch(p, HEADER_OFFSET.refcountTableOffset, u64(64n * 65536n)));
    assert.equal(sigs(moved.findings)[0], 'structure/header-inconsistent/subject/refcount_table_offset');
  });

  test('compression type without its feature bit, unknown incompatible bits', async () => {
    const { findings } = await damaged('', (p) => patch(p, HEADER_OFFSET.compressionType, Buffer.from([1])));
    assert.equal(sigs(findings)[0], 'structure/header-inconsistent/subject/compression_type');
    const unknown = await damaged('', (p) => patch(p, HEADER_OFFSET.incompatibleFeatures, u64(1n << 40n)));
    assert.equal(sigs(unknown.findings)[0], 'structure/header-inconsistent/subject/incompatible_features');
  });

  test("refcount order differs from qemu's result", async () => {
    const io = ['write -P 7 0 64k'];
    const ref = await image('refcount_bits=16', '4M', io);
    const sub = await image('refcount_bits=4', '4M', io);
    assert.deepEqual(sigs(structureOracle(await structuralCheck(sub), await structuralCheck(ref))), [
      'structure/refcount-order-changed/subject/refcount_order',
    ]);
  });

  test('header extensions lost, changed, added', async () => {
    const lost = await damaged('', (p) =>
      rewriteHeaderExtensions(p, (xs) => xs.filter((x) => x.type !== EXT_FEATURE_TABLE)).then(() => {}),
    );
    assert.deepEqual(sigs(lost.findings), ['structure/extension-lost/subject/feature-name-table']);
    const changed = await damaged('', async (p) => {
      await rewriteHeaderExtensions(p, (xs) =>
        xs.map((x) => (x.type === EXT_FEATURE_TABLE ? { ...x, data: x.data.subarray(48) } : x)),
      );
    });
    assert.deepEqual(sigs(changed.findings), ['structure/extension-changed/subject/feature-name-table']);
    const added = await damaged('', async (p) => {
      await rewriteHeaderExtensions(p, (xs) => [...xs, { ...xs[0]!, type: 0x12345678, data: Buffer.from('hello') }]);
    });
    assert.deepEqual(sigs(added.findings), ['structure/extension-added/subject/unknown-0x12345678']);
    const twice = await damaged('', async (p) => {
      await rewriteHeaderExtensions(p, (xs) => [...xs, ...xs]);
    });
    assert.deepEqual(sigs(twice.findings), [
      'structure/header-inconsistent/subject/header-extensions',
      'structure/extension-changed/subject/feature-name-table',
    ]);
  });

  test('bitmaps extension dropped while the autoclear bit stays', async () => {
    const ref = await image('', '4M');
    await execa('qemu-img', ['bitmap', '--add', ref, 'b0']);
    const p = await copy(ref);
    await rewriteHeaderExtensions(p, (xs) => xs.filter((x) => x.type !== EXT_BITMAPS));
    const findings = structureOracle(await structuralCheck(p), await structuralCheck(ref));
    // The bitmap clusters are now referenced by nothing, too.
    assert.deepEqual(sigs(findings), [
      'structure/header-inconsistent/subject/autoclear_features',
      'structure/refcount-mismatch/subject/leaked:unreferenced',
      // the whole directory is gone, not an extension alone: named as the structure dropped
      'structure/structure-dropped/subject/bitmap-directory',
    ]);
  });

  test('a shrink that only rewrites the size field leaves mappings past the end', async () => {
    const { findings, path } = await damaged('refcount_bits=1', (p) =>
      patch(p, HEADER_OFFSET.size, u64(2n * 2n ** 20n)),
    );
    assert.deepEqual(sigs(findings), ['structure/mapping-beyond-end/subject/l2']);
    assert.equal((await check(path)).exitCode, 0, 'qemu-img check sees nothing wrong');
    const wide = await damaged('cluster_size=512', (p) => patch(p, HEADER_OFFSET.size, u64(64n * 1024n)));
    assert.deepEqual(sigs(wide.findings), ['structure/mapping-beyond-end/subject/l1,l2']);
  });

  test('a file cut short: referenced clusters past the end', async () => {
    const { findings } = await damaged('', async (p) => {
      const o = (await structuralCheck(p)) as Readable;
      await truncate(p, o.fileLength - 65536);
    });
    assert.deepEqual(sigs(findings), ['structure/beyond-eof/subject/data']);
  });

  const damages = 'a host offset other than the guest offset, a compressed cluster, a missing name';
  test(`external data file: ${damages}`, async () => {
    const data = scratchDir.path('data-damaged.raw');
    const opts = `data_file=${data}`;
    const io = ['write -P 7 0 64k', 'write -P 9 1M 64k'];
    // guest cluster 0 pointed at the data of guest cluster 16: qemu-img check does not look, qemu
    // marks the image corrupt when it reads there
    const moved = await damaged(
      opts,
      async (p) => {
        await writeBytes(p, await firstL2(p), u64((1n << 63n) | BigInt(MiB)));
      },
      io,
    );
    assert.deepEqual(sigs(moved.findings), ['structure/metadata-invalid/subject/data-file-offset']);
    assert.equal((await check(moved.path)).exitCode, 0);
    const compressed = await damaged(
      opts,
      async (p) => {
        await writeBytes(p, await firstL2(p), u64(1n << 62n));
      },
      io,
    );
    // the descriptor also points into the qcow2 file itself (its header cluster, here)
    assert.deepEqual(sigs(compressed.findings), [
      'structure/metadata-invalid/subject/data-file-compressed',
      'structure/refcount-mismatch/subject/undercounted:header',
    ]);
    const unnamed = await damaged(
      opts,
      (p) => rewriteHeaderExtensions(p, (xs) => xs.filter((x) => x.name !== 'data-file')).then(() => {}),
      io,
    );
    assert.deepEqual(sigs(unnamed.findings), [
      'structure/header-inconsistent/subject/incompatible_features',
      'structure/structure-dropped/subject/data-file',
    ]);
  });

  test('unreadable: missing, empty, not qcow2', async () => {
    const { path, ref } = await damaged('', (p) => unlink(p));
    const r = await structuralCheck(ref);
    assert.deepEqual(sigs(structureOracle(await structuralCheck(path), r)), ['structure/unreadable/subject/missing']);
    await writeFile(path, '');
    assert.deepEqual(sigs(structureOracle(await structuralCheck(path), r)), ['structure/unreadable/subject/not-qcow2']);
    await execa('qemu-img', ['create', '-q', '-f', 'raw', path, '1M']);
    assert.deepEqual(sigs(structureOracle(await structuralCheck(path), null)), [
      'structure/unreadable/subject/not-qcow2',
    ]);
    assert.deepEqual(sigs(structureOracle(r, await structuralCheck(path))), [
      'structure/unreadable/reference/not-qcow2',
    ]);
  });

  test("damage in qemu's result is reported on the reference side", async () => {
    const ref = await image('refcount_bits=16', '4M', ['write -P 1 0 64k']);
    const sub = await copy(ref);
    await setRefcount(ref, await firstDataCluster(ref), 0);
    assert.deepEqual(sigs(structureOracle(await structuralCheck(sub), await structuralCheck(ref))), [
      'structure/refcount-mismatch/reference/undercounted:data',
      'structure/copied-flag-mismatch/reference/l2',
    ]);
  });

  test('dirty (lazy refcounts): refcounts are not judged, the header still is', async () => {
    const { findings, path } = await damaged('lazy_refcounts=on', async (p) => {
      await setRefcount(p, await firstDataCluster(p), 0);
      await patch(p, HEADER_OFFSET.incompatibleFeatures, u64(INCOMPAT_DIRTY));
    });
    assert.deepEqual(sigs(findings), []);
    assert.equal((await observe(path)).refcountsChecked, false);
    await patch(path, HEADER_OFFSET.l1Size, u32(0));
    assert.deepEqual(headerInconsistencies(await observe(path)), ['l1_size']);
    assert.equal((await readQcow2Header(path)).incompatibleFeatures, INCOMPAT_DIRTY);
  });
});

// Tests of the instar test doubles (test/doubles/instar-*) with real qemu-img: each fault fires in
// one scenario and stays silent in another, so the harness's oracles can be tested against them.
import assert from 'node:assert/strict';
import { copyFile, mkdir, open, readFile, readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { scratch } from './scratch.ts';
import { COMPAT_LAZY_REFCOUNTS } from '../qcow2/format.ts';
import { readQcow2Header } from '../qcow2/reader.ts';
import { structuralCheck } from '../qcow2/structure.ts';
import { readHeaderExtensions } from '../qcow2/edit.ts';
import { checkOracle, parseCheck } from '../oracles/check.ts';
import { contentOracle } from '../oracles/content.ts';
import { infoOracle, parseInfo } from '../oracles/info.ts';
import { structureOracle } from '../oracles/structure.ts';
import { signatureOf } from '../oracles/finding.ts';
import { FAULT_NAMES } from './doubles/faults.ts';
import { fuzzCli, instarDouble, readReportIn, readSummary, reportsDir, runRepro } from './helpers.ts';

const DOUBLES = join(dirname(fileURLToPath(import.meta.url)), 'doubles');
const MiB = 2 ** 20;
const scratchDir = scratch();

/** The bug #365 repro image: data at 0 and 12M in a 16M image, plus extra `-o` options. */
async function image(opts = 'refcount_bits=16', io = ['write -P 7 0 64k', 'write -P 9 12M 128k']): Promise<string> {
  const path = scratchDir.path();
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', opts, path, '16M']);
  if (io.length > 0) await execa('qemu-io', ['-f', 'qcow2', ...io.flatMap((c) => ['-c', c]), path]);
  return path;
}

/** Runs a double from an unrelated cwd (the wrappers must not depend on it). */
interface Run {
  exitCode: number | undefined;
  signal: string | undefined;
  stdout: string;
  stderr: string;
}
async function instar(fault: string, args: string[], opts: { timeout?: number } = {}): Promise<Run> {
  const r = await execa(join(DOUBLES, `instar-${fault}`), args, { reject: false, cwd: scratchDir.dir(), ...opts });
  return { exitCode: r.exitCode, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Runs qemu-img resize on a copy: the reference result for the same request. */
async function reference(path: string, args: string[]): Promise<string> {
  const copy = `${path}.ref`;
  await copyFile(path, copy);
  await execa('qemu-img', ['resize', '-q', '-f', 'qcow2', ...args.map((a) => (a === path ? copy : a))]);
  return copy;
}

async function checkCode(path: string): Promise<number> {
  return (await execa('qemu-img', ['check', path], { reject: false })).exitCode ?? -1;
}

async function compare(a: string, b: string): Promise<number> {
  return (await execa('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', a, b], { reject: false })).exitCode ?? -1;
}

const vsize = async (p: string): Promise<number> => (await readQcow2Header(p)).size;

async function checkObservation(path: string) {
  const r = await execa('qemu-img', ['check', '--output=json', path], { reject: false });
  return parseCheck(r.exitCode ?? null, r.stdout, r.stderr);
}

async function infoJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse((await execa('qemu-img', ['info', '--output=json', path])).stdout) as Record<string, unknown>;
}

describe('instar doubles', { concurrency: 6 }, () => {
  test('one executable wrapper per fault, and every wrapper runs its own fault', async () => {
    const wrappers = (await readdir(DOUBLES)).filter((f) => f.startsWith('instar-') && !f.endsWith('.ts'));
    // wrappers of several faults at once (INSTAR_DOUBLE_FAULT=a+b), or of instar's real command
    // line (INSTAR_DOUBLE_CLI=real), are named freely
    const combined = new Map<string, string>();
    for (const n of wrappers) {
      const text = await readFile(join(DOUBLES, n), 'utf8');
      const fault = /INSTAR_DOUBLE_FAULT=(\S+)/.exec(text)?.[1] ?? '';
      if (fault.includes('+') || text.includes('INSTAR_DOUBLE_CLI=')) combined.set(n, fault);
    }
    for (const [n, fault] of combined) {
      assert.ok(
        fault.split('+').every((f) => (FAULT_NAMES as string[]).includes(f)),
        `${n}: ${fault}`,
      );
      assert.equal(
        (await instar(n.slice('instar-'.length), ['--version'])).stdout,
        `instar-double 0.1 (fault: ${fault})`,
      );
    }
    const names = wrappers.filter((n) => !combined.has(n));
    // faults of instar's real command line have only their instar-real-<fault> wrapper
    const realOnly = [...combined].filter(([n]) => n === `instar-real-${combined.get(n)}`).map(([, f]) => f);
    assert.deepEqual([...names.map((n) => n.slice('instar-'.length)), ...realOnly].sort(), [...FAULT_NAMES].sort());
    const template = await readFile(join(DOUBLES, 'instar-none'), 'utf8');
    await Promise.all(
      names.map(async (n) => {
        const fault = n.slice('instar-'.length);
        assert.ok(((await stat(join(DOUBLES, n))).mode & 0o111) !== 0, `${n} is executable`);
        assert.equal(
          await readFile(join(DOUBLES, n), 'utf8'),
          template.replace('INSTAR_DOUBLE_FAULT=none', `INSTAR_DOUBLE_FAULT=${fault}`),
        );
        const r = await instar(fault, ['--version']);
        assert.equal(r.exitCode, 0);
        assert.equal(r.stdout, `instar-double 0.1 (fault: ${fault})`);
      }),
    );
  });

  test('usage errors exit 1, unknown fault exits 2', async () => {
    const p = await image();
    for (const args of [[], ['info', p], ['resize', p], ['resize', '--bogus', p, '8M'], ['resize', '-f']]) {
      const r = await instar('none', args);
      assert.equal(r.exitCode, 1, args.join(' '));
      assert.match(r.stderr, /^instar-double: /);
    }
    const r = await execa('node', ['--import', 'tsx', join(DOUBLES, 'instar-double.ts'), '--version'], {
      reject: false,
      env: { INSTAR_DOUBLE_FAULT: 'no-such-fault' },
    });
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /unknown INSTAR_DOUBLE_FAULT 'no-such-fault'/);
  });

  test('none: byte-identical to qemu-img for shrink (negative relative size), grow, refusal', async () => {
    const p = await image('refcount_bits=1');
    const ref = await reference(p, ['--shrink', p, '-8M']);
    const r = await instar('none', ['resize', '--shrink', '-f', 'qcow2', p, '-8M']);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'Image resized.');
    assert.deepEqual(await readFile(p), await readFile(ref));
    assert.equal(await checkCode(p), 0);

    const g = await image('refcount_bits=4');
    const gref = await reference(g, [g, '+1.5M']);
    const rg = await instar('none', ['resize', '--preallocation', 'off', '-q', g, '+1.5M']);
    assert.equal(rg.exitCode, 0);
    assert.equal(rg.stdout, '');
    assert.deepEqual(await readFile(g), await readFile(gref));

    const before = await readFile(g);
    const refused = await instar('none', ['resize', g, '4M']);
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /--shrink/);
    assert.deepEqual(await readFile(g), before);
  });

  test('none: --output json and --preallocation=MODE', async () => {
    const p = await image();
    const r = await instar('none', ['resize', '--output', 'json', '--preallocation=off', p, '20M']);
    assert.equal(r.exitCode, 0);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(
      { ...j, new_file_size: undefined },
      {
        filename: p,
        format: 'qcow2',
        action: 'grow',
        old_virtual_size: 16 * MiB,
        new_virtual_size: 20 * MiB,
        new_file_size: undefined,
      },
    );
    assert.equal(j.new_file_size, (await stat(p)).size);
  });

  test('365-stride: corrupts sub-byte shrinks only', async () => {
    for (const rb of [1, 2, 4]) {
      const p = await image(`refcount_bits=${rb}`);
      const r = await instar('365-stride', ['resize', '--shrink', p, '8M']);
      assert.equal(r.exitCode, 0, `rb=${rb}`);
      assert.equal(await vsize(p), 8 * MiB);
      assert.equal(await checkCode(p), 2, `rb=${rb} must be corrupt`);
    }
    // Silent: 16-bit refcounts, a sub-byte grow, and the faithful double on the same shrink.
    const wide = await image('refcount_bits=16');
    assert.equal((await instar('365-stride', ['resize', '--shrink', wide, '8M'])).exitCode, 0);
    assert.equal(await checkCode(wide), 0);
    const grow = await image('refcount_bits=1');
    assert.equal((await instar('365-stride', ['resize', grow, '32M'])).exitCode, 0);
    assert.equal(await checkCode(grow), 0);
    const none = await image('refcount_bits=1');
    assert.equal((await instar('none', ['resize', '--shrink', none, '8M'])).exitCode, 0);
    assert.equal(await checkCode(none), 0);
  });

  test('msb-first: corrupts sub-byte resizes unless every byte is uniform', async () => {
    // 7 clusters in use (header, reftable, refblock, L1, L2, 2 data): a partial byte at every width.
    for (const rb of [1, 2, 4]) {
      const p = await image(`refcount_bits=${rb}`, ['write -P 7 0 128k']);
      assert.equal((await instar('msb-first', ['resize', p, '+1M'])).exitCode, 0);
      assert.equal(await checkCode(p), 2, `rb=${rb} must be corrupt`);
    }
    // Silent: 16-bit; same size; and the subtle case (8 clusters at 1 bit: one 0xFF byte).
    const wide = await image('refcount_bits=16', ['write -P 7 0 128k']);
    assert.equal((await instar('msb-first', ['resize', wide, '+1M'])).exitCode, 0);
    assert.equal(await checkCode(wide), 0);
    const same = await image('refcount_bits=1', ['write -P 7 0 128k']);
    assert.equal((await instar('msb-first', ['resize', same, '16M'])).exitCode, 0);
    assert.equal(await checkCode(same), 0);
    const uniform = await image('refcount_bits=1');
    assert.equal((await instar('msb-first', ['resize', uniform, '+1M'])).exitCode, 0);
    assert.equal(await checkCode(uniform), 0);
  });

  test('refuse-unaligned-shrink: refuses unaligned shrinks only', async () => {
    const p = await image();
    const before = await readFile(p);
    const r = await instar('refuse-unaligned-shrink', ['resize', '--shrink', p, `${8 * MiB + 512}`]);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /cluster size/);
    assert.deepEqual(await readFile(p), before);
    // qemu accepts it.
    await reference(p, ['--shrink', p, `${8 * MiB + 512}`]);
    // Silent: aligned shrink, unaligned grow.
    assert.equal((await instar('refuse-unaligned-shrink', ['resize', '--shrink', p, '8M'])).exitCode, 0);
    assert.equal((await instar('refuse-unaligned-shrink', ['resize', p, '+512'])).exitCode, 0);
    assert.equal(await vsize(p), 8 * MiB + 512);
  });

  test('touch-on-refusal: appends 512 bytes when qemu-img refuses', async () => {
    const p = await image();
    const size = (await stat(p)).size;
    const r = await instar('touch-on-refusal', ['resize', p, '8M']);
    assert.equal(r.exitCode, 1);
    assert.equal((await stat(p)).size, size + 512);
    assert.equal(await vsize(p), 16 * MiB);
    // Silent on success: identical to qemu-img.
    const q = await image();
    const ref = await reference(q, ['--shrink', q, '8M']);
    assert.equal((await instar('touch-on-refusal', ['resize', '--shrink', q, '8M'])).exitCode, 0);
    assert.deepEqual(await readFile(q), await readFile(ref));
  });

  test('drop-lazy-refcounts: clears lazy_refcounts after a successful resize', async () => {
    const lazyInfo = async (p: string): Promise<boolean> =>
      JSON.parse((await execa('qemu-img', ['info', '--output=json', p])).stdout)['format-specific'].data[
        'lazy-refcounts'
      ];
    const p = await image('lazy_refcounts=on');
    assert.equal(await lazyInfo(p), true);
    const ref = await reference(p, [p, '+1M']);
    assert.equal((await instar('drop-lazy-refcounts', ['resize', p, '+1M'])).exitCode, 0);
    assert.equal((await readQcow2Header(p)).compatibleFeatures & COMPAT_LAZY_REFCOUNTS, 0n);
    assert.equal(await lazyInfo(p), false);
    assert.equal(await checkCode(p), 0);
    assert.equal(await compare(p, ref), 0);
    // Silent on refusal.
    const q = await image('lazy_refcounts=on');
    assert.equal((await instar('drop-lazy-refcounts', ['resize', q, '8M'])).exitCode, 1);
    assert.equal(await lazyInfo(q), true);
  });

  test('stale-grow-tail: 0xa5 at the old end after a grow', async () => {
    const p = await image();
    const ref = await reference(p, [p, '17M']);
    assert.equal((await instar('stale-grow-tail', ['resize', p, '17M'])).exitCode, 0);
    assert.equal(await vsize(p), 17 * MiB);
    assert.equal(await compare(p, ref), 1);
    const read = await execa('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xa5 16M 512', p], { reject: false });
    assert.equal(read.exitCode, 0);
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);
    assert.equal(await checkCode(p), 0);
    // Silent on a shrink.
    const q = await image();
    const qref = await reference(q, ['--shrink', q, '8M']);
    assert.equal((await instar('stale-grow-tail', ['resize', '--shrink', q, '8M'])).exitCode, 0);
    assert.equal(await compare(q, qref), 0);
  });

  test('crash-on-shrink: SIGSEGV before touching the image on any shrink request', async () => {
    const p = await image();
    const before = await readFile(p);
    for (const size of ['-1M', '8M', '15.5M', '-512', '1024K']) {
      const r = await instar('crash-on-shrink', ['resize', '--shrink', p, size]);
      assert.equal(r.signal, 'SIGSEGV', size);
      assert.deepEqual(await readFile(p), before);
    }
    // Silent on grow and same-size requests.
    assert.equal((await instar('crash-on-shrink', ['resize', p, '16M'])).exitCode, 0);
    assert.equal((await instar('crash-on-shrink', ['resize', p, '+0.5M'])).exitCode, 0);
    assert.equal(await vsize(p), 16.5 * MiB);
  });

  test('hang-on-grow: hangs with a child process; the group kill ends both', async () => {
    const p = await image();
    const before = await readFile(p);
    const proc = execa(join(DOUBLES, 'instar-hang-on-grow'), ['resize', p, '+1M'], { reject: false, detached: true });
    const pid = proc.pid;
    assert.ok(pid !== undefined);
    const childOf = async (ppid: number): Promise<number | undefined> => {
      for (const d of await readdir('/proc')) {
        const st = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
        const [, comm, , parent] = /^\d+ \((.*)\) (\S) (\d+)/.exec(st) ?? [];
        if (comm === 'sleep' && Number(parent) === ppid) return Number(d);
      }
      return undefined;
    };
    let sleepPid: number | undefined;
    try {
      for (let i = 0; i < 100 && sleepPid === undefined; i++) {
        await new Promise((r) => setTimeout(r, 50));
        sleepPid = await childOf(pid);
      }
      assert.ok(sleepPid !== undefined, 'sleep child spawned');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(proc.exitCode, null, 'still running');
    } finally {
      process.kill(-pid, 'SIGKILL'); // the whole process group, as the harness does
    }
    const r = await proc;
    assert.equal(r.signal, 'SIGKILL');
    const state = await readFile(`/proc/${sleepPid}/stat`, 'utf8').catch(() => '');
    assert.ok(state === '' || / Z /.test(state), 'sleep child is gone');
    assert.deepEqual(await readFile(p), before);
    // Silent on a shrink.
    assert.equal((await instar('hang-on-grow', ['resize', '--shrink', p, '8M'], { timeout: 10_000 })).exitCode, 0);
  });
  test("leak-on-shrink: one free cluster marked used after a shrink; qemu's result is clean", async () => {
    const p = await image('refcount_bits=4');
    const ref = await reference(p, ['--shrink', p, '8M']);
    const r = await instar('leak-on-shrink', ['resize', '--shrink', p, '8M']);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'Image resized.');
    assert.equal(await vsize(p), 8 * MiB);
    const sub = await checkObservation(p);
    assert.equal(sub.exitCode, 3);
    assert.equal(sub.report?.leaks, 1);
    assert.equal(await checkCode(ref), 0);
    assert.equal(await compare(p, ref), 0);
    assert.deepEqual(checkOracle(sub, await checkObservation(ref)).map(signatureOf), [
      'check/leaks/subject/leaked:unreferenced',
    ]);
    assert.deepEqual(structureOracle(await structuralCheck(p), await structuralCheck(ref)).map(signatureOf), [
      'structure/refcount-mismatch/subject/leaked:unreferenced',
    ]);
    // Silent: a grow, and a refusal.
    const g = await image('refcount_bits=4');
    const gref = await reference(g, [g, '20M']);
    assert.equal((await instar('leak-on-shrink', ['resize', g, '20M'])).exitCode, 0);
    assert.deepEqual(await readFile(g), await readFile(gref));
    const before = await readFile(g);
    assert.equal((await instar('leak-on-shrink', ['resize', g, '8M'])).exitCode, 1);
    assert.deepEqual(await readFile(g), before);
  });

  test('drop-feature-table: only the structure oracle sees it; check, info and compare do not', async () => {
    for (const args of [['--shrink', '8M'], ['+3M']]) {
      const p = await image('refcount_bits=2,lazy_refcounts=on');
      const ref = await reference(p, [...args.slice(0, -1), p, args.at(-1)!]);
      const r = await instar('drop-feature-table', ['resize', ...args.slice(0, -1), p, args.at(-1)!]);
      assert.equal(r.exitCode, 0, args.join(' '));
      assert.deepEqual(
        (await readHeaderExtensions(ref)).map((e) => e.name),
        ['feature-name-table'],
      );
      assert.deepEqual(
        (await readHeaderExtensions(p)).map((e) => e.name),
        [],
      );
      // qemu-img check: clean. qemu-img info: the whole JSON equal but for the file name and the
      // allocated size on the host (copies of one image differ in that already).
      const sub = await checkObservation(p);
      assert.equal(sub.exitCode, 0);
      assert.deepEqual(checkOracle(sub, null), []);
      const [si, ri] = [await infoJson(p), await infoJson(ref)];
      assert.deepEqual({ ...si, filename: '', 'actual-size': 0 }, { ...ri, filename: '', 'actual-size': 0 });
      assert.deepEqual(infoOracle(parseInfo(0, JSON.stringify(ri), ''), parseInfo(0, JSON.stringify(si), '')), []);
      // qemu-img compare: identical, same virtual size.
      const cmp = await execa('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ref, p], { reject: false });
      assert.deepEqual(
        contentOracle({
          exitCode: cmp.exitCode ?? null,
          stdout: cmp.stdout,
          stderr: cmp.stderr,
          referenceSize: ri['virtual-size'] as number,
          subjectSize: si['virtual-size'] as number,
        }),
        [],
      );
      assert.deepEqual(structureOracle(await structuralCheck(p), await structuralCheck(ref)).map(signatureOf), [
        'structure/extension-lost/subject/feature-name-table',
      ]);
    }
    // Silent: same size, a refusal, and a v2 image (which has no feature name table).
    const same = await image();
    assert.equal((await instar('drop-feature-table', ['resize', same, '16M'])).exitCode, 0);
    assert.deepEqual(
      (await readHeaderExtensions(same)).map((e) => e.name),
      ['feature-name-table'],
    );
    assert.equal((await instar('drop-feature-table', ['resize', same, '8M'])).exitCode, 1);
    assert.deepEqual(
      (await readHeaderExtensions(same)).map((e) => e.name),
      ['feature-name-table'],
    );
    const v2 = await image('compat=0.10');
    const v2ref = await reference(v2, ['--shrink', v2, '8M']);
    assert.equal((await instar('drop-feature-table', ['resize', '--shrink', v2, '8M'])).exitCode, 0);
    assert.deepEqual(await readFile(v2), await readFile(v2ref));
  });

  test('every double refuses backing images and external data files, in the words instar uses', async () => {
    const backing = await image();
    const backed = scratchDir.path();
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', backed, '16M']);
    const data = await image(`data_file=${scratchDir.path('refused-data.raw')}`, []);
    for (const [p, why] of [
      [backed, /^Error: "resize: qcow2 images with a backing file are not yet supported/],
      [data, /^Error: "resize: guest reported error 5: format does not support resize"/],
    ] as const) {
      for (const fault of ['none', '365-stride']) {
        const before = await readFile(p);
        const r = await instar(fault, ['resize', p, '+1M']);
        assert.equal(r.exitCode, 1, fault);
        assert.match(r.stderr, why);
        assert.deepEqual(await readFile(p), before, 'untouched');
      }
    }
  });

  const tailAfterShrink = "qemu's qcow2 file and guest view after a shrink; the old bytes come back at a later grow";
  test(`keep-data-file-tail: ${tailAfterShrink}`, async () => {
    // each image in a directory of its own with a relative data file name, as the harness lays
    // them out: qemu-img 7.2 resolves it against the working directory
    const side = async (name: string) => {
      const dir = join(scratchDir.dir(), name);
      await mkdir(dir);
      await execa(
        'qemu-img',
        ['create', '-q', '-f', 'qcow2', '-o', 'data_file=data.raw,data_file_raw=on', 'img.qcow2', '4M'],
        { cwd: dir },
      );
      await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 0 64k', '-c', 'write -P 9 3M 64k', 'img.qcow2'], {
        cwd: dir,
      });
      return dir;
    };
    const [ref, sub, plain] = [await side('kdt-ref'), await side('kdt-sub'), await side('kdt-none')];
    await execa('qemu-img', ['resize', '-q', '-f', 'qcow2', '--shrink', 'img.qcow2', '1M'], { cwd: ref });
    const r = await execa(
      join(DOUBLES, 'instar-keep-data-file-tail'),
      ['resize', '--shrink', '-f', 'qcow2', 'img.qcow2', '1M'],
      { cwd: sub, reject: false },
    );
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'Image resized.');
    // the qcow2 file is qemu's byte for byte: check, info and the structure oracle see nothing
    assert.deepEqual(await readFile(join(sub, 'img.qcow2')), await readFile(join(ref, 'img.qcow2')));
    assert.equal((await execa('qemu-img', ['check', '-q', 'img.qcow2'], { cwd: sub, reject: false })).exitCode, 0);
    // only the data file keeps its old length, and its bytes past the new end
    assert.equal((await stat(join(ref, 'data.raw'))).size, 1 * MiB);
    assert.equal((await stat(join(sub, 'data.raw'))).size, 4 * MiB);
    const compare = () =>
      execa(
        'qemu-img',
        [
          'compare',
          '--image-opts',
          ...[ref, sub].map((d) => `driver=qcow2,file.filename=${d}/img.qcow2,data-file.filename=${d}/data.raw`),
        ],
        { reject: false },
      );
    assert.equal((await compare()).exitCode, 0, 'the guest reads the same');
    // a later grow: with data_file_raw qemu maps the new area straight onto the data file
    for (const d of [ref, sub]) await execa('qemu-io', ['-f', 'qcow2', '-c', 'truncate 4M', 'img.qcow2'], { cwd: d });
    const after = await compare();
    assert.equal(after.exitCode, 1);
    assert.match(after.stdout, /Content mismatch at offset 3145728/);
    // silent on a grow; the faithful double refuses such images
    assert.equal(
      (
        await execa(join(DOUBLES, 'instar-keep-data-file-tail'), ['resize', 'img.qcow2', '5M'], {
          cwd: sub,
          reject: false,
        })
      ).exitCode,
      0,
    );
    assert.equal((await stat(join(sub, 'data.raw'))).size, 5 * MiB);
    assert.equal(
      (
        await execa(join(DOUBLES, 'instar-none'), ['resize', '--shrink', 'img.qcow2', '1M'], {
          cwd: plain,
          reject: false,
        })
      ).exitCode,
      1,
    );
  });

  // The misbehaving subjects below act on every resize request, successful or refused; each test
  // shows the act and what stays faithful (exit status, output, or the other requests).

  test("exit0-untouched: exit 0 and 'Image resized.' without running qemu-img", async () => {
    const p = await image();
    const before = await readFile(p);
    for (const args of [
      ['--shrink', p, '8M'],
      [p, '+1M'],
      [p, '8M'],
    ]) {
      const r = await instar('exit0-untouched', ['resize', ...args]);
      assert.equal(r.exitCode, 0, args.join(' '));
      assert.equal(r.stdout, 'Image resized.');
      assert.deepEqual(await readFile(p), before);
    }
    assert.equal((await instar('exit0-untouched', ['resize', '-q', p, '+1M'])).stdout, '');
  });

  test('delete-image: the image is gone, exit 0, after a success and after a refusal', async () => {
    for (const args of [['--shrink', '8M'], ['8M']]) {
      const p = await image();
      const r = await instar('delete-image', ['resize', ...args.slice(0, -1), p, args.at(-1)!]);
      assert.equal(r.exitCode, 0, args.join(' '));
      await assert.rejects(stat(p), { code: 'ENOENT' });
    }
  });

  test('replace-image: a fresh default image of the resulting virtual size, exit 0', async () => {
    const p = await image('refcount_bits=4');
    const ref = await reference(p, [p, '+1M']);
    const r = await instar('replace-image', ['resize', p, '+1M']);
    assert.equal(r.exitCode, 0);
    const h = await readQcow2Header(p);
    assert.equal(h.size, 17 * MiB);
    assert.equal(h.refcountBits, 16);
    assert.equal(await checkCode(p), 0);
    assert.equal(await compare(p, ref), 1); // the data is gone
    const q = await image();
    assert.equal((await instar('replace-image', ['resize', q, '8M'])).exitCode, 0); // refused by qemu-img
    assert.equal(await vsize(q), 16 * MiB);
    assert.equal(await compare(q, await image('refcount_bits=16', [])), 0);
  });

  test('truncate-zero: an empty file, exit 0', async () => {
    for (const args of [['+1M'], ['8M']]) {
      const p = await image();
      assert.equal((await instar('truncate-zero', ['resize', p, args[0]!])).exitCode, 0);
      assert.equal((await stat(p)).size, 0);
    }
  });

  test("huge-file: 200 MiB of real data appended after qemu-img's result, exit 0", async () => {
    const p = await image();
    const ref = await reference(p, ['--shrink', p, '8M']);
    assert.equal((await instar('huge-file', ['resize', '--shrink', p, '8M'])).exitCode, 0);
    const [st, refSize] = [await stat(p), (await stat(ref)).size];
    assert.equal(st.size, refSize + 200 * MiB);
    assert.ok(st.blocks * 512 >= 200 * MiB, 'allocated, not sparse');
    const tail = Buffer.alloc(4096);
    const fh = await open(p, 'r');
    await fh.read(tail, 0, tail.length, st.size - tail.length);
    await fh.close();
    assert.ok(tail.every((b) => b === 0x5a));
    assert.equal(await compare(p, ref), 0); // the qcow2 content is qemu's
  });

  test('stderr-flood: 20 MiB on stderr, then a faithful resize', async () => {
    const p = await image('refcount_bits=1');
    const ref = await reference(p, ['--shrink', p, '8M']);
    const r = await instar('stderr-flood', ['resize', '--shrink', p, '8M']);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'Image resized.');
    assert.ok(r.stderr.length >= 20 * MiB - 1, `stderr ${r.stderr.length}`); // execa strips the final newline
    assert.deepEqual(await readFile(p), await readFile(ref));
  });

  test('sigkill-self: killed by SIGKILL before touching the image', async () => {
    const p = await image();
    const before = await readFile(p);
    for (const size of ['8M', '+1M']) {
      const r = await instar('sigkill-self', ['resize', '--shrink', p, size]);
      assert.equal(r.signal, 'SIGKILL', size);
      assert.deepEqual(await readFile(p), before);
    }
  });
});

// Latent damage: every fault tried before (a header-only shrink, stale refcounts past the end of the
// file) was also caught by the static structure oracle. This one passes check, compare, info and
// structure right after the resize and goes wrong only when qemu next grows the image.
describe('a fault only the after-use oracle catches', () => {
  test('keep-data-file-tail: found within 250 iterations, by after-use alone', async (t) => {
    const reports = await reportsDir(t);
    const instarPath = instarDouble('keep-data-file-tail');
    // seed 1 has its first after-use hit at iteration 37 (one by compare at 13): 60 cases keep the test short
    const r = await fuzzCli([
      '--instar',
      instarPath,
      '--iterations',
      '60',
      '--seed',
      '1',
      '--minimise-runs',
      '0',
      '--reports',
      reports,
    ]);
    assert.equal(r.exitCode, 1, r.all);
    const s = await readSummary(reports);
    const signatures = s.signatures.map((x) => x.signature).sort();
    // seen after use, or right away by compare where a later step of the case grows the image:
    // one signature either way (the old bytes show in grown space); never by check, info or
    // structure: the qcow2 file is qemu's
    assert.deepEqual(signatures, ['content/content-differs/subject/region=grown,subject=data,qemu=zeros']);
    const report = await readReportIn(reports, s.signatures[0]!.folder);
    // seed 1: at iteration 13 a data_file case whose later step grows (compare), at 37 a
    // data_file_raw one after use; the report keeps the first
    assert.notEqual(report.case.image.dataFile, 'none');
    assert.deepEqual(
      [...new Set(report.findings.map((f) => f.oracle))].filter((o) => o !== 'after-use' && o !== 'content'),
      [],
    );
    // every step both sides accepted ran check, structure, info and compare, which found nothing;
    // both sides refused the others alike
    assert.ok(report.steps.some((step) => step.plan.kind === 'shrink' && step.subject === 'ok'));
    for (const step of report.steps) {
      assert.equal(step.reference, step.subject);
      if (step.subject === 'ok') assert.ok(step.subjectCheck && step.subjectInfo && step.referenceInfo);
    }

    const { folder } = s.signatures[0]!;
    const replayed = await fuzzCli(['--replay', join(reports, folder), '--instar', instarPath]);
    assert.equal(replayed.exitCode, 1, replayed.all);
    assert.equal((await fuzzCli(['--replay', join(reports, folder), '--instar', instarDouble('none')])).exitCode, 0);
    const repro = await runRepro(reports, folder, instarPath);
    assert.equal(repro.exitCode, 1, repro.all);
    assert.match(repro.stdout, /REPRODUCED/);
    const fixed = await runRepro(reports, folder, instarDouble('none'));
    assert.equal(fixed.exitCode, 0, fixed.all);
  });
});

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import fc from 'fast-check';
import { runCase } from '../exec/run-case.ts';
import { caseArb } from '../generators/cases.ts';
import { qemuImg } from '../model/commands.ts';
import { allReportFiles, fuzzCli, instarDouble, readSummary, reportsDir, runRepro, startFuzz } from './helpers.ts';

// The harness under the worst conditions: interrupted, killed, out of disk space, given hostile
// names. It must lose nothing already found and never leave a broken report behind.

describe('an interrupted run', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`stops cleanly on ${signal}: summary written, work directories removed, exit code of what ran`, async (t) => {
      const reports = await reportsDir(t);
      const workdir = join(reports, 'work');
      await mkdir(workdir);
      const run = startFuzz([
        '--control',
        '--iterations',
        '5000',
        '--seed',
        '3',
        '--reports',
        reports,
        '--workdir',
        workdir,
      ]);
      await run.line(/\[25\/5000\]/);
      run.child.kill(signal);
      const r = await run.child;
      assert.equal(r.exitCode, 0, r.all);
      const s = await readSummary(reports);
      assert.equal(s.stoppedEarly, 'interrupted');
      assert.ok(s.iterations >= 25 && s.iterations < 5000, `${s.iterations} cases counted`);
      assert.deepEqual(await readdir(workdir), [], 'work directories were left behind');
    });
  }
});

describe('a run killed with SIGKILL', () => {
  it('leaves only complete reports, and the next run on the same directory works', async (t) => {
    const reports = await reportsDir(t);
    const instar = instarDouble('msb-first');
    const run = startFuzz([
      '--instar',
      instar,
      '--iterations',
      '500',
      '--seed',
      '4',
      '--minimise-runs',
      '10',
      '--reports',
      reports,
    ]);
    await run.line(/\] again: /);
    run.child.kill('SIGKILL');
    await run.child;
    const files = await allReportFiles(reports);
    assert.ok(files.length > 0);
    for (const file of files) JSON.parse(await readFile(file, 'utf8'));

    const next = await fuzzCli([
      '--instar',
      instar,
      '--iterations',
      '10',
      '--seed',
      '4',
      '--minimise-runs',
      '10',
      '--reports',
      reports,
    ]);
    assert.equal(next.exitCode, 1, next.all);
    assert.match(next.stdout, /\] again: /, 'the next run adds hits to the reports of the killed one');
    assert.deepEqual(
      (await readdir(reports)).filter((n) => n.startsWith('.')),
      [],
      'no staging folder left over',
    );
  });
});

/** A small tmpfs, unmounted and removed after the test. */
async function smallDisk(t: { after: (fn: () => Promise<void>) => void }, mib: number) {
  const mountpoint = await mkdtemp(join(tmpdir(), `fuzz-disk-${mib}m-`));
  const r = await execa('mount', ['-t', 'tmpfs', '-o', `size=${mib}m`, 'tmpfs', mountpoint], { reject: false });
  assert.equal(r.exitCode, 0, `these tests mount a small tmpfs and need root: ${r.stderr}`);
  t.after(async () => {
    await execa('umount', ['-l', mountpoint], { reject: false });
    await rm(mountpoint, { recursive: true, force: true });
  });
  return mountpoint;
}

/** Fills a file system up to its last few KiB. */
const fill = (dir: string) => execa('dd', ['if=/dev/zero', `of=${join(dir, 'filler')}`, 'bs=1M'], { reject: false });

describe('a full disk', () => {
  it('stops the run with exit 2 when the reports directory fills up, and keeps what was filed', async (t) => {
    const reports = await smallDisk(t, 300);
    const run = startFuzz([
      '--instar',
      instarDouble('msb-first'),
      '--iterations',
      '500',
      '--seed',
      '4',
      '--reports',
      reports,
    ]);
    await run.line(/\] NEW: /);
    await fill(reports);
    const r = await run.child;
    assert.equal(r.exitCode, 2, r.all);
    assert.match(r.stderr, /reports directory .* (has only|is full)/);
    const files = await allReportFiles(reports);
    assert.ok(files.length > 0);
    for (const file of files) JSON.parse(await readFile(file, 'utf8'));
  });
  it('stops the run with exit 2 when the work directory fills up', async (t) => {
    const parent = await reportsDir(t);
    // large enough for two cases at once above the 256 MiB minimum, until it is filled up
    const workdir = await smallDisk(t, 1024);
    const run = startFuzz([
      '--control',
      '--iterations',
      '5000',
      '--seed',
      '4',
      '--reports',
      join(parent, 'reports'),
      '--workdir',
      workdir,
    ]);
    await run.line(/\[25\/5000\]/);
    await fill(workdir);
    const r = await run.child;
    assert.equal(r.exitCode, 2, r.all);
    assert.match(r.stderr, /work directory .* (has only|is full)/);
  });
  it('refuses to start on a work directory that is already too small', async (t) => {
    const parent = await reportsDir(t);
    const workdir = await smallDisk(t, 16);
    const r = await fuzzCli([
      '--control',
      '--iterations',
      '5',
      '--reports',
      join(parent, 'reports'),
      '--workdir',
      workdir,
    ]);
    assert.equal(r.exitCode, 2, r.all);
    assert.match(r.stderr, /work directory .* has only 16 MiB free/);
  });
});

describe('hostile names', () => {
  it('passes paths with spaces, quotes, $ and newlines safely, into reports and repro.sh', async (t) => {
    const root = await reportsDir(t);
    const weird = join(root, `we ird $HOME 'q' "d" \`x\`\nnl`);
    await mkdir(weird);
    const instar = join(weird, 'instar $(id >&2)');
    // a copy of the double under a hostile name: the wrapper finds its files through its own path
    await writeFile(instar, `#!/bin/sh\nexec ${JSON.stringify(instarDouble('365-stride'))} "$@"\n`, { mode: 0o755 });
    const reports = join(weird, 'reports');
    const workdir = join(weird, 'work');
    await mkdir(workdir);
    const r = await fuzzCli([
      '--instar',
      instar,
      '--iterations',
      '30',
      '--seed',
      '1',
      '--fail-fast',
      '--minimise-runs',
      '5',
      '--reports',
      reports,
      '--workdir',
      workdir,
    ]);
    assert.equal(r.exitCode, 1, r.all);
    const [sig] = (await readSummary(reports)).signatures;
    const report = JSON.parse(await readFile(join(reports, sig!.folder, 'report.json'), 'utf8'));
    assert.equal(report.subject.program, instar);
    const repro = await runRepro(reports, sig!.folder, instar);
    assert.equal(repro.exitCode, 1, repro.all);
    assert.doesNotMatch(r.all + repro.all, /uid=/, 'a file name was run as a command');
  });
});

/** What a report says, without when and how long: dates, durations, seconds spent minimising. */
const TIMING = new Set(['date', 'durationMs', 'seconds']);
async function reportContents(reports: string) {
  const folders = (await readdir(reports, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  return Promise.all(
    folders.map(async (folder) => ({
      folder,
      report: JSON.parse(await readFile(join(reports, folder, 'report.json'), 'utf8'), (k, v) =>
        TIMING.has(k) ? undefined : v,
      ) as unknown,
    })),
  );
}

describe('determinism', () => {
  it('the same seed gives the same cases, signatures, hit counts and report contents with 1 or 2 jobs', async (t) => {
    const runs = [];
    for (const jobs of ['1', '2']) {
      const reports = await reportsDir(t);
      const r = await fuzzCli([
        '--instar',
        instarDouble('msb-first'),
        '--iterations',
        '30',
        '--seed',
        '8',
        '--jobs',
        jobs,
        '--minimise-runs',
        '5',
        '--reports',
        reports,
      ]);
      assert.equal(r.exitCode, 1, r.all);
      // how many processes ran is left out: a LUKS create that fails for a passing reason is run
      // again (TRANSIENT_FAILURE in model/commands.ts), so the count varies from run to run
      const { elapsedSeconds: _e, jobs: _j, processes: _p, ...rest } = await readSummary(reports);
      runs.push({ summary: rest, reports: await reportContents(reports) });
    }
    assert.ok(runs[0]!.reports.length > 0);
    assert.deepEqual(runs[0], runs[1]);
  });

  it('a LUKS create that qemu gives up on is run again and left out of the commands a report lists', async (t) => {
    // a qemu-img first on PATH that fails the first create as qemu 7.2 does on a busy machine
    const bin = await mkdtemp(join(tmpdir(), 'flaky-qemu-'));
    t.after(() => rm(bin, { recursive: true, force: true }));
    const failed = join(bin, 'failed-once');
    const real = (await execa('sh', ['-c', 'command -v qemu-img'])).stdout;
    const script = [
      '#!/bin/sh',
      `if [ "$1" = create ] && [ ! -e '${failed}' ]; then`,
      `  : > '${failed}'; echo 'qemu-img: base.qcow2: Unable to get accurate CPU usage' >&2; exit 1`,
      'fi',
      `exec '${real}' "$@"`,
    ].join('\n');
    await writeFile(join(bin, 'qemu-img'), `${script}\n`, { mode: 0o755 });
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    t.after(() => void (process.env.PATH = path));

    const c = fc.sample(caseArb, { seed: 5, numRuns: 500 }).find((x) => x.image.encrypted)!;
    const result = await runCase(c, { subject: qemuImg, timeoutMs: 60_000, workdir: bin, wantArtifacts: () => false });
    assert.deepEqual(result.findings, []);
    await readFile(failed); // the first create did fail
    const creates = result.commands.filter((r) => r.argv[0] === 'qemu-img' && r.argv[1] === 'create');
    assert.equal(creates.length, 1, JSON.stringify(creates.map((r) => r.argv)));
    assert.equal(creates[0]!.exitCode, 0);
  });
});

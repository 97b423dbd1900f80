import assert from 'node:assert/strict';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fuzzCli, instarDouble, reportsDir } from './helpers.ts';

// Bad input gets one clear message and exit 2, before any work is done.

async function expectUsageError(args: string[], message: RegExp, env: Record<string, string> = {}) {
  const r = await fuzzCli(args, env);
  assert.equal(r.exitCode, 2, r.all);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stdout, /cases in/, 'no work was done');
}

describe('the fuzz command line', () => {
  it('prints help', async () => {
    const r = await fuzzCli(['--help']);
    assert.equal(r.exitCode, 0);
    for (const flag of [
      '--iterations',
      '--seed',
      '--instar',
      '--control',
      '--timeout',
      '--reports',
      '--known',
      '--fail-fast',
      '--replay',
    ])
      assert.match(r.stdout, new RegExp(flag));
  });
  it('refuses bad values and unknown flags', async () => {
    await expectUsageError(['--control', '--iterations', '-1'], /--iterations must be a whole number/);
    await expectUsageError(['--control', '--iterations', '2.5'], /--iterations must be a whole number/);
    await expectUsageError(['--control', '--timeout', 'abc'], /--timeout must be a positive number/);
    await expectUsageError(['--control', '--seed', 'x'], /--seed must be a 32-bit integer/);
    await expectUsageError(['--control', '--itterations', '3'], /Unknown argument: itterations/);
    await expectUsageError(['--control', '--jobs', '0'], /--jobs must be a whole number of at least 1/);
    await expectUsageError(['--control', '--formats', 'qcow2,qed'], /--formats: "qed" is not a format the harness/);
    // qemu-img resizes no vmdk: a control run would have no reference for it
    await expectUsageError(['--control', '--formats', 'raw,vmdk'], /qemu-img does not resize vmdk, so a control run/);
    await expectUsageError(
      ['--control', '--workdir', '/nonexistent/work'],
      /--workdir \/nonexistent\/work is not a writable directory/,
    );
  });
  it('names --instar when instar is missing or not executable', async (t) => {
    await expectUsageError(
      ['--instar', '/nonexistent/instar'],
      /instar not found or not executable: \/nonexistent\/instar\. Pass the binary with --instar PATH/,
    );
    const reports = await reportsDir(t);
    const notExecutable = join(reports, 'instar');
    await writeFile(notExecutable, '#!/bin/sh\n');
    await chmod(notExecutable, 0o644);
    await expectUsageError(['--instar', notExecutable], /not executable/);
  });
  it('names the package when qemu-img is missing', async () => {
    await expectUsageError(['--control'], /qemu-img not found on PATH: install Debian's qemu-utils/, {
      PATH: '/nonexistent',
    });
  });
  it('refuses a qemu-img older than the one it is verified against', async (t) => {
    const bin = await reportsDir(t);
    for (const tool of ['qemu-img', 'qemu-io'])
      await writeFile(join(bin, tool), '#!/bin/sh\necho "qemu-img version 6.2.0"\n', { mode: 0o755 });
    await expectUsageError(['--control'], /qemu-img 6\.2 is older than 7\.2/, { PATH: `${bin}:${process.env.PATH}` });
  });
  it('names the entry and field of a bad registry', async (t) => {
    const reports = await reportsDir(t);
    const known = join(reports, 'known.json');
    await writeFile(
      known,
      JSON.stringify({
        divergences: [{ id: 'x', description: 'd', link: 'l', match: { kind: 'k', case: { clusterSize: [1000] } } }],
      }),
    );
    await expectUsageError(
      ['--control', '--known', known, '--reports', reports],
      /divergences\[0\] \("x"\)\.match\.case\.clusterSize has an element that must be a power of two/,
    );
    await expectUsageError(
      ['--control', '--known', join(reports, 'missing.json')],
      /cannot read the known-divergence registry/,
    );
  });
  it('refuses an unwritable reports directory', async (t) => {
    const reports = await reportsDir(t);
    await writeFile(join(reports, 'file'), '');
    await expectUsageError(
      ['--control', '--reports', join(reports, 'file', 'sub')],
      /--reports .* is not a writable directory/,
    );
  });
  it('refuses at once every path it cannot use, /proc/x among them', async () => {
    // node's own recursive mkdir never returns for /proc/x (the parent exists, the child cannot):
    // the run hung there without a word
    for (const path of ['/proc/x', '/dev/null/x', '/sys/x', '/etc/passwd']) {
      const started = Date.now();
      await expectUsageError(['--control', '--iterations', '2', '--reports', path], /--reports|\(--reports\)/);
      assert.ok(Date.now() - started < 5000, `${path}: ${Date.now() - started} ms`);
      await expectUsageError(['--control', '--workdir', path], /--workdir|\(--workdir\)/);
    }
    await expectUsageError(['--control', '--corpus', '/proc/x'], /cannot read the corpus directory \/proc\/x/);
    await expectUsageError(['--control', '--known', '/proc/x'], /cannot read the known-divergence registry \/proc\/x/);
  });
  it('refuses to replay a missing or damaged report', async (t) => {
    const reports = await reportsDir(t);
    await expectUsageError(['--control', '--replay', join(reports, 'nothing')], /cannot read .*report\.json/);
    await mkdir(join(reports, 'damaged'));
    await writeFile(join(reports, 'damaged', 'report.json'), '{"signature": "s", "case": {"image": {}}}');
    await expectUsageError(
      ['--instar', instarDouble('none'), '--replay', join(reports, 'damaged')],
      /case\.image\.virtualSize must be an integer/,
    );
  });
});

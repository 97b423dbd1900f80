import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { execa } from 'execa';
import { dir } from 'tmp-promise';
import { ROOT, fuzzCli, readReportIn, readSummary, reportsDir } from './helpers.ts';

// One report per bug: against a double with thirteen faults at once (of resize, amend and snapshot),
// a seeded run of qcow2 cases files exactly one report per fault, and each report stops reproducing
// when its own fault alone is taken out of the double (and keeps reproducing when any other is).

const LAUNCH = join(ROOT, 'test', 'doubles', 'launch.sh');
const FAULTS: Record<string, string> = {
  'refuse-unaligned-shrink':
    'outcome/refused/subject/instar-double: refusing to shrink to <n>: not a multiple of the cluster size <n>',
  'refuse-full-preallocation': 'outcome/refused/subject/instar-double: full preallocation is not implemented',
  '365-stride': 'check/corruptions/subject/refcount-blocks-garbled:sub-byte',
  'unrefcounted-l1-grow': 'check/corruptions/subject/undercounted:l1',
  'drop-shared-on-shrink': 'check/corruptions/subject/undercounted:snapshot-data',
  'leak-on-shrink': 'check/leaks/subject/leaked:unreferenced',
  'drop-lazy-refcounts': 'info/info-mismatch/subject/lazy-refcounts',
  'downgrade-keeps-zero-flags': 'amend:structure/metadata-invalid/subject/zero-flag-in-v2',
  'amend-leaves-dirty': 'amend:info/info-mismatch/subject/dirty-flag',
  'snapshot-msb-first': 'snapshot:check/corruptions/subject/refcount-blocks-garbled:sub-byte',
  'delete-frees-shared': 'snapshot:check/corruptions/subject/undercounted:data',
  'apply-keeps-l1-size': 'snapshot:content/size-differs/subject/subject-larger',
  'snapshot-keeps-full-table': 'snapshot:check/corruptions/subject/undercounted:snapshot-l1',
};
const ALL = Object.keys(FAULTS);

/** Replays a report folder against the double with `faults`; true when it reproduces. */
async function reproducesWith(folder: string, faults: string[]): Promise<boolean> {
  const r = await fuzzCli(['--replay', folder, '--instar', LAUNCH], { INSTAR_DOUBLE_FAULT: faults.join('+') });
  assert.ok(r.exitCode === 0 || r.exitCode === 1, r.all);
  return r.exitCode === 1;
}

describe('signatures that tell causes apart', () => {
  let reports: string;
  before(async () => {
    const d = await dir({ unsafeCleanup: true, prefix: 'fuzz-signatures-' });
    reports = d.path;
    const args = [
      '--instar',
      join(ROOT, 'test', 'doubles', 'instar-many-faults'),
      // the last of its signatures is first found at case 170
      '--iterations',
      '180',
      '--seed',
      '1',
      '--formats',
      'qcow2',
      '--ops',
      'resize,amend,snapshot',
    ];
    const run = await fuzzCli([...args, '--confirm', '1', '--minimise-runs', '10', '--reports', reports]);
    assert.equal(run.exitCode, 1, run.all);
  });

  it('files exactly one report per fault', async () => {
    const s = await readSummary(reports);
    assert.deepEqual(s.signatures.map((x) => x.signature).sort(), Object.values(FAULTS).sort());
    assert.deepEqual(s.flaky, []);
  });

  it("the run's job summary (what the action writes) lists every signature with its hits", async () => {
    const d = await dir({ unsafeCleanup: true, prefix: 'job-summary-' });
    const file = join(d.path, 'step-summary.md');
    await writeFile(file, '## before\n');
    const r = await execa(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'cli', 'job-summary.ts'), '--reports', reports],
      {
        env: { GITHUB_STEP_SUMMARY: file },
        reject: false,
        all: true,
      },
    );
    assert.equal(r.exitCode, 0, r.all);
    const md = await readFile(file, 'utf8');
    assert.ok(md.startsWith('## before\n## instar fuzz: '), 'appended, as GitHub wants');
    const rows = md.split('\n').filter((l) => l.startsWith('| `'));
    assert.equal(rows.length, ALL.length);
    for (const signature of Object.values(FAULTS)) assert.ok(md.includes(`| \`${signature}\` |`), signature);
    assert.match(md, /```sh\n#!\/usr\/bin\/env bash\n/);
    await d.cleanup();
  });

  it('each report stops reproducing when its fault alone is removed', async () => {
    const s = await readSummary(reports);
    for (const [fault, signature] of Object.entries(FAULTS)) {
      const folder = join(reports, s.signatures.find((x) => x.signature === signature)!.folder);
      const others = ALL.filter((f) => f !== fault);
      assert.equal(await reproducesWith(folder, ALL), true, `${signature} reproduces with every fault`);
      assert.equal(await reproducesWith(folder, others), false, `${signature} is gone without ${fault}`);
      // another fault removed instead: still there (the fault named is the cause, not a bystander)
      const bystander = others[(ALL.indexOf(fault) + 1) % others.length]!;
      assert.equal(
        await reproducesWith(
          folder,
          ALL.filter((f) => f !== bystander),
        ),
        true,
        `${signature}, without ${bystander}`,
      );
    }
  });
});

// Causes that merged into one signature or split over several (issue #23), at once in one double:
// a header rebuilt without its encryption and one rebuilt without its snapshot table (both leaked
// clusters: one signature, split again by the image they met), a v2 image with snapshots resized
// (split by where the size landed), a zero-flag shrink that zeroes the header's refcount (named as
// garbled refcount blocks at sub-byte widths), and instar's documented rounded shrink, which moves
// where sizes land (known: counted by its registry entries, no report).
const COLLIDING: Record<string, string> = {
  'encrypted-as-plain': 'structure/structure-dropped/subject/crypto-header',
  'drop-snapshot-table': 'structure/structure-dropped/subject/snapshot-table',
  'accept-v2-snapshots': "outcome/accepted/subject/qemu-img: Can't resize a v2 image which has snapshots",
  'zero-flag-header-refcount': 'check/corruptions/subject/undercounted:header',
};
const COLLIDING_ALL = [...Object.keys(COLLIDING), 'round-shrink-to-cluster'];

describe('one report per cause when causes collide in one case', () => {
  let reports: string;
  before(async () => {
    const d = await dir({ unsafeCleanup: true, prefix: 'fuzz-colliding-' });
    reports = d.path;
    const args = ['--instar', join(ROOT, 'test', 'doubles', 'instar-colliding-faults'), '--iterations', '250'];
    const run = await fuzzCli([
      ...args,
      '--seed',
      '1',
      '--formats',
      'qcow2',
      '--confirm',
      '1',
      '--minimise-runs',
      '10',
      '--reports',
      reports,
    ]);
    assert.equal(run.exitCode, 1, run.all);
  });

  it('files exactly one report per fault, each named by its cause; the documented rounding is known', async () => {
    const s = await readSummary(reports);
    assert.deepEqual(s.signatures.map((x) => x.signature).sort(), Object.values(COLLIDING).sort());
    assert.deepEqual(s.flaky, []);
    assert.ok(s.knownByEntry['instar-shrink-rounds-down-to-cluster']! > 0, JSON.stringify(s.knownByEntry));
  });

  it('each report stops reproducing when its fault alone is removed', async () => {
    const s = await readSummary(reports);
    for (const [fault, signature] of Object.entries(COLLIDING)) {
      const folder = join(reports, s.signatures.find((x) => x.signature === signature)!.folder);
      assert.equal(await reproducesWith(folder, COLLIDING_ALL), true, `${signature} reproduces with every fault`);
      const others = COLLIDING_ALL.filter((f) => f !== fault);
      assert.equal(await reproducesWith(folder, others), false, `${signature} is gone without ${fault}`);
    }
  });
});

describe('reports of format 3, which knew resize alone', () => {
  it('are still replayed and rechecked', async (t) => {
    const reports = await reportsDir(t);
    const folder = join(reports, 'format-3-corruptions');
    await mkdir(folder);
    await writeFile(
      join(folder, 'report.json'),
      await readFile(join(ROOT, 'testdata', 'reports', 'format-3-corruptions', 'report.json')),
    );
    const faulty = join(ROOT, 'test', 'doubles', 'instar-two-faults');
    assert.equal((await fuzzCli(['--replay', folder, '--instar', faulty])).exitCode, 1, 'replay reproduces it');
    const none = join(ROOT, 'test', 'doubles', 'instar-none');
    assert.equal((await fuzzCli(['--replay', folder, '--instar', none])).exitCode, 0, 'not against a faithful subject');
    const recheck = await fuzzCli(['--recheck', '--reports', reports, '--instar', faulty]);
    assert.equal(recheck.exitCode, 1, recheck.all);
    assert.match(recheck.all ?? '', /STILL REPRODUCES: format-3-corruptions/);
  });
});

describe('reports filed with the coarse signatures of formats 1 and 2', () => {
  it('are still replayed, rechecked and indexed: the finding is said the old way', async (t) => {
    const reports = await reportsDir(t);
    const stride = join(ROOT, 'test', 'doubles', 'instar-365-stride');
    const first = await fuzzCli([
      '--instar',
      stride,
      '--iterations',
      '20',
      '--seed',
      '1',
      '--fail-fast',
      '--minimise-runs',
      '0',
      '--reports',
      reports,
    ]);
    assert.equal(first.exitCode, 1, first.all);
    const { folder } = (await readSummary(reports)).signatures[0]!;
    // the folder as a format-2 harness wrote it: its coarse signature, no scheme
    const report = (await readReportIn(reports, folder)) as unknown as Record<string, unknown>;
    const { signatureScheme: _, ...rest } = report;
    const old = join(reports, 'subject-check-corruptions-5b805ca08c');
    await mkdir(old);
    await writeFile(
      join(old, 'report.json'),
      JSON.stringify({ ...rest, formatVersion: 2, signature: 'check/corruptions/subject/corruptions' }),
    );
    await writeFile(join(old, 'repro.sh'), await readFile(join(reports, folder, 'repro.sh')));

    assert.equal((await fuzzCli(['--replay', old, '--instar', stride])).exitCode, 1, 'replay reproduces it');
    const none = join(ROOT, 'test', 'doubles', 'instar-none');
    assert.equal(
      (await fuzzCli(['--replay', old, '--instar', none])).exitCode,
      0,
      'and not against a faithful subject',
    );
    const recheck = await fuzzCli(['--recheck', '--reports', reports, '--instar', stride]);
    assert.equal(recheck.exitCode, 1, recheck.all);
    assert.match(recheck.all ?? '', /STILL REPRODUCES: subject-check-corruptions-5b805ca08c/);
    const index = await readFile(join(reports, 'index.md'), 'utf8');
    assert.ok(index.includes('`check/corruptions/subject/corruptions`'), 'the index lists it under its own signature');
  });
});

import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { dir } from 'tmp-promise';
import { type Case } from '../model/case.ts';
import { saveSighting } from '../reporting/sighting.ts';
import { type Report } from '../reporting/store.ts';
import { caseAt } from '../generators/cases.ts';
import { ROOT, fuzzCli, instarDouble, readReportIn, readSummary, reportsDir, runRepro } from './helpers.ts';

// Findings a maintainer can act on: confirmed, minimal, one report per bug, rechecked, tracked by
// the registry over time, and kept as regression cases.

const TWO_FAULTS = instarDouble('two-faults');

/** Report folders directly under a reports directory (not flaky/). */
const folders = async (reports: string) =>
  (await readdir(reports, { withFileTypes: true }))
    .filter((e) => e.isDirectory() && e.name !== 'flaky' && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();

describe('a run against a double with two faults', () => {
  let reports: string;
  let run: Awaited<ReturnType<typeof fuzzCli>>;
  before(async () => {
    const d = await dir({ unsafeCleanup: true, prefix: 'fuzz-findings-' });
    reports = d.path;
    // no --fail-fast: every hit of both bugs is counted
    run = await fuzzCli(['--instar', TWO_FAULTS, '--iterations', '60', '--seed', '1', '--reports', reports]);
  });

  it('files exactly one report per bug, counting every hit', async () => {
    assert.equal(run.exitCode, 1, run.all);
    const s = await readSummary(reports);
    assert.deepEqual(s.signatures.map((x) => x.signature).sort(), [
      'check/corruptions/subject/refcount-blocks-garbled:sub-byte',
      'content/content-differs/subject/region=grown,subject=data,qemu=zeros',
    ]);
    assert.deepEqual((await folders(reports)).length, 2);
    for (const sig of s.signatures) {
      const r = await readReportIn(reports, sig.folder);
      assert.equal(r.hits, sig.hitsThisRun);
      assert.ok(r.hits > 1, `${sig.signature} was hit ${r.hits} times`);
      assert.equal(r.firstSeen.iteration, sig.firstIteration);
      assert.ok(r.lastSeen.iteration! > r.firstSeen.iteration!);
    }
  });

  it('confirms each finding and shrinks its case to one resize step and no data', async () => {
    for (const folder of await folders(reports)) {
      const r = await readReportIn(reports, folder);
      assert.deepEqual(r.confirmation, { runs: 2, reproduced: 2 }, folder);
      assert.equal(r.flaky, false);
      assert.equal(r.case.steps.length, 1, `${folder}: ${JSON.stringify(r.case)}`);
      // neither fault needs data: the stride corrupts any shrink, the stale tail any grow
      assert.equal(r.case.data.length, 0, `${folder}: ${JSON.stringify(r.case.data)}`);
      assert.ok(r.minimisation && r.minimisation.runs > 0, JSON.stringify(r.minimisation));
      assert.ok(
        r.originalCase.steps.length + r.originalCase.data.length > 1,
        'the original case is kept beside the minimal one',
      );
      // the stored images and findings are those of the minimal case
      assert.equal(r.steps.length, 1);
    }
  });

  it('writes a repro.sh of at most 20 lines that reproduces on its own, and not once fixed', async () => {
    for (const folder of await folders(reports)) {
      const script = await readFile(join(reports, folder, 'repro.sh'), 'utf8');
      assert.ok(
        script.trimEnd().split('\n').length <= 20,
        `${folder}/repro.sh has ${script.trimEnd().split('\n').length} lines:\n${script}`,
      );
      const repro = await runRepro(reports, folder, TWO_FAULTS);
      assert.equal(repro.exitCode, 1, repro.all);
      assert.match(repro.stdout, /REPRODUCED/);
      assert.equal((await runRepro(reports, folder, instarDouble('none'))).exitCode, 0);
    }
  });

  const marksFixed = 'marks both reports fixed once the faults are gone';
  it(`--recheck ${marksFixed}, and still reproducing while they are not`, async () => {
    const still = await fuzzCli(['--recheck', '--instar', TWO_FAULTS, '--reports', reports]);
    assert.equal(still.exitCode, 1, still.all);
    assert.match(still.stdout, /2 still reproduce, 0 fixed/);
    const fixed = await fuzzCli(['--recheck', '--instar', instarDouble('none'), '--reports', reports]);
    assert.equal(fixed.exitCode, 0, fixed.all);
    assert.match(fixed.stdout, /0 still reproduce, 2 fixed/);
    for (const folder of await folders(reports)) {
      const r = await readReportIn(reports, folder);
      assert.deepEqual(
        r.rechecks.map((x) => x.reproduced),
        [true, false],
      );
      assert.match(r.rechecks[1]!.subjectVersion, /fault: none/);
      assert.ok(r.hits > 1, 'a recheck keeps the report and its history');
    }
  });

  it('--promote copies a minimal case into the corpus, and every run replays the corpus first', async (t) => {
    const corpus = await reportsDir(t);
    const [folder] = await folders(reports);
    const promoted = await fuzzCli(['--promote', join(reports, folder!), '--corpus', corpus]);
    assert.equal(promoted.exitCode, 0, promoted.all);
    const file = JSON.parse(await readFile(join(corpus, `${folder}.json`), 'utf8'));
    assert.deepEqual(file.case, (await readReportIn(reports, folder!)).case);

    const fixedRun = await reportsDir(t);
    const clean = await fuzzCli([
      '--instar',
      instarDouble('none'),
      '--iterations',
      '5',
      '--seed',
      '3',
      '--corpus',
      corpus,
      '--reports',
      fixedRun,
    ]);
    assert.equal(clean.exitCode, 0, clean.all);
    assert.deepEqual((await readSummary(fixedRun)).corpus, {
      available: 1,
      run: 1,
      newDivergences: 0,
      knownDivergences: 0,
    });
    assert.equal((await readSummary(fixedRun)).iterations, 5, 'corpus cases are counted apart from the generated ones');

    const regressed = await reportsDir(t);
    const again = await fuzzCli([
      '--instar',
      TWO_FAULTS,
      '--iterations',
      '1',
      '--seed',
      '3',
      '--corpus',
      corpus,
      '--reports',
      regressed,
      '--minimise-runs',
      '0',
    ]);
    assert.equal(again.exitCode, 1, again.all);
    const s = await readSummary(regressed);
    assert.equal(s.corpus.newDivergences, 1);
    assert.equal(s.signatures.find((x) => x.firstCorpusCase === folder)?.folder, folder);
  });
});

describe('flaky findings', () => {
  it('are filed apart, under flaky/, when no re-run reproduces them', async (t) => {
    const reports = await reportsDir(t);
    const scratch = await reportsDir(t);
    // the stride fault, kept the first time it corrupts an image (one without a data file, which a
    // copy would not restore) and undone every other time: a finding no re-run reproduces
    const once = join(scratch, 'instar-once');
    const fired = JSON.stringify(join(scratch, 'fired'));
    await writeFile(
      once,
      [
        '#!/bin/bash',
        'image=${@: -2:1}',
        `if [ ! -e ${fired} ] && [ "$1" = resize ] && [ $(( $(od -An -tu1 -j 79 -N 1 "$image") & 4 )) = 0 ]; then`,
        `  backup=$(mktemp -p ${JSON.stringify(scratch)}) && cp "$image" "$backup" || exit 2`,
        `  if ${JSON.stringify(instarDouble('365-stride'))} "$@" && ` +
          `! qemu-img check -q "$image" >/dev/null 2>&1 && mkdir ${fired}; then exit 0; fi`,
        '  cp "$backup" "$image"',
        'fi',
        `exec ${JSON.stringify(instarDouble('none'))} "$@"`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const r = await fuzzCli([
      '--instar',
      once,
      '--iterations',
      '40',
      '--seed',
      '1',
      '--jobs',
      '1',
      '--reports',
      reports,
    ]);
    assert.equal(r.exitCode, 1, r.all);
    assert.match(r.stdout, /FLAKY/);
    const s = await readSummary(reports);
    assert.equal(s.newDivergences, 0);
    assert.deepEqual(s.signatures, []);
    assert.equal(s.flaky.length, 1);
    assert.match(s.flaky[0]!.folder, /^flaky\//);
    const report = JSON.parse(await readFile(join(reports, s.flaky[0]!.folder, 'report.json'), 'utf8')) as Report;
    assert.deepEqual(report.confirmation, { runs: 2, reproduced: 0 });
    assert.equal(report.flaky, true);
    assert.deepEqual(await folders(reports), [], 'nothing flaky among the confirmed reports');
  });
});

describe('the registry over time', () => {
  // the only finding of the refuse-unaligned-shrink double
  const entry = (extra: Record<string, unknown>) => ({
    id: 'unaligned-shrink-refusal-is-known',
    description: 'test entry',
    link: 'https://example.org/x',
    match: {
      oracle: 'outcome',
      kind: 'refused',
      side: 'subject',
      detail: '^instar-double: refusing to shrink to <n>: not a multiple of the cluster size',
    },
    ...extra,
  });
  const REFUSER = instarDouble('refuse-unaligned-shrink');
  /** The shipped registry (the double refuses what instar documents) plus `entries`. */
  const registry = async (t: Parameters<typeof reportsDir>[0], entries: unknown[]) => {
    const file = join(await reportsDir(t), 'known.json');
    const shipped = JSON.parse(await readFile(join(ROOT, 'known-divergences.json'), 'utf8')) as {
      divergences: unknown[];
    };
    await writeFile(file, JSON.stringify({ divergences: [...shipped.divergences, ...entries] }));
    return file;
  };

  it('an expired entry suppresses nothing and is listed', async (t) => {
    const liveReports = await reportsDir(t);
    const live = await fuzzCli([
      '--instar',
      REFUSER,
      '--iterations',
      '40',
      '--seed',
      '1',
      '--known',
      await registry(t, [entry({ expires: '2999-01-01', issue: 'https://example.org/issues/1' })]),
      '--reports',
      liveReports,
    ]);
    assert.equal(live.exitCode, 0, live.all);
    assert.ok(
      (await readSummary(liveReports)).knownByEntry['unaligned-shrink-refusal-is-known']! > 0,
      'the entry suppressed the fault while it was live',
    );
    const reports = await reportsDir(t);
    const expired = await fuzzCli([
      '--instar',
      REFUSER,
      '--iterations',
      '40',
      '--seed',
      '1',
      '--known',
      await registry(t, [entry({ expires: '2020-01-01' })]),
      '--reports',
      reports,
      '--fail-fast',
      '--minimise-runs',
      '0',
    ]);
    assert.equal(expired.exitCode, 1, expired.all);
    assert.match(expired.stdout, /unaligned-shrink-refusal-is-known expired on 2020-01-01/);
    assert.deepEqual((await readSummary(reports)).expiredKnown, ['unaligned-shrink-refusal-is-known']);
  });

  it('--strict-known fails a run in which an entry matched nothing, and names it', async (t) => {
    const file = join(await reportsDir(t), 'known.json');
    await writeFile(
      file,
      JSON.stringify({ divergences: [entry({ id: 'never-matches', match: { kind: 'no-such-kind' } })] }),
    );
    const lenient = await fuzzCli([
      '--control',
      '--iterations',
      '2',
      '--seed',
      '1',
      '--known',
      file,
      '--reports',
      await reportsDir(t),
    ]);
    assert.equal(lenient.exitCode, 0, lenient.all);
    const strict = await fuzzCli([
      '--control',
      '--iterations',
      '2',
      '--seed',
      '1',
      '--known',
      file,
      '--strict-known',
      '--reports',
      await reportsDir(t),
    ]);
    assert.equal(strict.exitCode, 1, strict.all);
    assert.match(strict.stderr, /--strict-known: .*never-matches/);
  });

  it('rejects a malformed expiry date with exit 2, naming the entry and field', async (t) => {
    const r = await fuzzCli([
      '--control',
      '--iterations',
      '1',
      '--known',
      await registry(t, [entry({ expires: 'next year' })]),
      '--reports',
      await reportsDir(t),
    ]);
    assert.equal(r.exitCode, 2, r.all);
    assert.match(r.stderr, /"unaligned-shrink-refusal-is-known"\)\.expires must be a date written YYYY-MM-DD/);
  });
});

describe('one report per bug', () => {
  const finding = {
    oracle: 'check' as const,
    kind: 'corruptions',
    side: 'subject' as const,
    detail: 'corruptions',
    message: 'qemu-img check found corruptions',
    step: 0,
  };
  const resultOf = () => ({
    findings: [finding],
    steps: [],
    afterUse: null,
    commands: [],
    artifacts: [],
    artifactsSkipped: [],
    baseReader: null,
  });
  const input = (c: Case, iteration: number) => ({
    finding,
    case: c,
    result: resultOf(),
    originalCase: c,
    minimisation: null,
    confirmation: null,
    flaky: false,
    subject: { dialect: 'instar' as const, program: 'instar' },
    tools: { qemuImg: 'q', subject: 's' },
    origin: { seed: 1, iteration, date: new Date().toISOString() },
  });

  it('a later hit with a smaller case replaces the stored case and repro.sh; a larger one only counts', async (t) => {
    const reports = await reportsDir(t);
    const big = caseAt(1, 0);
    assert.ok(big.steps.length + big.data.length > 1);
    const small: Case = { ...big, steps: big.steps.slice(0, 1), data: [] };
    const { folder } = await saveSighting(reports, input(big, 0));
    const before = await readFile(join(reports, folder, 'repro.sh'), 'utf8');
    await saveSighting(reports, input(small, 5));
    let r = await readReportIn(reports, folder);
    assert.deepEqual(
      [r.hits, r.case, r.originalCase, r.firstSeen.iteration, r.lastSeen.iteration],
      [2, small, big, 0, 5],
    );
    assert.notEqual(
      await readFile(join(reports, folder, 'repro.sh'), 'utf8'),
      before,
      'repro.sh follows the stored case',
    );
    await saveSighting(reports, input(big, 9));
    r = await readReportIn(reports, folder);
    assert.deepEqual([r.hits, r.case, r.lastSeen.iteration], [3, small, 9]);
  });
});

describe('the corpus share and --file-issues', () => {
  const share = 'replays at most --corpus-share of the iterations from the corpus';
  it(`${share}, and writes issues for new signatures`, async (t) => {
    const corpus = await reportsDir(t);
    const bin = await reportsDir(t);
    // gh that is not logged in: issues are written, not filed
    await writeFile(join(bin, 'gh'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
    for (const name of ['a', 'b', 'c']) {
      await writeFile(
        join(corpus, `${name}.json`),
        JSON.stringify({
          formatVersion: 1,
          signature: 'x',
          promotedFrom: name,
          promotedAt: '',
          message: '',
          case: caseAt(7, 0),
        }),
      );
    }
    const reports = await reportsDir(t);
    const r = await fuzzCli(
      [
        '--instar',
        instarDouble('365-stride'),
        '--iterations',
        '5',
        '--seed',
        '1',
        '--corpus',
        corpus,
        '--minimise-runs',
        '0',
        '--file-issues',
        '--reports',
        reports,
      ],
      { PATH: `${bin}:${process.env.PATH}` },
    );
    assert.equal(r.exitCode, 1, r.all);
    const s = await readSummary(reports);
    // 0.2 of 5 iterations: one corpus case of three
    assert.deepEqual([s.corpus.available, s.corpus.run, s.iterations], [3, 1, 5]);
    for (const sig of s.signatures) {
      assert.match(
        await readFile(join(reports, sig.folder, 'issue.md'), 'utf8'),
        new RegExp(`fuzzer-signature: ${sig.signature.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`),
      );
      assert.ok((await readFile(join(reports, sig.folder, 'issue-title.txt'), 'utf8')).length > 0);
    }
    assert.ok(s.signatures.length > 0);
  });
});

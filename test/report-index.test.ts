import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { access, copyFile, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { dir } from 'tmp-promise';
import { runCommand } from '../exec/process.ts';
import { collectIndex, writeReportsIndex } from '../reporting/index-page.ts';
import { latestRecheck, storedCaseText } from '../reporting/render.ts';
import { PICTURE_FILE, reportPicture } from '../reporting/damage-picture.ts';
import { parseReport } from '../reporting/store.ts';
import { ROOT } from './helpers.ts';

// The reports index (reporting/index-page.ts): index.md's content, and index.html rendered by a
// real headless browser (Debian's chromium, installed by `bash scripts/ensure-deps.sh
// --with-browser`, which `npm test` runs first). The browser test is skipped only when chromium
// is missing outside CI; in CI (CI=true) a missing browser fails it.
// REPORT_INDEX_SCREENSHOT=PATH keeps a copy of the screenshot (docs/reports-index.png is one).

const SCRIPT_MESSAGE = `subject exited 0 but printed <script>alert("pwned")</script> & 'quotes'`;

/** A report.json of the shape saveSighting writes, with the triage fields given in `extra`. */
function reportJson(signature: string, message: string, hits: number, extra: Record<string, unknown> = {}) {
  const [oracle, kind, side, detail] = signature.split('/') as [string, string, string, string];
  const step = { size: '8M', shrink: true, preallocation: null };
  const write = { op: 'write', offset: 0, length: 65536, pattern: 7 };
  return {
    formatVersion: 1,
    signature,
    finding: { oracle, kind, side, detail, message, step: 0, evidence: {} },
    hits,
    firstSeen: { seed: 1, iteration: 0, date: '2026-11-20T08:15:00.000Z' },
    lastSeen: { seed: 7, iteration: 42, date: '2026-11-25T23:10:00.000Z' },
    case: {
      image: {
        virtualSize: 16777216,
        clusterSize: 65536,
        refcountBits: 4,
        compat: '1.1',
        lazyRefcounts: false,
        extendedL2: false,
        compressionType: 'zlib',
        createdWithRefcountBits: null,
        bitmaps: 0,
        dirty: false,
      },
      data: [write, write],
      steps: [step],
    },
    subject: { dialect: 'instar', program: '/usr/local/bin/instar' },
    tools: { qemuImg: 'qemu-img version 7.2.22', subject: 'instar 0.3.0' },
    findings: [],
    steps: [],
    commands: [],
    ...extra,
  };
}

async function writeReport(reports: string, folder: string, report: unknown) {
  await mkdir(join(reports, folder), { recursive: true });
  await writeFile(
    join(reports, folder, 'report.json'),
    typeof report === 'string' ? report : JSON.stringify(report, null, 2),
  );
  await writeFile(join(reports, folder, 'report.md'), '# report\n');
  await writeFile(join(reports, folder, 'repro.sh'), '#!/usr/bin/env bash\nexit 0\n');
}

const SIG = {
  open: 'check/corruptions/subject/corruptions',
  script: 'outcome/outcome-mismatch/subject/reference=ok,subject=crashed,step=shrink',
  fixed: 'structure/refcount-mismatch/subject/stored<computed',
  old: 'info/field-mismatch/subject/lazy_refcounts',
  flaky: 'content/content-mismatch/subject/differs',
};

/** A reports directory with four report folders, one flaky folder, a staging leftover, a broken
 * report.json and a summary.json. */
async function buildReports(reports: string) {
  const big = {
    image: {},
    data: Array.from({ length: 7 }, () => ({ op: 'write' })),
    steps: Array.from({ length: 4 }, () => ({ size: '1M' })),
  };
  await writeReport(
    reports,
    'subject-check-corruptions-aaaaaaaaaa',
    reportJson(SIG.open, 'qemu-img check found 5 corruptions in the subject image', 12, {
      lastSeen: { seed: null, iteration: null, corpus: 'refcount-4bit-shrink.json', date: '2026-11-26T01:00:00.000Z' },
      originalCase: big,
      minimisation: { runs: 41, seconds: 12.34, stoppedBy: 'done' },
      confirmation: { runs: 3, reproduced: 3 },
      flaky: false,
      rechecks: [{ date: '2026-11-24T10:00:00.000Z', subjectVersion: 'instar 0.3.0', reproduced: true }],
      issue: {
        url: 'https://github.com/example/instar/issues/365',
        title: 'subject check/corruptions',
        filedAt: '2026-11-21T00:00:00.000Z',
      },
    }),
  );
  await writeReport(
    reports,
    'subject-outcome-outcome-mismatch-bbbbbbbbbb',
    reportJson(SIG.script, SCRIPT_MESSAGE, 3, { confirmation: { runs: 3, reproduced: 3 }, flaky: false, rechecks: [] }),
  );
  await writeReport(
    reports,
    'subject-structure-refcount-mismatch-cccccccccc',
    reportJson(SIG.fixed, 'refcount of cluster 3 is 0, 1 references', 40, {
      confirmation: { runs: 3, reproduced: 3 },
      flaky: false,
      rechecks: [
        { date: '2026-11-25T09:00:00.000Z', subjectVersion: 'instar 0.3.1', reproduced: false },
        { date: '2026-11-10T09:00:00.000Z', subjectVersion: 'instar 0.2.9', reproduced: true },
      ],
    }),
  );
  // formatVersion 1 as first written: none of the triage fields
  await writeReport(
    reports,
    'subject-info-field-mismatch-dddddddddd',
    reportJson(SIG.old, 'lazy_refcounts: qemu-img says true, subject false', 1),
  );
  await writeReport(
    reports,
    'flaky/subject-content-content-mismatch-eeeeeeeeee',
    reportJson(SIG.flaky, 'images differ at offset 1048576', 2, {
      confirmation: { runs: 3, reproduced: 1 },
      flaky: true,
      rechecks: [],
    }),
  );
  // not reports: a staging folder left by a killed run, a folder without report.json
  await writeReport(
    reports,
    '.subject-check-corruptions-ffffffffff.tmp-123',
    reportJson('check/x/subject/staging', 'staging', 1),
  );
  await mkdir(join(reports, 'not-a-report'));
  await writeReport(reports, 'broken-report', '{"signature": ');
  const rows = Object.fromEntries(
    [1, 2, 4, 8, 16, 32, 64].map((b, i) => [
      String(b),
      { grow: i * 3, shrink: 10 - i, shrinkDiscarding: i === 6 ? 0 : 5 - (i % 5) },
    ]),
  );
  await writeFile(
    join(reports, 'summary.json'),
    JSON.stringify({
      seed: 20261125,
      iterationsRequested: 250,
      durationSeconds: null,
      shard: null,
      iterations: 250,
      stoppedEarly: null,
      elapsedSeconds: 118.4,
      jobs: 2,
      subject: { dialect: 'instar', program: '/usr/local/bin/instar' },
      tools: { qemuImg: 'qemu-img version 7.2.22', subject: 'instar 0.3.1' },
      newDivergences: 6,
      knownDivergences: 31,
      signatures: [{ signature: SIG.open }, { signature: SIG.script }],
      coverage: {
        refcountBits: {},
        features: { lazyRefcounts: 40, extendedL2: 22, zstd: 12, snapshots: 30 },
        oracles: { outcome: 600, check: 420, structure: 420 },
        refcountByStep: rows,
        readerSelfCheck: { agreed: 248, disagreed: 0 },
      },
    }),
  );
}

async function tempDir(t: { after: (fn: () => Promise<void>) => void }, prefix: string) {
  const d = await dir({ unsafeCleanup: true, prefix });
  t.after(() => d.cleanup());
  return d.path;
}

test('collectIndex reads old and new reports, keeps flaky apart and sorts not fixed first, then by hits', async (t) => {
  const reports = await tempDir(t, 'index-test-');
  await buildReports(reports);
  const ix = await collectIndex(reports);
  assert.deepEqual(
    ix.reports.map((e) => e.report.signature),
    [SIG.open, SIG.script, SIG.old, SIG.fixed],
  );
  assert.deepEqual(
    ix.flaky.map((e) => [e.path, e.flaky]),
    [['flaky/subject-content-content-mismatch-eeeeeeeeee', true]],
  );
  assert.deepEqual(
    ix.unreadable.map((u) => u.path),
    ['broken-report'],
  );
  const [open, , old, fixed] = ix.reports;
  assert.equal(open!.status, 'reproducing');
  assert.match(storedCaseText(open!.report), /^1 step, 2 data operations, minimised from 4 steps, 7 data operations/);
  assert.equal(open!.report.lastSeen.corpus, 'refcount-4bit-shrink.json');
  assert.equal(fixed!.status, 'fixed');
  assert.equal(latestRecheck(fixed!.report)!.subjectVersion, 'instar 0.3.1');
  assert.equal(old!.status, 'not rechecked');
  assert.equal(old!.report.confirmation, null);
  assert.equal(old!.report.minimisation, null);
  assert.equal(ix.run!.seed, 20261125);
  assert.equal(ix.run!.coverage!.refcountByStep.length, 7);
});

test('writeReportsIndex writes index.md and index.html atomically, with every report, escaped', async (t) => {
  const reports = await tempDir(t, 'index-test-');
  await buildReports(reports);
  const written = await writeReportsIndex(reports);
  assert.deepEqual(written, { html: join(reports, 'index.html'), md: join(reports, 'index.md'), reports: 5 });
  assert.deepEqual(
    (await readdir(reports)).filter((n) => n.includes('.tmp-') && !n.startsWith('.subject')),
    [],
    'no temporary files left',
  );

  const md = await readFile(written.md, 'utf8');
  for (const sig of Object.values(SIG)) assert.ok(md.includes(`\`${sig}\``), `index.md lists ${sig} in a code span`);
  const signatures = md.slice(md.indexOf('## Signatures'), md.indexOf('## Flaky'));
  const flaky = md.slice(md.indexOf('## Flaky'), md.indexOf('## Unreadable'));
  assert.equal(
    signatures.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| status') && !l.startsWith('| ---'))
      .length,
    4,
  );
  assert.ok(!signatures.includes(SIG.flaky), 'the flaky report is not among the others');
  assert.ok(flaky.includes(SIG.flaky) && flaky.includes('1 of 3'));
  assert.ok(
    signatures.indexOf(SIG.open) < signatures.indexOf(SIG.script) &&
      signatures.indexOf(SIG.old) < signatures.indexOf(SIG.fixed),
    'not fixed first, then by hits',
  );
  assert.ok(md.includes('&lt;script&gt;alert(&quot;pwned&quot;)') || md.includes('&lt;script&gt;alert("pwned")'));
  assert.ok(!md.includes('<script>'), 'no raw HTML from a message');
  assert.match(md, /seed 1, iteration 0, 2026-11-20 08:15 UTC/);
  assert.match(md, /corpus refcount-4bit-shrink\.json, 2026-11-26 01:00 UTC/);
  assert.match(md, /fixed \(2026-11-25 09:00 UTC, instar 0\.3\.1\)/);
  assert.match(md, /reproducing \(2026-11-24 10:00 UTC, instar 0\.3\.0\)/);
  assert.match(md, /not rechecked/);
  assert.match(md, /not confirmed/);
  assert.match(md, /1 step, 2 data operations, minimised from 4 steps, 7 data operations/);
  assert.match(
    md,
    new RegExp(
      /\[report\.md\]\(subject-check-corruptions-aaaaaaaaaa\/report\.md\) · /.source +
        /\[repro\.sh\]\(subject-check-corruptions-aaaaaaaaaa\/repro\.sh\)/.source,
    ),
  );
  assert.match(md, /\[repro\.sh\]\(flaky\/subject-content-content-mismatch-eeeeeeeeee\/repro\.sh\)/);
  assert.match(md, /seed 20261125 · 250 iterations · new 6 · known 31/);
  assert.match(md, /\| 64-bit \| 18 \| 4 \| 0 \|/);
  assert.match(md, /248 agreed, 0 disagreed/);
  assert.match(md, /broken-report/);
  assert.ok(!md.includes('staging'), 'staging folders are not reports');

  const html = await readFile(written.html, 'utf8');
  assert.ok(!/<script[\s>]/i.test(html), 'no script element in the HTML');
  assert.ok(html.includes('&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;'));
});

test('an empty reports directory gives an index that says so', async (t) => {
  const reports = await tempDir(t, 'index-test-');
  const written = await writeReportsIndex(reports);
  assert.equal(written.reports, 0);
  const md = await readFile(written.md, 'utf8');
  assert.match(md, /No summary\.json\./);
  assert.match(md, /## Signatures\n\nNone\./);
});

/** The first of Debian's and other distributions' names for chromium found on PATH. */
async function findChromium(): Promise<string | null> {
  for (const name of ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']) {
    for (const d of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
      const file = join(d, name);
      if (
        await access(file, constants.X_OK).then(
          () => true,
          () => false,
        )
      )
        return file;
    }
  }
  return null;
}

const chromium = await findChromium();
const inCi = process.env.CI === 'true';

test(
  'index.html renders in headless chromium: one row per report, flaky apart, escaped',
  {
    skip:
      chromium === null && !inCi
        ? 'chromium is not installed (bash scripts/ensure-deps.sh --with-browser installs it)'
        : false,
    timeout: 240_000,
  },
  async (t) => {
    assert.ok(chromium, 'chromium is needed in CI: bash scripts/ensure-deps.sh --with-browser installs it');
    const reports = await tempDir(t, 'index-test-');
    const profile = await tempDir(t, 'index-chromium-');
    await buildReports(reports);
    const { html } = await writeReportsIndex(reports);
    const url = pathToFileURL(html).href;
    const flags = [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--hide-scrollbars',
      '--no-first-run',
      `--user-data-dir=${profile}`,
      '--window-size=1280,1600',
      '--force-device-scale-factor=1',
    ];

    const dump = await runCommand(chromium, [...flags, '--dump-dom', url], { timeoutMs: 90_000 });
    assert.equal(dump.exitCode, 0, `chromium --dump-dom failed: ${dump.spawnError ?? dump.stderr}`);
    const dom = dump.stdout;
    const signatures = dom.slice(dom.indexOf('<section id="signatures"'), dom.indexOf('<section id="flaky"'));
    const flaky = dom.slice(
      dom.indexOf('<section id="flaky"'),
      dom.indexOf('</section>', dom.indexOf('<section id="flaky"')),
    );
    const rows = (s: string) => s.match(/<tr class="report\b/g)?.length ?? 0;
    assert.ok(signatures.length > 0 && flaky.length > 0, 'both sections are in the DOM');
    assert.equal(rows(signatures), 4, 'one row per report, flaky excluded');
    assert.equal(rows(flaky), 1, 'the flaky report in its own section');
    assert.ok(flaky.includes(`data-signature="${SIG.flaky}"`));
    assert.ok(!/<script[\s>]/i.test(dom), 'no live script element');
    assert.ok(
      dom.includes('&lt;script&gt;alert("pwned")&lt;/script&gt; &amp; \'quotes\''),
      'the message is shown as text',
    );
    assert.ok(dom.includes('stored&lt;computed'));
    assert.ok(!dom.includes('staging'));

    const png = join(profile, 'index.png');
    const shot = await runCommand(chromium, [...flags, `--screenshot=${png}`, url], { timeoutMs: 90_000 });
    assert.equal(shot.exitCode, 0, `chromium --screenshot failed: ${shot.spawnError ?? shot.stderr}`);
    const bytes = await readFile(png);
    assert.ok(bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), 'a PNG');
    assert.ok((await stat(png)).size > 10 * 1024, `a non-trivial screenshot (${bytes.length} bytes)`);
    assert.equal(bytes.readUInt32BE(16), 1280, 'width');
    assert.equal(bytes.readUInt32BE(20), 1600, 'height');
    const keep = process.env.REPORT_INDEX_SCREENSHOT;
    if (keep) {
      await mkdir(dirname(keep), { recursive: true });
      await copyFile(png, keep);
    }
  },
);

test(
  "a report's picture of the damage renders in chromium, beside its row of the index",
  {
    skip:
      chromium === null && !inCi
        ? 'chromium is not installed (bash scripts/ensure-deps.sh --with-browser installs it)'
        : false,
    timeout: 240_000,
  },
  async (t) => {
    assert.ok(chromium, 'chromium is needed in CI: bash scripts/ensure-deps.sh --with-browser installs it');
    const reports = await tempDir(t, 'picture-test-');
    const profile = await tempDir(t, 'picture-chromium-');
    // the quick start's #365 report, as recorded (testdata/reports), with the picture it files
    const folder = join(reports, 'subject-check-corruptions-365');
    await mkdir(folder, { recursive: true });
    const recorded = join(ROOT, 'testdata', 'reports', '365-stride-corruptions', 'report.json');
    await copyFile(recorded, join(folder, 'report.json'));
    const svg = reportPicture(parseReport(await readFile(recorded, 'utf8'), recorded))!;
    await writeFile(join(folder, PICTURE_FILE), svg);
    const { html } = await writeReportsIndex(reports);
    const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', `--user-data-dir=${profile}`];
    const index = await runCommand(chromium, [...flags, '--dump-dom', pathToFileURL(html).href], { timeoutMs: 90_000 });
    assert.equal(index.exitCode, 0, index.stderr);
    assert.match(index.stdout, /<img src="subject-check-corruptions-365\/damage\.svg" alt="damage picture"/);
    // chromium parses the picture as SVG: its marks are elements of the document it renders
    const url = pathToFileURL(join(folder, PICTURE_FILE)).href;
    const dom = await runCommand(chromium, [...flags, '--dump-dom', url], { timeoutMs: 90_000 });
    assert.equal(dom.exitCode, 0, dom.stderr);
    const marks = [...dom.stdout.matchAll(/data-side="(\w+)" data-cluster="(\d+)"/g)].map((m) => `${m[1]}:${m[2]}`);
    assert.ok(marks.length > 0 && marks.every((m) => m.startsWith('subject:')), marks.join(' '));
    const png = join(profile, 'damage.png');
    const shot = await runCommand(chromium, [...flags, '--window-size=1000,420', `--screenshot=${png}`, url], {
      timeoutMs: 90_000,
    });
    assert.equal(shot.exitCode, 0, shot.stderr);
    assert.ok((await stat(png)).size > 10 * 1024, 'a non-trivial screenshot');
    const keep = process.env.DAMAGE_PICTURE_SCREENSHOT;
    if (keep) await copyFile(png, keep);
  },
);

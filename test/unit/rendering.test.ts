// Rendering and the report store on real reports (testdata/reports: from fuzz runs, and as older
// harnesses wrote them) and a small reports directory (testdata/index): report.md, repro.sh,
// issue-title.txt, issue.md, index.md and index.html against their golden files.
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { signatureOf } from '../../oracles/finding.ts';
import { collectIndex, indexHtml, indexMarkdown } from '../../reporting/index-page.ts';
import { MAX_TITLE, signatureLine } from '../../reporting/issues.ts';
import { parseReport, REPORT_FORMAT, type Report } from '../../reporting/store.ts';
import { INDEX_CASE, indexGoldens, reportCases, reportGoldens, TESTDATA, UPDATE_HINT } from './testdata.ts';

const folders = await reportCases();
const stored = (file: string) => readFile(join(TESTDATA, file), 'utf8');
const report = async (folder: string): Promise<Report> =>
  parseReport(await stored(join(folder, 'report.json')), join(folder, 'report.json'));

describe('testdata/reports: rendered files are the golden files', () => {
  for (const folder of folders) {
    test(folder, async () => {
      for (const [name, text] of Object.entries(await reportGoldens(folder)))
        assert.equal(text, await stored(join(folder, name)), `${folder}/${name}: ${UPDATE_HINT}`);
    });
  }
});

test('testdata/index: index.md and index.html are the golden files', async () => {
  for (const [name, text] of Object.entries(await indexGoldens()))
    assert.equal(text, await stored(join(INDEX_CASE, name)), `${INDEX_CASE}/${name}: ${UPDATE_HINT}`);
});

describe('the report store', () => {
  test('reads every recorded report, of every format, as the current format', async () => {
    assert.ok(folders.length > 0);
    for (const folder of folders) assert.equal((await report(folder)).formatVersion, REPORT_FORMAT, folder);
  });
  test('gives a format 1 report the triage fields it lacked, and its case the image fields', async () => {
    const r = await report('reports/format-1-check-corruptions');
    const raw = JSON.parse(await stored('reports/format-1-check-corruptions/report.json')) as Record<string, unknown>;
    assert.equal(raw.formatVersion, 1);
    assert.equal('confirmation' in raw, false);
    assert.equal(r.confirmation, null);
    assert.equal(r.minimisation, null);
    assert.equal(r.flaky, false);
    assert.deepEqual(r.rechecks, []);
    assert.deepEqual(r.originalCase, r.case);
    assert.equal(r.case.image.compressionType, 'zlib');
    assert.equal(r.case.image.backing, null);
  });
  test('reads the resize steps of a format 3 report, which knew no other operation, as resizes', async () => {
    const raw = JSON.parse(await stored('reports/format-3-corruptions/report.json')) as { formatVersion: number };
    assert.equal(raw.formatVersion, 3);
    const r = await report('reports/format-3-corruptions');
    assert.ok(r.steps.length > 0 && r.steps.every((s) => s.operation === 'resize'));
    assert.equal(r.signatureScheme, 'cause');
  });
  test('keeps the coarse signatures reports of formats 1 and 2 were filed with', async () => {
    for (const folder of folders.filter((f) => /format-[12]-/.test(f)))
      assert.equal((await report(folder)).signatureScheme, 'coarse', folder);
  });
  test("files today's reports under their finding's signature", async () => {
    const current = folders.filter((f) => !/format-[12]-/.test(f));
    assert.ok(current.length > 0);
    for (const folder of current) {
      const r = await report(folder);
      assert.equal(r.signatureScheme, 'cause', folder);
      assert.equal(r.signature, signatureOf(r.finding), folder);
    }
  });
});

describe('rendering', () => {
  test('an issue carries its signature line and a title GitHub lists well', async () => {
    for (const folder of folders) {
      const [r, files] = [await report(folder), await reportGoldens(folder)];
      assert.ok(files['issue.md']!.split('\n').includes(signatureLine(r.signature)), folder);
      assert.ok(files['issue-title.txt']!.trimEnd().length <= MAX_TITLE, folder);
      assert.ok(files['issue.md']!.includes(files['repro.sh']!.split('\n')[1]!), `${folder}: repro.sh inline`);
    }
  });
  test('report.md says when a finding is flaky or qemu-img behaviour', async () => {
    assert.match(
      (await reportGoldens('reports/flaky-refused'))['report.md']!,
      /flaky: it does not reproduce every time/,
    );
    assert.match(
      (await reportGoldens('reports/control-image-modified'))['report.md']!,
      /^# qemu-img \(reference\) behaviour/,
    );
  });
  test('the index puts what is not fixed first, flaky reports apart and damaged folders last', async () => {
    const md = (await indexGoldens())['index.md']!;
    const row = (signature: string) => md.split('\n').findIndex((l) => l.includes(signature));
    const reproducing = row('unchanged-on-refusal/image-modified-on-refusal/reference');
    const fixed = row('check/corruptions/subject');
    assert.ok(reproducing > 0 && fixed > reproducing, 'not fixed before fixed');
    assert.ok(row('outcome/refused/subject') > md.split('\n').indexOf('## Flaky'), 'the flaky one under Flaky');
    assert.match(md, /## Unreadable report folders\n\n- `damaged`: reports\/damaged\/report\.json is not valid JSON/);
  });
  test("the index's coverage names the formats a run covered, and only those", async () => {
    const ix = await indexOf(async (reports) => {
      const summary = JSON.parse(await readFile(join(reports, 'summary.json'), 'utf8'));
      summary.coverage.formats = { qcow2: { cases: 30, grow: 20, shrink: 25 }, raw: { cases: 0, grow: 0, shrink: 0 } };
      await writeFile(join(reports, 'summary.json'), JSON.stringify(summary));
    });
    assert.match(indexMarkdown(ix), /^Formats: qcow2 30 cases \(20 grows, 25 shrinks\)\.$/m);
    assert.match(indexHtml(ix), /<p>Formats: qcow2 30 cases \(20 grows, 25 shrinks\)\.<\/p>/);
  });
  test("the index's coverage has a row per operation the run drove, by refcount width", async () => {
    const ix = await indexOf(async (reports) => {
      const summary = JSON.parse(await readFile(join(reports, 'summary.json'), 'utf8'));
      summary.coverage.operations = {
        resize: { steps: 12, accepted: 9, kinds: { grow: 5, shrink: 7 } },
        amend: { steps: 0, accepted: 0, kinds: {} },
        snapshot: { steps: 6, accepted: 4, kinds: { create: 4, apply: 2 } },
      };
      summary.coverage.operationByRefcount = { resize: { '1': 3, '16': 6 }, snapshot: { '64': 1, '16': 3 } };
      await writeFile(join(reports, 'summary.json'), JSON.stringify(summary));
    });
    const md = indexMarkdown(ix);
    assert.match(md, /^\| snapshot \| 6 \| 4 \| 16-bit 3, 64-bit 1 \| create 4, apply 2 \|$/m);
    assert.match(md, /^\| resize \| 12 \| 9 \| 1-bit 3, 16-bit 6 \| grow 5, shrink 7 \|$/m);
    assert.doesNotMatch(md, /^\| amend /m);
    assert.match(
      indexHtml(ix),
      /<tr><td>snapshot<\/td><td class="num">6<\/td><td class="num">4<\/td><td>16-bit 3, 64-bit 1<\/td>/,
    );
  });
});

/** The index of a copy of testdata/index/reports, changed by `edit` first. */
async function indexOf(edit: (reports: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'index-formats-'));
  try {
    const reports = join(dir, 'reports');
    await cp(join(TESTDATA, INDEX_CASE, 'reports'), reports, { recursive: true });
    await edit(reports);
    return await collectIndex(reports);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

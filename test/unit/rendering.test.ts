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
import { jobSummaryMarkdown } from '../../reporting/job-summary.ts';
import {
  boxesOf,
  brokenRegions,
  filePicture,
  marksOf,
  regionKind,
  reportPicture,
} from '../../reporting/damage-picture.ts';
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

describe('the job summary', () => {
  const recorded = async () =>
    JSON.parse(await stored(join(INDEX_CASE, 'reports', 'summary.json'))) as Parameters<
      typeof jobSummaryMarkdown
    >[0]['summary'];
  test('lists every new signature by hits, most first, and shows the top one’s repro.sh', async () => {
    const md = await jobSummaryMarkdown({ summary: await recorded(), topRepro: 'echo top\n', artifact: null });
    const rows = md.split('\n').filter((l) => l.startsWith('| `'));
    assert.deepEqual(
      rows.map((r) => r.split(' | ')[1]),
      ['25', '1'],
    );
    assert.match(md, /^### Reproduce `content\/content-differs\/subject\/region=grown,subject=data,qemu=zeros`$/m);
    assert.match(md, /```sh\necho top\n```/);
    assert.doesNotMatch(md, /Reports: artifact/);
  });
  test('a clean run says so, and still names the registry entries that matched nothing', async () => {
    const summary = { ...(await recorded()), newDivergences: 0, signatures: [], unusedKnown: ['a', 'b'] };
    const md = jobSummaryMarkdown({ summary, topRepro: null, artifact: 'reports-1' });
    assert.match(md, /^## instar fuzz: no new divergences$/m);
    assert.doesNotMatch(md, /\| new signature/);
    assert.match(md, /Registry entries that matched nothing: 2<\/summary>\n\n`a`, `b`/);
    assert.match(md, /Reports: artifact `reports-1`\./);
  });
  test('a signature with pipes and backticks stays one table cell and one code span', () => {
    const summary = {
      seed: 1,
      iterations: 1,
      elapsedSeconds: 1,
      subject: { dialect: 'instar', program: 'instar' },
      tools: { qemuImg: 'qemu-img 7.2' },
      newDivergences: 1,
      knownDivergences: 0,
      corpus: { available: 0, run: 0, newDivergences: 0, knownDivergences: 0 },
      signatures: [{ signature: 'outcome/refused/subject/a | `b`', folder: 'f', hitsThisRun: 1 }],
      flaky: [],
      setupErrors: [],
      unusedKnown: [],
      messageDiffers: {},
    } as unknown as Parameters<typeof jobSummaryMarkdown>[0]['summary'];
    const md = jobSummaryMarkdown({ summary, topRepro: 'x ``` y', artifact: null });
    assert.ok(md.includes('\n| `` outcome/refused/subject/a \\| `b` `` | 1 | `f` |\n'), md);
    assert.match(md, /````sh\nx ``` y\n````/);
  });
});

describe('the picture of the damage', () => {
  /** The marks of one side in damage.svg: cluster -> mark kinds. */
  const marksIn = (svg: string, side: 'reference' | 'subject') => {
    const out = new Map<number, string[]>();
    for (const m of svg.matchAll(/class="mark mark-([a-z-]+)" data-side="(\w+)" data-cluster="(\d+)"/g))
      if (m[2] === side) out.set(Number(m[3]), [...(out.get(Number(m[3])) ?? []), m[1]!]);
    return out;
  };
  test("#365's picture marks exactly what its findings name, and the block holding it, subject only", async () => {
    const r = await report('reports/365-stride-corruptions');
    const svg = reportPicture(r)!;
    assert.ok(svg, 'the report has a picture');
    assert.equal(marksIn(svg, 'reference').size, 0, 'qemu-img result: nothing marked');
    const marked = marksIn(svg, 'subject');
    // what the findings name: check's ERROR lines, the structure oracle's listed refcounts and COPIED flags
    const named = new Map<number, Set<string>>();
    const name = (cluster: number, kind: string) => named.set(cluster, (named.get(cluster) ?? new Set()).add(kind));
    for (const f of r.findings) {
      const ev = f.evidence as Record<string, unknown> | unknown[];
      if (f.oracle === 'check')
        for (const m of String((ev as { stderr?: string }).stderr).matchAll(/ERROR cluster (\d+) refcount=/g))
          name(Number(m[1]), 'undercounted');
      if (f.kind === 'refcount-mismatch')
        for (const l of (ev as { listed: { cluster: number; class: string }[] }).listed) name(l.cluster, l.class);
      if (f.kind === 'copied-flag-mismatch')
        for (const c of ev as { cluster: number }[]) name(c.cluster, 'copied-flag');
    }
    const withoutBlocks = new Map(
      [...marked].map(([c, kinds]) => [c, new Set(kinds.filter((k) => k !== 'block-holds-wrong-refcounts'))]),
    );
    for (const [c, kinds] of withoutBlocks) if (kinds.size === 0) withoutBlocks.delete(c);
    assert.deepEqual(withoutBlocks, named);
    // refcount_bits 1 with 512-byte clusters: one block (cluster 2) holds every refcount listed
    const blocks = [...marked].filter(([, k]) => k.includes('block-holds-wrong-refcounts')).map(([c]) => c);
    assert.deepEqual(blocks, [2]);
    assert.match(svg, /<title>cluster 2: refcount-block; refcount 0, referenced 1 times; holds 10 of the wrong/);
  });
  test('a report without both structures, or with structures alike, has none', async () => {
    assert.equal(reportPicture(await report('reports/two-faults-corruptions')), null, 'recorded before structures');
    const r = await report('reports/365-stride-corruptions');
    const same = r.steps.map((s) => ({
      ...s,
      structures: s.structures && { ...s.structures, subject: s.structures.reference },
    }));
    assert.equal(reportPicture({ ...r, steps: same }), null);
  });
  test('runs of alike clusters collapse into one box; marked clusters and runs of two stay apart', () => {
    const sketch = {
      clusterSize: 512,
      refcountBits: 16,
      fileLength: 512 * 10,
      clusterRoles: [
        { first: 0, last: 0, role: 'header' as const, shared: false },
        { first: 1, last: 6, role: 'data' as const, shared: false },
        { first: 8, last: 9, role: 'l2' as const, shared: false },
      ],
      refcountBlocks: [],
      refcountMismatches: [
        { cluster: 4, stored: 0, expected: 1, role: 'data' as const, class: 'undercounted' as const },
      ],
      mismatchCounts: { undercounted: 1, overcounted: 0, leaked: 0 },
      copiedMismatches: [],
      copiedMismatchCount: 0,
      beyondEof: [{ role: 'data' as const, cluster: 12 }],
      beyondEofCount: 1,
      // an L2 table (cluster 8) mapping a guest cluster past the disk's end
      mappingsBeyondEnd: [{ table: 'l2' as const, index: 40, cluster: 8 }],
      mappingsBeyondEndCount: 1,
    };
    const boxes = boxesOf(sketch, marksOf(sketch)).map((b) => `${b.first}-${b.last}:${b.role}:${b.marks.length}`);
    assert.deepEqual(boxes, [
      '0-0:header:0',
      '1-3:data:0',
      '4-4:data:1',
      '5-5:data:0',
      '6-6:data:0',
      '7-7:free:0',
      '8-8:l2:1',
      '9-9:l2:0',
      '10-10:beyond-file:0',
      '11-11:beyond-file:0',
      '12-12:beyond-file:1',
    ]);
    const long = { ...sketch, clusterRoles: [{ first: 0, last: 99, role: 'data' as const, shared: false }] };
    assert.deepEqual(
      boxesOf(long, marksOf(long)).map((b) => `${b.first}-${b.last}`),
      ['0-3', '4-4', '5-7', '8-8', '9-11', '12-12', '13-99'],
    );
  });
});

describe('the picture of a vhdx, vmdk or vpc file', () => {
  const sketch = (broken: { rule: string; message: string }[], grains = 3) => ({
    format: 'vmdk' as const,
    virtualSize: 1 << 20,
    fileLength: 65536,
    broken,
    regions: [
      { name: 'header', offset: 0, length: 512 },
      { name: 'gd', offset: 512, length: 512 },
      ...Array.from({ length: grains }, (_, i) => ({ name: `grain ${i}`, offset: 1024 + i * 512, length: 512 })),
    ],
  });
  const step = (reference: ReturnType<typeof sketch>, subject: ReturnType<typeof sketch>) =>
    [{ index: 0, formatStructures: { reference, subject } }] as unknown as Parameters<typeof filePicture>[0];
  test('regions are named by kind; a broken rule marks its structure, or the region its message places', () => {
    assert.equal(regionKind('extent base-s001.vmdk: grain 128'), 'grain');
    assert.equal(regionKind('footer-copy'), 'footer-copy');
    const s = sketch([
      { rule: 'gd-inside-file', message: 'the grain directory lies past the end' },
      { rule: 'grain-inside-file', message: 'grain 1 at 1536 (+512) lies past the end' },
    ]);
    assert.deepEqual([...brokenRegions(s).keys()], ['gd', 'grain 1']);
  });
  test('drawn where the results differ, with the marks on the side that breaks the rules', () => {
    assert.equal(filePicture(step(sketch([]), sketch([])), 0, 't'), null);
    const svg = filePicture(step(sketch([]), sketch([{ rule: 'header-magic', message: 'bad' }], 2)), 0, 't')!;
    assert.deepEqual(
      [...svg.matchAll(/data-side="(\w+)" data-region="([^"]+)"/g)].map((m) => `${m[1]}:${m[2]}`),
      ['subject:header'],
    );
    assert.match(svg, />grain ×3</);
    assert.match(svg, />grain ×2</);
  });
});

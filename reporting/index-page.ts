import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  confirmationText,
  inlineCode,
  latestRecheck,
  originText,
  originWhere,
  recheckText,
  shortDate,
  storedCaseText,
} from './render.ts';
import { FLAKY_DIR, readAllReports, writeAtomic, type Origin, type Report } from './store.ts';
import { PICTURE_FILE } from './damage-picture.ts';

// The reports index: reports/index.html and reports/index.md, rebuilt from what is on disk (every
// report folder's report.json and the last run's summary.json), so it is always whole and never
// depends on which run wrote which folder. Reports are read through the store (store.ts), which
// upgrades older formats; one that cannot be read is listed as such rather than failing the index.
// The last run's summary.json may come from an older harness: it is read field by field.
//
// Entry point: writeReportsIndex(reportsDir). The pieces (collectIndex, indexMarkdown, indexHtml)
// are exported for callers that want the text without writing it.

/** One report folder as the index shows it. */
export interface IndexEntry {
  /** Path of the folder relative to the reports directory: `<folder>` or `flaky/<folder>`. */
  path: string;
  flaky: boolean;
  report: Report;
  status: 'fixed' | 'reproducing' | 'not rechecked';
  /** The folder has a picture of the damage (damage.svg). */
  picture?: boolean;
}

/** The last run's headline and coverage, from summary.json. */
export interface RunHeadline {
  seed: number | null;
  iterations: number | null;
  iterationsRequested: number | null;
  newDivergences: number | null;
  knownDivergences: number | null;
  signatures: number | null;
  elapsedSeconds: number | null;
  stoppedEarly: string | null;
  shard: string | null;
  subject: string | null;
  qemuImg: string | null;
  /** summary.json's own `date` when it has one, else the file's modification time. */
  date: string;
  coverage: CoverageView | null;
}

export interface CoverageView {
  /** Per operation driven: its steps, those qemu-img accepted (per refcount width), their kinds. */
  operations: {
    operation: string;
    steps: number;
    accepted: number;
    byWidth: [string, number][];
    kinds: [string, number][];
  }[];
  /** Cases per image format and the grows and shrinks qemu-img accepted on them. */
  formats: { format: string; cases: number; grow: number; shrink: number }[];
  /** Rows of the refcount width x step table (`coverageTable` in triage/coverage.ts). */
  refcountByStep: { bits: string; grow: number; shrink: number; shrinkDiscarding: number }[];
  features: [string, number][];
  oracles: [string, number][];
  readerSelfCheck: { agreed: number; disagreed: number } | null;
}

export interface ReportsIndex {
  /** Report folders directly in the reports directory, not flaky; sorted (see sortEntries). */
  reports: IndexEntry[];
  /** Folders under flaky/ (and any report marked flaky: true), sorted the same way. */
  flaky: IndexEntry[];
  /** Folders whose report.json could not be read or parsed. */
  unreadable: { path: string; error: string }[];
  run: RunHeadline | null;
  generatedAt: string;
}

// ---- reading ------------------------------------------------------------------------------------

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export function indexEntry(report: Report, path: string): IndexEntry {
  const latest = latestRecheck(report);
  const status = latest === null ? 'not rechecked' : latest.reproduced ? 'reproducing' : 'fixed';
  return { path, flaky: path.startsWith(`${FLAKY_DIR}/`) || report.flaky, report, status };
}

/** Not fixed first (reproducing or not rechecked), then by hits (most first), then signature. */
export function sortEntries(entries: IndexEntry[]): IndexEntry[] {
  const fixed = (e: IndexEntry) => (e.status === 'fixed' ? 1 : 0);
  return [...entries].sort(
    (a, b) =>
      fixed(a) - fixed(b) ||
      b.report.hits - a.report.hits ||
      a.report.signature.localeCompare(b.report.signature) ||
      a.path.localeCompare(b.path),
  );
}

function coverageView(v: unknown): CoverageView | null {
  if (!isObj(v)) return null;
  const counts = (x: unknown): [string, number][] =>
    isObj(x)
      ? Object.entries(x).flatMap(([k, n]) => (num(n) === null ? [] : [[k, n as number] as [string, number]]))
      : [];
  const rows = isObj(v.refcountByStep)
    ? Object.entries(v.refcountByStep)
        .filter(([, row]) => isObj(row))
        .map(([bits, row]) => {
          const r = row as Record<string, unknown>;
          return {
            bits,
            grow: num(r.grow) ?? 0,
            shrink: num(r.shrink) ?? 0,
            shrinkDiscarding: num(r.shrinkDiscarding) ?? 0,
          };
        })
        .sort((a, b) => Number(a.bits) - Number(b.bits))
    : [];
  const rs = isObj(v.readerSelfCheck) ? v.readerSelfCheck : null;
  const formats = isObj(v.formats)
    ? Object.entries(v.formats).flatMap(([format, f]) =>
        isObj(f) ? [{ format, cases: num(f.cases) ?? 0, grow: num(f.grow) ?? 0, shrink: num(f.shrink) ?? 0 }] : [],
      )
    : [];
  const byRefcount = isObj(v.operationByRefcount) ? v.operationByRefcount : {};
  const operations = isObj(v.operations)
    ? Object.entries(v.operations).flatMap(([operation, o]) =>
        isObj(o) && (num(o.steps) ?? 0) > 0
          ? [
              {
                operation,
                steps: num(o.steps) ?? 0,
                accepted: num(o.accepted) ?? 0,
                byWidth: counts(byRefcount[operation]).sort((a, b) => Number(a[0]) - Number(b[0])),
                kinds: counts(o.kinds),
              },
            ]
          : [],
      )
    : [];
  return {
    operations,
    formats,
    refcountByStep: rows,
    features: counts(v.features),
    oracles: counts(v.oracles),
    readerSelfCheck: rs ? { agreed: num(rs.agreed) ?? 0, disagreed: num(rs.disagreed) ?? 0 } : null,
  };
}

async function readRun(reportsDir: string): Promise<RunHeadline | null> {
  const file = join(reportsDir, 'summary.json');
  let raw: unknown;
  let mtime: Date;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
    mtime = (await stat(file)).mtime;
  } catch {
    return null;
  }
  if (!isObj(raw)) return null;
  const shard =
    isObj(raw.shard) && num(raw.shard.index) !== null ? `${raw.shard.index}/${num(raw.shard.count) ?? '?'}` : null;
  const subject = isObj(raw.subject) ? str(raw.subject.program) : null;
  const tools = isObj(raw.tools) ? raw.tools : {};
  return {
    seed: num(raw.seed),
    iterations: num(raw.iterations),
    iterationsRequested: num(raw.iterationsRequested),
    newDivergences: num(raw.newDivergences),
    knownDivergences: num(raw.knownDivergences),
    signatures: Array.isArray(raw.signatures) ? raw.signatures.length : null,
    elapsedSeconds: num(raw.elapsedSeconds),
    stoppedEarly: str(raw.stoppedEarly),
    shard,
    subject: str(tools.subject) ?? subject,
    qemuImg: str(tools.qemuImg),
    date: str(raw.date) ?? mtime.toISOString(),
    coverage: coverageView(raw.coverage),
  };
}

/** Reads every report folder (`<dir>/*\/report.json`, `<dir>/flaky/*\/report.json`) and the last
 * run's summary.json. Never throws on a bad report: it is listed in `unreadable`. */
export async function collectIndex(reportsDir: string, now = new Date()): Promise<ReportsIndex> {
  const all = await readAllReports(reportsDir);
  const entries = await Promise.all(
    all.reports.map(async ({ folder, report }) => {
      const picture = await stat(join(reportsDir, folder, PICTURE_FILE)).then(
        (st) => st.isFile(),
        () => false,
      );
      return { ...indexEntry(report, folder), ...(picture ? { picture } : {}) };
    }),
  );
  return {
    reports: sortEntries(entries.filter((e) => !e.flaky)),
    flaky: sortEntries(entries.filter((e) => e.flaky)),
    unreadable: all.unreadable.map((u) => ({ path: u.folder, error: u.error })),
    run: await readRun(reportsDir),
    generatedAt: now.toISOString(),
  };
}

// ---- wording -----------------------------------------------------------------------------------

const fileLink = (path: string, file: string) => `${path.split('/').map(encodeURIComponent).join('/')}/${file}`;

/** The reference and the subject the last run used: a divergence is against that qemu version. */
const toolsText = (r: RunHeadline) => [r.qemuImg, r.subject && `subject: ${r.subject}`].filter(Boolean).join(' · ');

function headlineText(r: RunHeadline): string {
  const requested =
    r.iterationsRequested !== null && r.iterationsRequested !== r.iterations ? ` of ${r.iterationsRequested}` : '';
  const parts = [
    `seed ${r.seed ?? '?'}`,
    `${r.iterations ?? '?'} iterations${requested}`,
    `new ${r.newDivergences ?? '?'}`,
    `known ${r.knownDivergences ?? '?'}`,
  ];
  if (r.signatures !== null) parts.push(`${r.signatures} signature${r.signatures === 1 ? '' : 's'}`);
  if (r.shard) parts.push(`shard ${r.shard}`);
  if (r.stoppedEarly) parts.push(`stopped early: ${r.stoppedEarly}`);
  if (r.elapsedSeconds !== null) parts.push(`${r.elapsedSeconds} s`);
  parts.push(shortDate(r.date));
  return parts.join(' · ');
}

// ---- markdown -----------------------------------------------------------------------------------

/** Text safe in a markdown table cell: no pipes or newlines, and no raw HTML. */
const mdCell = (s: string) =>
  s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/\\/g, '\\\\')
    .replace(/\|/g, '\\|')
    .replace(/\s*\r?\n\s*/g, ' ');
/** An inline code span in a table cell: pipes escaped. */
const mdCode = (s: string) => inlineCode(s).replace(/\|/g, '\\|');

function mdRow(e: IndexEntry): string {
  const r = e.report;
  const f = r.finding;
  const issue = r.issue?.url ? ` [issue](${r.issue.url})` : '';
  const picture = e.picture ? ` · [damage.svg](${fileLink(e.path, PICTURE_FILE)})` : '';
  const files =
    `[report.md](${fileLink(e.path, 'report.md')}) · [repro.sh](${fileLink(e.path, 'repro.sh')})` +
    `${picture}${issue}`;
  const cells = [
    mdCell(e.status === 'fixed' ? '**fixed**' : 'not fixed'),
    `${mdCode(r.signature)}<br>${mdCell(f.message)}`,
    mdCell(`${f.side} / ${f.oracle} / ${f.kind}`),
    String(r.hits),
    mdCell(originText(r.firstSeen)),
    mdCell(originText(r.lastSeen)),
    mdCell(confirmationText(r)),
    mdCell(recheckText(r)),
    mdCell(storedCaseText(r)),
    files,
  ];
  return `| ${cells.join(' | ')} |`;
}

function mdTable(entries: IndexEntry[]): string[] {
  if (entries.length === 0) return ['None.'];
  const rows = entries.map(mdRow);
  return [
    '| status | signature and finding | side / oracle / kind | hits | first seen | last seen | ' +
      'confirmed | latest recheck | stored case | files |',
    '| --- | --- | --- | ---: | --- | --- | --- | --- | --- | --- |',
    ...rows,
  ];
}

/** "qcow2 375 cases (300 grows, 280 shrinks), raw 125 cases (...)": every format a run covered. */
function formatsLine(cov: CoverageView): string | null {
  const covered = cov.formats.filter((f) => f.cases > 0);
  if (covered.length === 0) return null;
  const each = covered.map((f) => `${f.format} ${f.cases} cases (${f.grow} grows, ${f.shrink} shrinks)`);
  return `Formats: ${each.join(', ')}.`;
}

/** "create 4, apply 3": counts in one line. */
const countsText = (xs: [string, number][]) => xs.map(([k, n]) => `${k} ${n}`).join(', ');
/** "16-bit 4, 64-bit 1". */
const widthsText = (xs: [string, number][]) => countsText(xs.map(([b, n]) => [`${b}-bit`, n]));

function mdCoverage(cov: CoverageView): string[] {
  const formats = formatsLine(cov);
  const operations = cov.operations.length
    ? [
        '| operation | steps | accepted | accepted per refcount width (qcow2) | kinds |',
        '| --- | ---: | ---: | --- | --- |',
        ...cov.operations.map(
          (o) =>
            `| ${mdCell(o.operation)} | ${o.steps} | ${o.accepted} | ${mdCell(widthsText(o.byWidth))} | ` +
            `${mdCell(countsText(o.kinds))} |`,
        ),
        '',
      ]
    : [];
  const lines = [
    ...operations,
    ...(formats ? [mdCell(formats), ''] : []),
    '| refcount | grows | shrinks | shrinks discarding |',
    '| ---: | ---: | ---: | ---: |',
    ...cov.refcountByStep.map((r) => `| ${r.bits}-bit | ${r.grow} | ${r.shrink} | ${r.shrinkDiscarding} |`),
    '',
  ];
  lines.push(
    `Features: ${cov.features.length ? cov.features.map(([k, n]) => `${mdCell(k)} ${n}`).join(', ') : 'none'}.`,
  );
  if (cov.oracles.length)
    lines.push('', `Oracle runs: ${cov.oracles.map(([k, n]) => `${mdCell(k)} ${n}`).join(', ')}.`);
  if (cov.readerSelfCheck)
    lines.push(
      '',
      `qcow2 reader vs qemu-img check on base images: ` +
        `${cov.readerSelfCheck.agreed} agreed, ${cov.readerSelfCheck.disagreed} disagreed.`,
    );
  return lines;
}

const FLAKY_NOTE =
  'Findings that did not reproduce reliably when re-run for confirmation; kept apart from the signatures above.';

/** index.md: the same content as index.html, for a terminal or a repository browser. */
export function indexMarkdown(ix: ReportsIndex): string {
  const notFixed = ix.reports.filter((e) => e.status !== 'fixed').length;
  const lines = [
    '# Fuzzer reports',
    '',
    `${ix.reports.length} signature${ix.reports.length === 1 ? '' : 's'} (${notFixed} not fixed), ` +
      `${ix.flaky.length} flaky. Generated ${shortDate(ix.generatedAt)}.`,
    '',
    '## Last run',
    '',
    ix.run === null ? 'No summary.json.' : headlineText(ix.run),
    ...(ix.run && toolsText(ix.run) ? ['', toolsText(ix.run)] : []),
    '',
    '## Signatures',
    '',
    ...mdTable(ix.reports),
    '',
    '## Flaky',
    '',
    FLAKY_NOTE,
    '',
    ...mdTable(ix.flaky),
    '',
  ];
  if (ix.unreadable.length)
    lines.push(
      '## Unreadable report folders',
      '',
      ...ix.unreadable.map((u) => `- ${mdCode(u.path)}: ${mdCell(u.error)}`),
      '',
    );
  if (ix.run?.coverage)
    lines.push(
      '## Coverage of the last run',
      '',
      'Steps qemu-img accepted, per refcount width:',
      '',
      ...mdCoverage(ix.run.coverage),
      '',
    );
  return lines.join('\n');
}

// ---- HTML ---------------------------------------------------------------------------------------

/** Escapes text for HTML element content and quoted attribute values. */
export const escapeHtml = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
const h = escapeHtml;

// the declarations of the longest rules, apart so that no line of the CSS passes the width
const SANS = '-apple-system, "Segoe UI", "Liberation Sans", "DejaVu Sans", Arial, sans-serif';
const CARD =
  'border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 120px; background: var(--soft);';
const BADGE =
  'display: inline-block; padding: 1px 8px; border-radius: 10px; ' +
  'font-size: 12px; font-weight: 600; white-space: nowrap;';
const CSS = `
  :root { --fg: #1f2328; --muted: #636c76; --line: #d8dee4; --bg: #ffffff; --soft: #f6f8fa;
          --red: #cf222e; --red-bg: #ffebe9; --green: #1a7f37; --green-bg: #dafbe1;
          --amber: #9a6700; --amber-bg: #fff8c5; --blue: #0969da; }
  * { box-sizing: border-box; }
  body { margin: 0; padding: 24px 24px 36px; font: 13px/1.45 ${SANS};
         color: var(--fg); background: var(--bg); }
  h1 { font-size: 22px; margin: 0 0 4px; }
  h2 { font-size: 16px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
  h2 .count { color: var(--muted); font-weight: normal; }
  p.lede, p.note { color: var(--muted); margin: 0 0 8px; }
  .cards { display: flex; gap: 12px; margin: 16px 0 4px; flex-wrap: wrap; }
  .card { ${CARD} }
  .card b { display: block; font-size: 20px; }
  .card span { color: var(--muted); }
  table { border-collapse: collapse; width: 100%; }
  table.reports { table-layout: fixed; }
  table.reports th { white-space: normal; }
  col.status { width: 116px; } col.where { width: 136px; } col.hits { width: 50px; } col.seen { width: 150px; }
  col.confirmed { width: 80px; } col.case { width: 146px; } col.files { width: 84px; }
  th, td { text-align: left; vertical-align: top; padding: 7px 8px; border-bottom: 1px solid var(--line); }
  th { background: var(--soft); font-weight: 600; white-space: nowrap; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.fixed td { color: var(--muted); }
  code, .sig { font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace; }
  .sig { font-weight: 600; overflow-wrap: anywhere; }
  .msg { margin-top: 2px; overflow-wrap: anywhere; }
  .small { color: var(--muted); font-size: 12px; }
  .badge { ${BADGE} }
  .badge.reproducing { color: var(--red); background: var(--red-bg); }
  .badge.not-rechecked { color: var(--amber); background: var(--amber-bg); }
  .badge.fixed { color: var(--green); background: var(--green-bg); }
  a { color: var(--blue); text-decoration: none; }
  a:hover { text-decoration: underline; }
  .files a { display: block; white-space: nowrap; }
  .empty { color: var(--muted); font-style: italic; padding: 8px 0; }
  table.coverage { width: auto; }
  table.coverage th, table.coverage td { padding: 4px 12px; }
  table.coverage td.zero { color: var(--red); background: var(--red-bg); }
  footer { margin-top: 28px; color: var(--muted); font-size: 12px; }
`;

/** Escaped, with line-break opportunities after the separators of a signature. */
const breakable = (s: string) => h(s).replace(/([/,=])/g, '$1<wbr>');

function htmlSeen(o: Origin): string {
  return `${h(originWhere(o))}<div class="small">${h(shortDate(o.date, false))}</div>`;
}

function htmlRow(e: IndexEntry): string {
  const r = e.report;
  const f = r.finding;
  const badgeClass = e.status.replace(' ', '-');
  const status = [`<span class="badge ${badgeClass}">${h(e.status)}</span>`];
  const latest = latestRecheck(r);
  // the day only: the time does not fit the column, and the markdown index has it
  if (latest)
    status.push(
      `<div class="small">${h(shortDate(latest.date, false).slice(0, 10))}<br>${h(latest.subjectVersion)}</div>`,
    );
  const size = [h(storedCaseText(r))];
  const files = [
    `<a href="${h(fileLink(e.path, 'report.md'))}">report.md</a>`,
    `<a href="${h(fileLink(e.path, 'repro.sh'))}">repro.sh</a>`,
  ];
  if (r.issue?.url && /^https?:\/\//.test(r.issue.url)) files.push(`<a href="${h(r.issue.url)}">issue</a>`);
  // the damage picture, small in the row; it opens whole
  const picture = fileLink(e.path, PICTURE_FILE);
  if (e.picture)
    files.push(`<a class="picture" href="${h(picture)}"><img src="${h(picture)}" alt="damage picture" width="80"></a>`);
  return [
    `<tr class="report ${h(badgeClass)}" data-signature="${h(r.signature)}">`,
    `<td>${status.join('')}</td>`,
    `<td><div class="sig">${breakable(r.signature)}</div><div class="msg">${h(f.message)}</div></td>`,
    `<td>${h(f.side)}<div class="small">${h(f.oracle)} / ${h(f.kind)}</div></td>`,
    `<td class="num">${r.hits}</td>`,
    `<td>${htmlSeen(r.firstSeen)}</td>`,
    `<td>${htmlSeen(r.lastSeen)}</td>`,
    `<td>${h(confirmationText(r))}</td>`,
    `<td>${size.join('')}</td>`,
    `<td class="files">${files.join('')}</td>`,
    '</tr>',
  ].join('');
}

function htmlTable(entries: IndexEntry[], id: string): string {
  if (entries.length === 0) return `<p class="empty" id="${id}-empty">None.</p>`;
  const cols =
    '<colgroup><col class="status"><col class="signature"><col class="where"><col class="hits">' +
    '<col class="seen"><col class="seen"><col class="confirmed"><col class="case"><col class="files"></colgroup>';
  const head =
    '<tr><th>status</th><th>signature and finding</th><th>side / oracle / kind</th><th class="num">hits</th>' +
    '<th>first seen (UTC)</th><th>last seen (UTC)</th><th>confirmed</th><th>stored case</th><th>files</th></tr>';
  const rows = entries.map(htmlRow).join('\n');
  return `<table class="reports" id="${id}-table">${cols}<thead>${head}</thead><tbody>\n${rows}\n</tbody></table>`;
}

function htmlCoverage(cov: CoverageView): string {
  const cell = (n: number) => `<td class="num${n === 0 ? ' zero' : ''}">${n}</td>`;
  const rows = cov.refcountByStep
    .map(
      (r) =>
        `<tr><td class="num">${h(r.bits)}-bit</td>${cell(r.grow)}${cell(r.shrink)}${cell(r.shrinkDiscarding)}</tr>`,
    )
    .join('');
  const list = (xs: [string, number][]) => (xs.length ? xs.map(([k, n]) => `${h(k)} ${n}`).join(', ') : 'none');
  const formats = formatsLine(cov);
  const operations = cov.operations
    .map(
      (o) =>
        `<tr><td>${h(o.operation)}</td>${cell(o.steps)}${cell(o.accepted)}` +
        `<td>${h(widthsText(o.byWidth))}</td><td>${h(countsText(o.kinds))}</td></tr>`,
    )
    .join('');
  return [
    ...(operations
      ? [
          '<table class="coverage operations"><thead><tr><th>operation</th><th class="num">steps</th>' +
            '<th class="num">accepted</th><th>accepted per refcount width (qcow2)</th><th>kinds</th></tr></thead>' +
            `<tbody>${operations}</tbody></table>`,
        ]
      : []),
    ...(formats ? [`<p>${h(formats)}</p>`] : []),
    '<p class="note">Steps qemu-img accepted on qcow2 images, per refcount width; ' +
      'a zero is a combination no case reached.</p>',
    '<table class="coverage"><thead><tr><th class="num">refcount</th><th class="num">grows</th>' +
      `<th class="num">shrinks</th><th class="num">shrinks discarding</th></tr></thead><tbody>${rows}</tbody></table>`,
    `<p>Features: ${list(cov.features)}.</p>`,
    cov.oracles.length ? `<p>Oracle runs: ${list(cov.oracles)}.</p>` : '',
    cov.readerSelfCheck
      ? `<p>qcow2 reader vs qemu-img check on base images: ` +
        `${cov.readerSelfCheck.agreed} agreed, ${cov.readerSelfCheck.disagreed} disagreed.</p>`
      : '',
  ].join('\n');
}

/** index.html: static HTML with inline CSS and no JavaScript; every value from a report is escaped. */
export function indexHtml(ix: ReportsIndex): string {
  const notFixed = ix.reports.filter((e) => e.status !== 'fixed').length;
  const card = (n: number | string | null, label: string) =>
    `<div class="card"><b>${h(String(n ?? '?'))}</b><span>${h(label)}</span></div>`;
  const run = ix.run;
  const tools = run ? toolsText(run) : '';
  const unreadable = ix.unreadable.map((u) => `<li><code>${h(u.path)}</code>: ${h(u.error)}</li>`).join('');
  const body = [
    '<h1>Fuzzer reports</h1>',
    `<p class="lede">instar resize vs qemu-img · generated ${h(shortDate(ix.generatedAt))}</p>`,
    '<div class="cards">',
    card(ix.reports.length, 'signatures'),
    card(notFixed, 'not fixed'),
    card(ix.reports.length - notFixed, 'fixed'),
    card(ix.flaky.length, 'flaky'),
    ...(run ? [card(run.newDivergences, 'new, last run'), card(run.knownDivergences, 'known, last run')] : []),
    '</div>',
    '<section id="last-run"><h2>Last run</h2>',
    run === null
      ? '<p class="empty">No summary.json.</p>'
      : `<p>${h(headlineText(run))}</p>${run.subject || run.qemuImg ? `<p class="small">${h(tools)}</p>` : ''}`,
    '</section>',
    `<section id="signatures"><h2>Signatures <span class="count">${ix.reports.length}</span></h2>`,
    '<p class="note">Not fixed first, then by hits. Fixed: the latest recheck no longer reproduces.</p>',
    htmlTable(ix.reports, 'signatures'),
    '</section>',
    `<section id="flaky"><h2>Flaky <span class="count">${ix.flaky.length}</span></h2>`,
    `<p class="note">${FLAKY_NOTE}</p>`,
    htmlTable(ix.flaky, 'flaky'),
    '</section>',
    ix.unreadable.length
      ? `<section id="unreadable"><h2>Unreadable report folders</h2><ul>${unreadable}</ul></section>`
      : '',
    run?.coverage
      ? `<section id="coverage"><h2>Coverage of the last run</h2>\n${htmlCoverage(run.coverage)}</section>`
      : '',
    '<footer>Rebuilt from the report folders and summary.json; replay a report with ' +
      '<code>npm run fuzz -- --replay reports/&lt;folder&gt; --instar /path/to/instar</code>.</footer>',
  ];
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<title>Fuzzer reports</title>',
    `<style>${CSS}</style>`,
    '</head>',
    '<body>',
    body.filter(Boolean).join('\n'),
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

// ---- entry point --------------------------------------------------------------------------------

/**
 * Rebuilds `<reportsDir>/index.html` and `<reportsDir>/index.md` from every report folder and the
 * last run's summary.json, each written atomically (temporary file, then rename). Returns the paths
 * of the two files and the number of report folders listed (flaky ones included).
 */
export async function writeReportsIndex(reportsDir: string): Promise<{ html: string; md: string; reports: number }> {
  const ix = await collectIndex(reportsDir);
  const html = join(reportsDir, 'index.html');
  const md = join(reportsDir, 'index.md');
  await writeAtomic(html, indexHtml(ix));
  await writeAtomic(md, indexMarkdown(ix));
  return { html, md, reports: ix.reports.length + ix.flaky.length };
}

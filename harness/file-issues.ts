import { readFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { runCommand } from './process.ts';
import { indexEntry, originWhere, shortDate, type ReportJson } from './report-index.ts';
import { writeAtomic } from './reports.ts';
import { shellQuote } from './repro.ts';

// Turning report folders into GitHub issues. For every folder it writes issue-title.txt and
// issue.md (a body ready for `gh issue create --body-file`); then, when the gh CLI is installed
// and authenticated, it files the ones not filed yet. An issue carries its signature on a line of
// its own, `fuzzer-signature: <signature>`: an open issue with that line is the same bug, so a
// signature is never filed twice while its issue is open (a closed issue does not count: the bug
// came back). The URL of a filed issue is recorded in report.json's `issue` field.
//
// Every child process (gh) goes through runCommand: argument arrays, a timeout, no shell.

/** The line that marks an issue as the one of a signature; deduplication looks for it. */
export const signatureLine = (signature: string) => `fuzzer-signature: ${signature}`;

/** The longest issue title: GitHub allows 256 characters; shorter ones read better in lists. */
export const MAX_TITLE = 120;
/** Bodies stay under GitHub's limit of 65536 characters; repro.sh is cut to fit. */
const MAX_BODY = 60_000;

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();
const clip = (s: string, max: number) => (s.length <= max ? s : `${s.slice(0, max - 1).trimEnd()}…`);

/** A fence longer than any run of backticks in `text`, so the text cannot close it. */
const fence = (text: string) => '`'.repeat(Math.max(3, ...(text.match(/`+/g) ?? []).map((r) => r.length + 1)));
const block = (lang: string, text: string) => {
  const f = fence(text);
  return `${f}${lang}\n${text.replace(/\n$/, '')}\n${f}`;
};
/** A case as JSON that reads well in an issue: the image on one line, one line per operation and
 * step; still valid JSON to paste into a corpus file. */
export function caseJson(c: unknown): string {
  if (typeof c !== 'object' || c === null || Array.isArray(c)) return JSON.stringify(c, null, 2);
  const lines = Object.entries(c).map(([k, v]) =>
    Array.isArray(v) ? `  ${JSON.stringify(k)}: [${v.length ? `\n${v.map((x) => `    ${JSON.stringify(x)}`).join(',\n')}\n  ` : ''}]` : `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`,
  );
  return `{\n${lines.join(',\n')}\n}`;
}

/** The finding's evidence (check output, exit codes, stderr), cut short for an issue: multi-line
 * strings (stderr of qemu-img check, of the subject) as text blocks, the rest as JSON. */
function evidenceBlocks(evidence: unknown): string[] {
  if (evidence === undefined || evidence === null) return [];
  const cut = (text: string) => (text.length > 4000 ? `${text.slice(0, 4000)}\n... (${text.length} characters; the whole evidence is in report.json)` : text);
  const texts: [string, string][] = [];
  let rest = evidence;
  if (typeof evidence === 'object' && !Array.isArray(evidence)) {
    const other: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(evidence)) {
      if (typeof v === 'string' && v.includes('\n')) texts.push([k, v]);
      else other[k] = v;
    }
    rest = other;
  }
  const json = typeof rest === 'object' && rest !== null && Object.keys(rest).length === 0 ? [] : [block('json', cut(JSON.stringify(rest, null, 2)))];
  const parts = [...json, ...texts.map(([k, v]) => `${k}:\n\n${block('text', cut(v))}`)];
  return parts.flatMap((x, i) => (i === 0 ? [x] : ['', x]));
}

const code = (s: string) => (s.includes('`') ? `\`\` ${s} \`\`` : `\`${s}\``);

/**
 * The issue for one report: `title` names the side, oracle and kind and a short message (at most
 * MAX_TITLE characters in all); `body` is markdown with the signature line (for deduplication), the
 * finding, how to reproduce it (repro.sh inline, and `npm run fuzz -- --replay reports/<folder>`),
 * hits, first and last sighting, confirmation, rechecks and tool versions.
 *
 * `report` is a parsed report.json of any format version; `folder` its path relative to the
 * reports directory (`<name>` or `flaky/<name>`); `repro` the text of its repro.sh, or null when it
 * has none (the body then points to the folder).
 */
export function issueText(report: ReportJson, folder: string, repro: string | null = null): { title: string; body: string } {
  const e = indexEntry(report, folder, folder.startsWith('flaky/'));
  const control = report.subject?.dialect === 'qemu-img';
  const prefix = `fuzz: ${e.side} ${e.oracle}/${e.kind}: `;
  const title = clip(prefix + oneLine(e.message || e.signature), MAX_TITLE);
  const step = typeof report.finding?.step === 'number' ? report.finding.step + 1 : null;
  const steps = Array.isArray(report.case?.steps) ? report.case.steps.length : null;
  const seen = (o: typeof e.firstSeen) => `${originWhere(o)} (${shortDate(o?.date ?? null)})`;
  const size = (s: typeof e.size) => (s === null ? 'unknown' : `${s.steps} step${s.steps === 1 ? '' : 's'}, ${s.dataOps} data operation${s.dataOps === 1 ? '' : 's'}`);
  const minimised = e.minimisation
    ? `; minimised from ${size(e.originalSize ?? e.size)} in ${e.minimisation.runs ?? '?'} runs${e.minimisation.seconds === null ? '' : `, ${e.minimisation.seconds.toFixed(1)} s`}${e.minimisation.stoppedBy === 'done' ? '' : ` (stopped by ${e.minimisation.stoppedBy})`}`
    : '';
  const facts = [
    `- signature: ${code(e.signature)}`,
    `- side: ${e.side === 'reference' ? 'reference (qemu-img itself)' : `${e.side}${control ? ' (control run: qemu-img on both sides)' : ''}`}; oracle: ${e.oracle}; kind: ${e.kind}${step !== null ? `; at step ${step}${steps !== null ? ` of ${steps}` : ''}` : ''}`,
    `- hits: ${e.hits ?? 'unknown'}; first seen ${seen(e.firstSeen)}; last seen ${seen(e.lastSeen)}`,
    `- confirmation: ${e.confirmation ? `reproduced in ${e.confirmation.reproduced} of ${e.confirmation.runs} re-runs in fresh directories` : 'not confirmed'}${e.flaky ? ' (flaky: it does not reproduce every time)' : ''}`,
    `- latest recheck: ${e.recheck ? `${e.recheck.reproduced ? 'still reproducing' : 'fixed'} on ${shortDate(e.recheck.date)} with ${e.recheck.subjectVersion}` : 'not rechecked'}`,
    `- stored case: ${size(e.size)}${minimised}`,
    `- tools: ${report.tools?.qemuImg ?? 'qemu-img (unknown version)'}; subject: ${report.tools?.subject ?? 'unknown version'}`,
  ];
  const evidence = evidenceBlocks(report.finding?.evidence);
  const runRepro = control ? 'bash repro.sh        # exit 1: it reproduces' : 'INSTAR=/path/to/instar bash repro.sh        # exit 1: it reproduces';
  const replay = `npm run fuzz -- --replay reports/${folder}${control ? ' --control' : ' --instar /path/to/instar'}`;
  const compose = (script: string | null, note: string) =>
    [
      signatureLine(e.signature),
      '',
      '## Finding',
      '',
      oneLine(e.message) || '(no message)',
      '',
      ...facts,
      '',
      ...(evidence.length === 0 ? [] : ['<details><summary>Evidence</summary>', '', ...evidence, '', '</details>', '']),
      '## Reproduce',
      '',
      `Standalone, with only qemu-img, qemu-io and coreutils${control ? '' : ' besides instar'}: save the script below as \`repro.sh\` and run`,
      '',
      block('bash', runRepro),
      '',
      ...(script === null ? [note] : [block('bash', script), ...(note ? ['', note] : [])]),
      '',
      'With a checkout of the fuzzer and the report folder (report.json, repro.sh and the gzipped images):',
      '',
      block('bash', replay),
      '',
      ...(report.case ? ['## Case', '', block('json', caseJson(report.case)), ''] : []),
      '---',
      `Filed by the instar resize fuzzer from \`reports/${folder}\`.`,
      '',
    ].join('\n');
  let body = compose(repro, '');
  if (repro === null) body = compose(null, `repro.sh is in the report folder \`reports/${folder}\`.`);
  else if (body.length > MAX_BODY) {
    const room = Math.max(0, repro.length - (body.length - MAX_BODY) - 200);
    body = compose(`${repro.slice(0, room)}\n# ...`, `repro.sh is cut short here (${repro.length} characters); the whole script is in \`reports/${folder}\`.`);
  }
  return { title, body };
}

export interface FileIssuesOptions {
  /** Issues created at most by this call; the rest are left for the next one (skipped-cap). */
  maxIssues: number;
  /** The gh binary. Default 'gh' on PATH. */
  gh?: string;
  /** Per gh invocation. Default 60 s. */
  timeoutMs?: number;
  /** Readable progress for the console. */
  say?: (line: string) => void;
  /** OWNER/NAME passed to gh as --repo; by default gh uses the repository of the working directory. */
  repo?: string;
}

interface Written {
  /** The folder relative to the reports directory. */
  folder: string;
  signature: string;
  title: string;
  /** issue.md and issue-title.txt in the folder. */
  bodyFile: string;
  titleFile: string;
}

const strip = (w: Written): Written => ({ folder: w.folder, signature: w.signature, title: w.title, bodyFile: w.bodyFile, titleFile: w.titleFile });

/** What became of one folder. */
export type IssueResult =
  /** Created now; url null when gh printed none. report.json's `issue` records it. */
  | (Written & { status: 'filed'; url: string | null })
  /** An open issue (or one filed earlier in this call) already carries the signature. */
  | (Written & { status: 'duplicate'; url: string | null })
  /** Not filed: this call reached maxIssues. */
  | (Written & { status: 'skipped-cap' })
  /** gh is missing or not authenticated: only issue.md and issue-title.txt were written. */
  | (Written & { status: 'written-only' })
  /** The report could not be read, or gh failed for this folder (nothing was filed for it). */
  | { folder: string; status: 'error'; error: string };

export interface OpenIssue {
  number?: number;
  title?: string;
  body?: string;
  url?: string;
}

/** The open issue among `issues` that carries `signature` on a line of its own, if any. */
export function findFiled(issues: OpenIssue[], signature: string): OpenIssue | null {
  const line = signatureLine(signature);
  return issues.find((i) => typeof i.body === 'string' && i.body.split(/\r?\n/).some((l) => l.trim() === line)) ?? null;
}

/** Why gh cannot file issues (not installed, not authenticated), or null when it can. */
async function ghUnavailable(gh: string, timeoutMs: number): Promise<string | null> {
  const r = await runCommand(gh, ['auth', 'status'], { timeoutMs });
  if (r.spawnError !== null) return `${gh} is not installed or cannot be run (${oneLine(r.spawnError)})`;
  if (r.timedOut) return `\`${gh} auth status\` timed out`;
  if (r.exitCode !== 0) return `\`${gh} auth status\` exited ${r.exitCode ?? r.signal}: ${clip(oneLine(r.stderr || r.stdout), 200) || 'not logged in'}`;
  return null;
}

const ghFailure = (what: string, r: Awaited<ReturnType<typeof runCommand>>) =>
  `${what} failed: ${r.spawnError ?? (r.timedOut ? 'timed out' : `exit ${r.exitCode ?? r.signal}`)}${r.stderr.trim() ? `: ${clip(oneLine(r.stderr), 300)}` : ''}`;

/** Records a filed issue in the folder's report.json (read again, changed, written atomically). */
async function recordIssue(path: string, issue: { url: string | null; title: string; filedAt: string }) {
  const file = join(path, 'report.json');
  const report = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  report.issue = issue;
  await writeAtomic(file, `${JSON.stringify(report, null, 2)}\n`);
}

/**
 * For each report folder (relative to `reportsDir`, e.g. `<name>` or `flaky/<name>`, or absolute):
 * writes `issue.md` and `issue-title.txt` into it; then, when `gh auth status` succeeds, files the
 * signatures that no open issue carries yet with `gh issue create --title T --body-file F`, at most
 * `maxIssues` of them, and records each new issue's URL in the folder's report.json. Without gh it
 * says once which files it wrote and the command that files them. Returns one result per folder,
 * in the order given.
 */
export async function fileIssues(reportsDir: string, folders: string[], options: FileIssuesOptions): Promise<IssueResult[]> {
  const gh = options.gh ?? 'gh';
  const timeoutMs = options.timeoutMs ?? 60_000;
  const say = options.say ?? (() => {});
  const repoArgs = options.repo ? ['--repo', options.repo] : [];

  const results: IssueResult[] = [];
  /** Folders with their files written; `at` is their place in `results`. */
  const written: (Written & { path: string; at: number })[] = [];
  for (const given of folders) {
    const path = isAbsolute(given) ? given : join(reportsDir, given);
    const rel = relative(reportsDir, path);
    const folder = rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel.split('\\').join('/') : given;
    try {
      const report = JSON.parse(await readFile(join(path, 'report.json'), 'utf8')) as ReportJson;
      const repro = await readFile(join(path, 'repro.sh'), 'utf8').catch(() => null);
      const { title, body } = issueText(report, folder, repro);
      const w = { at: results.length, folder, path, signature: indexEntry(report, folder, false).signature, title, bodyFile: join(path, 'issue.md'), titleFile: join(path, 'issue-title.txt') };
      await writeAtomic(w.bodyFile, body);
      await writeAtomic(w.titleFile, `${title}\n`);
      written.push(w);
      results.push({ ...strip(w), status: 'written-only' });
    } catch (err) {
      results.push({ folder, status: 'error', error: `cannot prepare the issue: ${(err as Error).message}` });
    }
  }
  if (written.length === 0) return results;

  const unavailable = await ghUnavailable(gh, timeoutMs);
  if (unavailable !== null) {
    say(
      [
        `not filing issues: ${unavailable}. Wrote issue-title.txt and issue.md in ${written.length} report folder${written.length === 1 ? '' : 's'}; file them with:`,
        ...written.map((w) => `  gh issue create --title "$(cat ${shellQuote(w.titleFile)})" --body-file ${shellQuote(w.bodyFile)}`),
      ].join('\n'),
    );
    return results;
  }

  let created = 0;
  let capped = 0;
  /** Signatures filed (or found open) during this call: search results may lag behind. */
  const seen = new Map<string, string | null>();
  const set = (w: { at: number }, r: IssueResult) => {
    results[w.at] = r;
  };
  for (const w of written) {
    if (seen.has(w.signature)) {
      set(w, { ...strip(w), status: 'duplicate', url: seen.get(w.signature) ?? null });
      continue;
    }
    const search = `"${w.signature.replace(/"/g, ' ')}" in:body`;
    const list = await runCommand(gh, ['issue', 'list', '--state', 'open', '--search', search, '--json', 'number,title,body,url', '--limit', '100', ...repoArgs], { timeoutMs });
    let open: OpenIssue[];
    try {
      if (list.exitCode !== 0) throw new Error(ghFailure('gh issue list', list));
      const parsed: unknown = JSON.parse(list.stdout);
      if (!Array.isArray(parsed)) throw new Error('gh issue list did not print a JSON array');
      open = parsed as OpenIssue[];
    } catch (err) {
      // without the list a new issue could be a duplicate: file nothing for this folder
      set(w, { folder: w.folder, status: 'error', error: (err as Error).message });
      continue;
    }
    const existing = findFiled(open, w.signature);
    if (existing) {
      const url = typeof existing.url === 'string' ? existing.url : null;
      seen.set(w.signature, url);
      set(w, { ...strip(w), status: 'duplicate', url });
      say(`already filed: ${url ?? `#${existing.number ?? '?'}`} for ${w.signature}`);
      continue;
    }
    if (created >= options.maxIssues) {
      capped++;
      set(w, { ...strip(w), status: 'skipped-cap' });
      continue;
    }
    created++;
    const r = await runCommand(gh, ['issue', 'create', '--title', w.title, '--body-file', w.bodyFile, ...repoArgs], { timeoutMs });
    if (r.exitCode !== 0) {
      set(w, { folder: w.folder, status: 'error', error: ghFailure('gh issue create', r) });
      continue;
    }
    const url = r.stdout.split('\n').map((l) => l.trim()).reverse().find((l) => /^https?:\/\/\S+$/.test(l)) ?? null;
    seen.set(w.signature, url);
    try {
      await recordIssue(w.path, { url, title: w.title, filedAt: new Date().toISOString() });
      set(w, { ...strip(w), status: 'filed', url });
      say(`filed ${url ?? '(gh printed no URL)'} for ${w.signature}`);
    } catch (err) {
      set(w, { folder: w.folder, status: 'error', error: `filed ${url ?? '(no URL)'} but could not record it in report.json: ${(err as Error).message}` });
    }
  }
  if (capped > 0) say(`${capped} issue${capped === 1 ? '' : 's'} left unfiled: the cap of ${options.maxIssues} per call was reached; their issue.md and issue-title.txt are written, and the next call files them`);
  return results;
}

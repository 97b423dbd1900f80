import { readFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { runCommand } from '../exec/process.ts';
import { codeBlock, factLines, inlineCode, reproduceCommands } from './render.ts';
import { shellQuote } from './repro.ts';
import { readReport, updateReport, writeAtomic, type Report } from './store.ts';

// Turning report folders into GitHub issues. For every folder it writes issue-title.txt and
// issue.md (a body ready for `gh issue create --body-file`); then, when the gh CLI is installed
// and authenticated, it opens the ones not opened yet. An issue carries its signature on a line of
// its own, `fuzzer-signature: <signature>`: an open issue with that line is the same bug, so a
// signature is never opened twice while its issue is open (a closed issue does not count: the bug
// came back). The URL of an opened issue is recorded in report.json's `issue` field.
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

/** A case as JSON that reads well in an issue: the image on one line, one line per operation and
 * step; still valid JSON to paste into a corpus file. */
export function caseJson(c: object): string {
  const lines = Object.entries(c).map(([k, v]) => {
    if (!Array.isArray(v)) return `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`;
    const items = v.length ? `\n${v.map((x) => `    ${JSON.stringify(x)}`).join(',\n')}\n  ` : '';
    return `  ${JSON.stringify(k)}: [${items}]`;
  });
  return `{\n${lines.join(',\n')}\n}`;
}

/** The finding's evidence (check output, exit codes, stderr), cut short for an issue: multi-line
 * strings (stderr of qemu-img check, of the subject) as text blocks, the rest as JSON. */
function evidenceBlocks(evidence: unknown): string[] {
  if (evidence === undefined || evidence === null) return [];
  const cut = (text: string) =>
    text.length > 4000
      ? `${text.slice(0, 4000)}\n... (${text.length} characters; the whole evidence is in report.json)`
      : text;
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
  const json =
    typeof rest === 'object' && rest !== null && Object.keys(rest).length === 0
      ? []
      : [codeBlock('json', cut(JSON.stringify(rest, null, 2)))];
  const parts = [...json, ...texts.map(([k, v]) => `${k}:\n\n${codeBlock('text', cut(v))}`)];
  return parts.flatMap((x, i) => (i === 0 ? [x] : ['', x]));
}

/**
 * The issue for one report: `title` names the side, oracle and kind and a short message (at most
 * MAX_TITLE characters in all); `body` is markdown with the signature line (for deduplication),
 * the report's facts, the evidence, how to reproduce it (repro.sh inline, and the replay command)
 * and the case. `folder` is the report's path relative to the reports directory (`<name>` or
 * `flaky/<name>`); `repro` the text of its repro.sh, or null when it has none (the body then
 * points to the folder).
 */
export function issueText(
  report: Report,
  folder: string,
  repro: string | null = null,
): { title: string; body: string } {
  const f = report.finding;
  const title = clip(`fuzz: ${f.side} ${f.oracle}/${f.kind}: ${oneLine(f.message || report.signature)}`, MAX_TITLE);
  const evidence = evidenceBlocks(f.evidence);
  const commands = reproduceCommands(report, folder);
  const besides = report.subject.dialect === 'qemu-img' ? '' : ' besides instar';
  const compose = (script: string | null, note: string) =>
    [
      signatureLine(report.signature),
      '',
      '## Finding',
      '',
      oneLine(f.message) || '(no message)',
      '',
      ...factLines(report),
      '',
      ...(evidence.length === 0 ? [] : ['<details><summary>Evidence</summary>', '', ...evidence, '', '</details>', '']),
      '## Reproduce',
      '',
      `Standalone, with only qemu-img, qemu-io and coreutils${besides}: ` +
        `save the script below as ${inlineCode('repro.sh')} and run`,
      '',
      codeBlock('bash', commands.repro),
      '',
      ...(script === null ? [note] : [codeBlock('bash', script), ...(note ? ['', note] : [])]),
      '',
      'With a checkout of the fuzzer and the report folder (report.json, repro.sh and the gzipped images):',
      '',
      codeBlock('bash', commands.replay),
      '',
      '## Case',
      '',
      codeBlock('json', caseJson(report.case)),
      '',
      '---',
      `Filed by the instar resize fuzzer from \`reports/${folder}\`.`,
      '',
    ].join('\n');
  let body = compose(repro, '');
  if (repro === null) body = compose(null, `repro.sh is in the report folder \`reports/${folder}\`.`);
  else if (body.length > MAX_BODY) {
    const room = Math.max(0, repro.length - (body.length - MAX_BODY) - 200);
    body = compose(
      `${repro.slice(0, room)}\n# ...`,
      `repro.sh is cut short here (${repro.length} characters); the whole script is in \`reports/${folder}\`.`,
    );
  }
  return { title, body };
}

export interface OpenIssuesOptions {
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

const strip = (w: Written): Written => ({
  folder: w.folder,
  signature: w.signature,
  title: w.title,
  bodyFile: w.bodyFile,
  titleFile: w.titleFile,
});

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
  if (r.exitCode !== 0)
    return (
      `\`${gh} auth status\` exited ${r.exitCode ?? r.signal}: ` +
      `${clip(oneLine(r.stderr || r.stdout), 200) || 'not logged in'}`
    );
  return null;
}

const ghFailure = (what: string, r: Awaited<ReturnType<typeof runCommand>>) => {
  const why = r.spawnError ?? (r.timedOut ? 'timed out' : `exit ${r.exitCode ?? r.signal}`);
  return `${what} failed: ${why}${r.stderr.trim() ? `: ${clip(oneLine(r.stderr), 300)}` : ''}`;
};

/** Records an opened issue in the folder's report.json (read again, changed, written atomically). */
const recordIssue = (path: string, issue: NonNullable<Report['issue']>) => updateReport(path, (r) => ({ ...r, issue }));

/**
 * For each report folder (relative to `reportsDir`, e.g. `<name>` or `flaky/<name>`, or absolute):
 * writes `issue.md` and `issue-title.txt` into it; then, when `gh auth status` succeeds, files the
 * signatures that no open issue carries yet with `gh issue create --title T --body-file F`, at most
 * `maxIssues` of them, and records each new issue's URL in the folder's report.json. Without gh it
 * says once which files it wrote and the command that files them. Returns one result per folder,
 * in the order given.
 */
export async function openIssues(
  reportsDir: string,
  folders: string[],
  options: OpenIssuesOptions,
): Promise<IssueResult[]> {
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
      const report = await readReport(path);
      const repro = await readFile(join(path, 'repro.sh'), 'utf8').catch(() => null);
      const { title, body } = issueText(report, folder, repro);
      const w = {
        at: results.length,
        folder,
        path,
        signature: report.signature,
        title,
        bodyFile: join(path, 'issue.md'),
        titleFile: join(path, 'issue-title.txt'),
      };
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
        `not filing issues: ${unavailable}. ` +
          `Wrote issue-title.txt and issue.md in ${written.length} report folder${written.length === 1 ? '' : 's'}; ` +
          'file them with:',
        ...written.map(
          (w) => `  gh issue create --title "$(cat ${shellQuote(w.titleFile)})" --body-file ${shellQuote(w.bodyFile)}`,
        ),
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
    const list = await runCommand(
      gh,
      [
        'issue',
        'list',
        '--state',
        'open',
        '--search',
        search,
        '--json',
        'number,title,body,url',
        '--limit',
        '100',
        ...repoArgs,
      ],
      { timeoutMs },
    );
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
    const r = await runCommand(gh, ['issue', 'create', '--title', w.title, '--body-file', w.bodyFile, ...repoArgs], {
      timeoutMs,
    });
    if (r.exitCode !== 0) {
      set(w, { folder: w.folder, status: 'error', error: ghFailure('gh issue create', r) });
      continue;
    }
    const url =
      r.stdout
        .split('\n')
        .map((l) => l.trim())
        .reverse()
        .find((l) => /^https?:\/\/\S+$/.test(l)) ?? null;
    seen.set(w.signature, url);
    try {
      await recordIssue(w.path, { url, title: w.title, filedAt: new Date().toISOString() });
      set(w, { ...strip(w), status: 'filed', url });
      say(`filed ${url ?? '(gh printed no URL)'} for ${w.signature}`);
    } catch (err) {
      set(w, {
        folder: w.folder,
        status: 'error',
        error: `filed ${url ?? '(no URL)'} but could not record it in report.json: ${(err as Error).message}`,
      });
    }
  }
  if (capped > 0)
    say(
      `${capped} issue${capped === 1 ? '' : 's'} left unfiled: the cap of ${options.maxIssues} per call was reached; ` +
        'their issue.md and issue-title.txt are written, and the next call files them',
    );
  return results;
}

import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createOptions, type Case } from './case.ts';
import type { CaseResult, StepFinding } from './execute.ts';
import { smaller, type Minimised } from './minimise.ts';
import type { CommandRecord } from './process.ts';
import { reproScript, shellQuote } from './repro.ts';
import type { Resizer } from './subjects.ts';
import { signatureOf } from '../oracles/finding.ts';

// One folder per signature. A new signature gets report.json, report.md, repro.sh and the images;
// another hit of it bumps the counter, and replaces the stored case when its own is smaller.
// Findings that did not reproduce on confirmation go to flaky/, apart from the rest. Files are
// written under a temporary name and renamed, so a harness killed at any moment never leaves a
// half-written file.

export interface Origin {
  /** null for a replayed or corpus case. */
  seed: number | null;
  iteration: number | null;
  /** The corpus file of a regression case. */
  corpus?: string;
  date: string;
}

/** Re-runs of the case before filing, each in a fresh directory: how many gave the signature. */
export interface Confirmation {
  runs: number;
  reproduced: number;
}

/** One --recheck of a stored report against the subject of that day. */
export interface Recheck {
  date: string;
  subjectVersion: string;
  reproduced: boolean;
}

export const FLAKY_DIR = 'flaky';

export interface Report {
  formatVersion: 2;
  signature: string;
  finding: StepFinding;
  hits: number;
  firstSeen: Origin;
  lastSeen: Origin;
  /** The smallest case seen with this signature: repro.sh, replay and --promote use it. */
  case: Case;
  /** The case as generated when the signature was first seen. */
  originalCase: Case;
  /** How the case was shrunk; null when it was not (a corpus case, or minimisation disabled). */
  minimisation: Omit<Minimised, 'case'> | null;
  confirmation: Confirmation | null;
  /** The finding never reproduced on confirmation: filed under flaky/. */
  flaky: boolean;
  rechecks: Recheck[];
  /** Set by --file-issues once filed. */
  issue?: { url: string | null; title: string; filedAt: string };
  subject: Resizer;
  tools: { qemuImg: string; subject: string };
  /** Every finding of the case, the primary one first. */
  findings: StepFinding[];
  steps: CaseResult['steps'];
  commands: CommandRecord[];
}

export const folderName = (f: StepFinding) =>
  `${f.side}-${f.oracle}-${f.kind}-${createHash('sha256').update(signatureOf(f)).digest('hex').slice(0, 10)}`.replace(/[^\w.-]/g, '_');

export async function writeAtomic(file: string, data: string | Buffer) {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, file);
}

export const originText = (o: Origin) => (o.corpus !== undefined ? `corpus case ${o.corpus}, ${o.date}` : o.seed === null ? `replay on ${o.date}` : `seed ${o.seed}, iteration ${o.iteration}, ${o.date}`);

function markdown(r: Report, folder: string): string {
  const c = r.case;
  const f = r.finding;
  const step = (i: number) => c.steps[i]!;
  const lines = [
    `# ${f.side === 'reference' ? 'qemu-img (reference) behaviour' : 'Divergence'}: ${f.message}`,
    '',
    `- signature: \`${r.signature}\``,
    `- oracle: ${f.oracle}, kind: ${f.kind}, side: ${f.side}, at step ${f.step + 1} of ${c.steps.length}`,
    `- hits: ${r.hits}; first seen ${originText(r.firstSeen)}; last seen ${originText(r.lastSeen)}`,
    `- confirmation: ${r.confirmation ? `reproduced ${r.confirmation.reproduced} of ${r.confirmation.runs} re-runs in fresh directories${r.flaky ? ' (flaky: kept apart from the other reports)' : ''}` : 'not confirmed'}`,
    `- case: ${caseSize(r.case)}${r.minimisation ? `, minimised from ${caseSize(r.originalCase)} in ${r.minimisation.runs} runs (${r.minimisation.seconds} s, ${r.minimisation.stoppedBy === 'done' ? 'no smaller case reproduces' : `stopped: ${r.minimisation.stoppedBy}`})` : ''}`,
    `- tools: ${r.tools.qemuImg}; subject: ${r.tools.subject}`,
    '',
    '## Reproduce',
    '',
    '```',
    r.subject.dialect === 'instar' ? 'INSTAR=/path/to/instar bash repro.sh        # exit 1: reproduces' : 'bash repro.sh        # control run: qemu-img on both sides',
    `npm run fuzz -- --replay reports/${folder}${r.subject.dialect === 'instar' ? ' --instar /path/to/instar' : ' --control'}`,
    '```',
    '',
    '## Case',
    '',
    `- image: qcow2, virtual size ${c.image.virtualSize} bytes, \`-o ${createOptions(c.image)}\``,
    `- image features: compression ${c.image.compressionType}, ${c.image.bitmaps} bitmaps${c.image.dirty ? ', dirty' : ''}${c.image.createdWithRefcountBits !== null ? `, created with refcount_bits=${c.image.createdWithRefcountBits} then amended` : ''}`,
    `- data: ${c.data.length === 0 ? 'none' : c.data.map((d) => `\`${'offset' in d ? `${d.op} ${d.offset}+${d.length}` : `${d.op} ${d.name}`}\``).join(', ')}`,
    ...r.steps.map(
      (s) =>
        `- step ${s.index + 1}: \`${step(s.index).size}\`${step(s.index).shrink ? ' --shrink' : ''}${step(s.index).preallocation ? ` --preallocation=${step(s.index).preallocation}` : ''} (${s.plan.kind}, from ${s.sizeBefore}): qemu-img ${s.reference}, subject ${s.subject}`,
    ),
    '',
    '## Findings',
    '',
    ...r.findings.map((x) => `- step ${x.step + 1}, ${x.oracle}/${x.kind} (${x.side}): ${x.message}`),
    '',
    '## Commands',
    '',
    ...r.commands.map((cmd) => `- \`${cmd.argv.map(shellQuote).join(' ')}\` → ${cmd.timedOut ? 'timed out' : cmd.signal ?? `exit ${cmd.exitCode}`}${cmd.stderr.trim() ? `\n  stderr: ${cmd.stderr.trim().split('\n').join('\n  ')}` : ''}`),
    '',
    'Images (gzip): `base.qcow2.gz` (before any step), `reference.qcow2.gz` and `subject.qcow2.gz` (after the last step run).',
    '',
  ];
  return lines.join('\n');
}

export const caseSize = (c: Case) => `${c.steps.length} step${c.steps.length === 1 ? '' : 's'}, ${c.data.length} data operation${c.data.length === 1 ? '' : 's'}`;

export interface FileInput {
  finding: StepFinding;
  /** The case whose run `result` is: the smallest case known for the signature. */
  case: Case;
  result: CaseResult;
  /** The case as generated (the same as `case` when it was not minimised). */
  originalCase: Case;
  minimisation: Omit<Minimised, 'case'> | null;
  confirmation: Confirmation | null;
  flaky: boolean;
  subject: Resizer;
  tools: Report['tools'];
  origin: Origin;
}

/** Where a finding's folder lives, relative to the reports directory. */
export const reportFolder = (finding: StepFinding, flaky: boolean) => (flaky ? join(FLAKY_DIR, folderName(finding)) : folderName(finding));

/** Reads a filed report, or null when the folder has none. Reports of format 1 get the fields
 * format 2 added. */
export async function readStoredReport(path: string): Promise<Report | null> {
  const text = await readFile(join(path, 'report.json'), 'utf8').catch(() => null);
  if (text === null) return null;
  const r = JSON.parse(text) as Report;
  return { ...r, formatVersion: 2, originalCase: r.originalCase ?? r.case, minimisation: r.minimisation ?? null, confirmation: r.confirmation ?? null, flaky: r.flaky ?? false, rechecks: r.rechecks ?? [] };
}

/** Report folders of a reports directory, those under flaky/ as `flaky/<name>`, in name order.
 * Hidden (staging) folders and folders without a report.json are not reports. */
export async function reportFolders(reportsDir: string, under = ''): Promise<string[]> {
  const entries = await readdir(join(reportsDir, under), { withFileTypes: true }).catch(() => []);
  const folders: string[] = [];
  for (const e of entries) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    if (under === '' && e.name === FLAKY_DIR) folders.push(...(await reportFolders(reportsDir, FLAKY_DIR)));
    else if (await stat(join(reportsDir, under, e.name, 'report.json')).then(() => true, () => false)) folders.push(join(under, e.name));
  }
  return folders.sort();
}

export const writeReportJson = (path: string, report: Report) => writeAtomic(join(path, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);

/** Everything in a report folder but report.json, written into `dir`. */
async function writeCaseFiles(dir: string, report: Report, folder: string, artifacts: CaseResult['artifacts']) {
  await writeAtomic(join(dir, 'report.md'), markdown(report, folder));
  await writeAtomic(join(dir, 'repro.sh'), reproScript({ finding: report.finding, case: report.case, subject: report.subject, origin: originText(report.firstSeen) }));
  await chmod(join(dir, 'repro.sh'), 0o755);
  for (const a of artifacts) await writeAtomic(join(dir, a.name), a.data);
}

/** Files a finding: a new folder for a new signature, or one more hit in the existing one, whose
 * stored case is replaced when this one is smaller. */
export async function fileReport(reportsDir: string, input: FileInput): Promise<{ folder: string; isNew: boolean; hits: number }> {
  const folder = reportFolder(input.finding, input.flaky);
  const path = join(reportsDir, folder);
  const existing = await readStoredReport(path);
  const fromInput = {
    finding: input.finding,
    case: input.case,
    findings: [input.finding, ...input.result.findings.filter((f) => f !== input.finding)],
    steps: input.result.steps,
    commands: input.result.commands,
  };
  if (existing !== null) {
    const report: Report = { ...existing, hits: existing.hits + 1, lastSeen: input.origin };
    if (smaller(input.case, existing.case)) {
      Object.assign(report, fromInput);
      // report.json last: until it is renamed, the folder describes the previous case
      await writeCaseFiles(path, report, folder, input.result.artifacts);
    }
    await writeReportJson(path, report);
    return { folder, isNew: false, hits: report.hits };
  }
  const report: Report = {
    formatVersion: 2,
    signature: signatureOf(input.finding),
    ...fromInput,
    hits: 1,
    firstSeen: input.origin,
    lastSeen: input.origin,
    originalCase: input.originalCase,
    minimisation: input.minimisation,
    confirmation: input.confirmation,
    flaky: input.flaky,
    rechecks: [],
    subject: input.subject,
    tools: input.tools,
  };
  const staging = join(reportsDir, `.${folder.replace('/', '-')}.tmp-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  await writeCaseFiles(staging, report, folder, input.result.artifacts);
  await writeReportJson(staging, report);
  await mkdir(join(path, '..'), { recursive: true });
  await rename(staging, path);
  return { folder, isNew: true, hits: 1 };
}

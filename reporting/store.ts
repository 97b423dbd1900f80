import type { AppliedDamage } from '../operations/repair/damage.ts';
import { createHash } from 'node:crypto';
import { readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { makeDirectory } from '../exec/files.ts';
import { join } from 'node:path';
import type { CaseResult } from '../exec/run-case.ts';
import { parseCase, type Case } from '../model/case.ts';
import type { CommandRecord, Resizer } from '../model/commands.ts';
import { FatalError } from '../model/errors.ts';
import { signatureOf, signatureOracle, type Finding, type StepFinding } from '../oracles/finding.ts';
import { legacySignatures } from '../oracles/legacy.ts';

// The report store: one folder per signature under the reports directory (flaky ones under
// flaky/), each with report.json and the files rendered from it. Everything that reads
// report.json reads it here: strictly (replay, recheck, merge, corpus, issues: a damaged report is
// an error that names the file) or tolerantly (the index: a damaged report is listed as such).
// Reports of older formats are upgraded as they are read. Files are written under a temporary
// name and renamed, so a harness killed at any moment never leaves a half-written file, and a
// new folder is staged under a hidden name that the next run clears if it was left behind.

/** 4: a case's steps are operations (resize, amend, snapshot), and step records and findings say
 * which; 3: signatures name causes; 1 and 2: coarse signatures. */
export const REPORT_FORMAT = 4;
export const FLAKY_DIR = 'flaky';

/** Where a hit came from. */
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

/** How a case was shrunk. */
export interface MinimisationRecord {
  /** Candidates run (the original case is not re-run). */
  runs: number;
  seconds: number;
  /** 'done': no smaller case reproduces; 'runs' or 'time': the budget ended the search;
   * 'interrupted': the run was stopped. */
  stoppedBy: 'done' | 'runs' | 'time' | 'interrupted';
}

/** One --recheck of a stored report against the subject of that day. */
export interface Recheck {
  date: string;
  subjectVersion: string;
  reproduced: boolean;
}

/** How `signature` was formed: 'cause' names what went wrong (format 3 on); 'coarse' is the oracle,
 * kind and a few words, as reports of formats 1 and 2 were filed (see oracles/legacy.ts). */
export type SignatureScheme = 'cause' | 'coarse';

export interface Report {
  formatVersion: typeof REPORT_FORMAT;
  signature: string;
  signatureScheme: SignatureScheme;
  finding: StepFinding;
  hits: number;
  firstSeen: Origin;
  lastSeen: Origin;
  /** The smallest case seen with this signature: repro.sh, replay and --promote use it. */
  case: Case;
  /** The case as generated when the signature was first seen. */
  originalCase: Case;
  /** How the case was shrunk; null when it was not (a corpus case, or minimisation disabled). */
  minimisation: MinimisationRecord | null;
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
  /** The damage the build wrote (a repair's input): what each hit, the bytes. Absent: none. */
  damage?: AppliedDamage[];
}

export class ReportFormatError extends FatalError {}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Parses report.json text of any format version into the current one; throws
 * ReportFormatError naming the file and what is wrong. */
export function parseReport(text: string, file: string): Report {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ReportFormatError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(json) || typeof json.signature !== 'string')
    throw new ReportFormatError(`${file} has no signature: it is not a fuzzer report`);
  let c: Case;
  try {
    c = parseCase(json.case, `${file}: case`);
  } catch (err) {
    throw new ReportFormatError((err as Error).message);
  }
  const missing = ['finding', 'firstSeen', 'lastSeen'].filter((k) => !isObject(json[k]));
  if (typeof json.hits !== 'number') missing.push('hits');
  if (missing.length) throw new ReportFormatError(`${file} lacks ${missing.join(', ')}: it is not a fuzzer report`);
  return upgrade(json, c);
}

/** Format 1 (before confirmation and minimisation) lacks the triage fields: they get what they
 * meant then. Formats 1 and 2 filed coarse signatures, which their reports keep. Formats 1 to 3
 * knew resize alone: their steps are resizes (parseCase reads a step without an operation so). */
function upgrade(json: Record<string, unknown>, c: Case): Report {
  const r = json as unknown as Report;
  const original =
    isObject(json.originalCase) && Array.isArray(json.originalCase.steps) ? (json.originalCase as unknown as Case) : c;
  return {
    ...r,
    formatVersion: REPORT_FORMAT,
    signatureScheme: r.signatureScheme ?? 'coarse',
    case: c,
    originalCase: original,
    minimisation: r.minimisation ?? null,
    confirmation: r.confirmation ?? null,
    flaky: r.flaky ?? false,
    rechecks: r.rechecks ?? [],
    findings: r.findings ?? [],
    steps: (r.steps ?? []).map((s) => ({ ...s, operation: s.operation ?? 'resize' })),
    commands: r.commands ?? [],
  };
}

const REPORT_FILE = 'report.json';

/** Reads a report folder strictly: a missing or damaged report.json is an error that says so. */
export async function readReport(folder: string): Promise<Report> {
  const file = join(folder, REPORT_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ReportFormatError(
      `cannot read ${file}: ${(err as Error).message} (pass a folder made by a fuzz run, e.g. reports/<folder>)`,
    );
  }
  return parseReport(text, file);
}

/** The report of a folder, or null when the folder has none yet. */
export async function readReportIfAny(folder: string): Promise<Report | null> {
  const text = await readFile(join(folder, REPORT_FILE), 'utf8').catch(() => null);
  return text === null ? null : parseReport(text, join(folder, REPORT_FILE));
}

/** Every report of a reports directory, tolerantly: a folder whose report.json cannot be read
 * or parsed is listed in `unreadable` with the reason. Folders as reportFolders names them. */
export async function readAllReports(
  reportsDir: string,
): Promise<{ reports: { folder: string; report: Report }[]; unreadable: { folder: string; error: string }[] }> {
  const out = {
    reports: [] as { folder: string; report: Report }[],
    unreadable: [] as { folder: string; error: string }[],
  };
  for (const folder of await reportFolders(reportsDir)) {
    try {
      out.reports.push({ folder, report: await readReport(join(reportsDir, folder)) });
    } catch (err) {
      out.unreadable.push({ folder, error: (err as Error).message });
    }
  }
  return out;
}

/** Report folders of a reports directory, those under flaky/ as `flaky/<name>`, in name order.
 * Hidden (staging) folders and folders without a report.json are not reports. */
export async function reportFolders(reportsDir: string, under = ''): Promise<string[]> {
  const entries = await readdir(join(reportsDir, under), { withFileTypes: true }).catch(() => []);
  const folders: string[] = [];
  for (const e of entries) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    if (under === '' && e.name === FLAKY_DIR) folders.push(...(await reportFolders(reportsDir, FLAKY_DIR)));
    else if (
      await stat(join(reportsDir, under, e.name, REPORT_FILE)).then(
        () => true,
        () => false,
      )
    )
      folders.push(join(under, e.name));
  }
  return folders.sort();
}

/** Whether a run's findings include the report's signature, in the scheme it was filed in. */
export function reproduces(report: Pick<Report, 'signature' | 'signatureScheme'>, findings: Finding[]): boolean {
  const said = (f: Finding) => (report.signatureScheme === 'coarse' ? legacySignatures(f) : [signatureOf(f)]);
  return findings.some((f) => said(f).includes(report.signature));
}

export const folderName = (f: StepFinding) => {
  const hash = createHash('sha256').update(signatureOf(f)).digest('hex').slice(0, 10);
  return `${f.side}-${signatureOracle(f)}-${f.kind}-${hash}`.replace(/[^\w.-]/g, '_');
};

/** Where a finding's folder lives, relative to the reports directory. */
export const reportFolder = (finding: StepFinding, flaky: boolean) =>
  flaky ? join(FLAKY_DIR, folderName(finding)) : folderName(finding);

export async function writeAtomic(file: string, data: string | Buffer) {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, file);
}

export const writeJsonAtomic = (file: string, value: unknown) =>
  writeAtomic(file, `${JSON.stringify(value, null, 2)}\n`);

export const writeReport = (folder: string, report: Report) => writeJsonAtomic(join(folder, REPORT_FILE), report);

/** Reads a report, changes it and writes it back atomically (a recheck, a filed issue). */
export async function updateReport(folder: string, change: (r: Report) => Report): Promise<void> {
  await writeReport(folder, change(await readReport(folder)));
}

/** A hidden sibling name under which a report folder is assembled before it is renamed into
 * place; `role` tells apart the staging copies one process keeps at once. */
export const stagingFolder = (reportsDir: string, folder: string, role: 'new' | 'old' = 'new') =>
  join(reportsDir, `.${folder.replace('/', '-')}${role === 'old' ? '.old' : ''}.tmp-${process.pid}`);

const STAGING = /^\..+\.tmp-\d+$/;

/** Staging folders of a run that was killed before it could rename them into reports. */
export async function removeStaleStaging(reportsDir: string) {
  for (const name of await readdir(reportsDir)) {
    if (STAGING.test(name)) await rm(join(reportsDir, name), { recursive: true, force: true });
  }
}

/** Moves a staged folder into place as `folder`, replacing what was there. */
export async function publishStaged(reportsDir: string, staging: string, folder: string) {
  const target = join(reportsDir, folder);
  const old = stagingFolder(reportsDir, folder, 'old');
  const exists = await stat(target).then(
    () => true,
    () => false,
  );
  if (exists) await rename(target, old);
  await makeDirectory(join(target, '..'));
  await rename(staging, target);
  if (exists) await rm(old, { recursive: true, force: true });
}

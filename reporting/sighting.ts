import { chmod, rename, rm } from 'node:fs/promises';
import { makeDirectory } from '../exec/files.ts';
import { join } from 'node:path';
import type { CaseResult } from '../exec/run-case.ts';
import { smaller, type Case } from '../model/case.ts';
import type { Resizer } from '../model/commands.ts';
import { signatureOf, type StepFinding } from '../oracles/finding.ts';
import { PICTURE_FILE, reportPicture } from './damage-picture.ts';
import { reportMarkdown } from './render.ts';
import { reproScript } from './repro.ts';
import {
  REPORT_FORMAT,
  readReportIfAny,
  reportFolder,
  stagingFolder,
  writeAtomic,
  writeReport,
  type Confirmation,
  type MinimisationRecord,
  type Origin,
  type Report,
} from './store.ts';
import { originText } from './render.ts';

// A sighting is one case that gave a finding; saving it files a new report or counts a hit of an
// existing one. One report per bug: another hit of the same signature raises `hits` and
// `lastSeen`, and replaces the stored case (and its files) when its own case is smaller.

/** What one sighting of a finding brings to the store. */
export interface Sighting {
  finding: StepFinding;
  /** The case whose run `result` is: the smallest case known for the signature. */
  case: Case;
  result: CaseResult;
  /** The case as generated (the same as `case` when it was not minimised). */
  originalCase: Case;
  minimisation: MinimisationRecord | null;
  confirmation: Confirmation | null;
  flaky: boolean;
  subject: Resizer;
  tools: Report['tools'];
  origin: Origin;
}

/** Stores a sighting: a new folder for a new signature, or one more hit in the existing one,
 * whose stored case (and files) are replaced when this one is smaller. */
export async function saveSighting(
  reportsDir: string,
  s: Sighting,
): Promise<{ folder: string; isNew: boolean; hits: number }> {
  const folder = reportFolder(s.finding, s.flaky);
  const path = join(reportsDir, folder);
  const existing = await readReportIfAny(path);
  const fromSighting = {
    finding: s.finding,
    case: s.case,
    findings: [s.finding, ...s.result.findings.filter((f) => f !== s.finding)],
    steps: s.result.steps,
    commands: s.result.commands,
    ...(s.result.damage?.length ? { damage: s.result.damage } : {}),
  };
  if (existing !== null) {
    const report: Report = { ...existing, hits: existing.hits + 1, lastSeen: s.origin };
    if (smaller(s.case, existing.case)) {
      Object.assign(report, fromSighting);
      // report.json last: until it is renamed, the folder describes the previous case
      await writeFolderFiles(path, report, folder, s.result.artifacts);
    }
    await writeReport(path, report);
    return { folder, isNew: false, hits: report.hits };
  }
  const report: Report = {
    formatVersion: REPORT_FORMAT,
    signature: signatureOf(s.finding),
    signatureScheme: 'cause',
    ...fromSighting,
    hits: 1,
    firstSeen: s.origin,
    lastSeen: s.origin,
    originalCase: s.originalCase,
    minimisation: s.minimisation,
    confirmation: s.confirmation,
    flaky: s.flaky,
    rechecks: [],
    subject: s.subject,
    tools: s.tools,
  };
  const staging = stagingFolder(reportsDir, folder);
  await rm(staging, { recursive: true, force: true });
  await makeDirectory(staging);
  await writeFolderFiles(staging, report, folder, s.result.artifacts);
  await writeReport(staging, report);
  await makeDirectory(join(path, '..'));
  await rename(staging, path);
  return { folder, isNew: true, hits: 1 };
}

/** A report's repro.sh: its case, the steps as they ran, the damage its build wrote. */
export const reproOfReport = (report: Report) =>
  reproScript({
    finding: report.finding,
    case: report.case,
    subject: report.subject,
    origin: originText(report.firstSeen),
    steps: report.steps,
    damage: report.damage ?? [],
  });

/** Everything in a report folder but report.json, written into `dir`. */
async function writeFolderFiles(dir: string, report: Report, folder: string, artifacts: CaseResult['artifacts']) {
  await writeAtomic(join(dir, 'report.md'), reportMarkdown(report, folder));
  const repro = join(dir, 'repro.sh');
  await writeAtomic(repro, reproOfReport(report));
  await chmod(repro, 0o755);
  const picture = reportPicture(report);
  if (picture !== null) await writeAtomic(join(dir, PICTURE_FILE), picture);
  for (const a of artifacts) await writeAtomic(join(dir, a.name), a.data);
}

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseCase, type Case } from './case.ts';
import { FatalError } from './errors.ts';
import { runCase, workDirsRemoved } from './execute.ts';
import type { Report } from './reports.ts';
import type { Resizer } from './subjects.ts';
import { signatureOf } from '../oracles/finding.ts';

/** Reads a report folder: its case and the signature it was filed under. */
export async function readReport(folder: string): Promise<{ report: Report; case: Case }> {
  const file = join(folder, 'report.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new FatalError(`cannot read ${file}: ${(err as Error).message} (pass a folder made by a fuzz run, e.g. reports/<folder>)`);
  }
  let report: Report;
  try {
    report = JSON.parse(text) as Report;
  } catch (err) {
    throw new FatalError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof report?.signature !== 'string') throw new FatalError(`${file} has no signature: it is not a fuzzer report`);
  try {
    return { report, case: parseCase(report.case, `${file}: case`) };
  } catch (err) {
    throw new FatalError((err as Error).message);
  }
}

/** Re-runs a stored case in a fresh directory. The registry plays no part: replay asks only
 * whether the stored signature happens again. */
export async function replay(folder: string, subject: Resizer, timeoutMs: number, workdir: string) {
  const { report, case: c } = await readReport(folder);
  const result = await runCase(c, { subject, timeoutMs, workdir, wantArtifacts: () => false });
  await workDirsRemoved();
  const signatures = result.findings.map(signatureOf);
  return { expected: report.signature, reproduced: signatures.includes(report.signature), signatures };
}

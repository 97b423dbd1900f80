import { runCase } from '../exec/run-case.ts';
import { workDirsRemoved } from '../exec/work-dir.ts';
import type { Resizer } from '../model/commands.ts';
import { signatureOf } from '../oracles/finding.ts';
import { readReport, reproduces } from '../reporting/store.ts';

/** Re-runs a stored case in a fresh directory. The registry plays no part: replay asks only
 * whether the stored signature happens again. */
export async function replay(folder: string, subject: Resizer, timeoutMs: number, workdir: string) {
  const report = await readReport(folder);
  const result = await runCase(report.case, { subject, timeoutMs, workdir, wantArtifacts: () => false });
  await workDirsRemoved();
  const signatures = result.findings.map(signatureOf);
  return { expected: report.signature, reproduced: reproduces(report, result.findings), signatures };
}

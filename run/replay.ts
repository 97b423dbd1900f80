import { runCase } from '../exec/run-case.ts';
import { workDirsRemoved } from '../exec/work-dir.ts';
import type { Resizer } from '../model/commands.ts';
import { signatureOf } from '../oracles/finding.ts';
import { join } from 'node:path';
import { PICTURE_FILE, reportPicture } from '../reporting/damage-picture.ts';
import { readReport, reproduces, writeAtomic } from '../reporting/store.ts';

/** Re-runs a stored case in a fresh directory. The registry plays no part: replay asks only
 * whether the stored signature happens again. */
export async function replay(folder: string, subject: Resizer, timeoutMs: number, workdir: string) {
  const report = await readReport(folder);
  const result = await runCase(report.case, { subject, timeoutMs, workdir, wantArtifacts: () => false });
  await workDirsRemoved();
  const signatures = result.findings.map(signatureOf);
  // the picture of the damage drawn anew from this run's structures (an older report gets its first)
  const picture = reportPicture({ steps: result.steps, finding: report.finding, signature: report.signature });
  if (picture !== null) await writeAtomic(join(folder, PICTURE_FILE), picture);
  return {
    expected: report.signature,
    reproduced: reproduces(report, result.findings),
    signatures,
    picture: picture !== null,
  };
}

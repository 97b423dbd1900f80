import { join } from 'node:path';
import { CaseSetupError, runCase } from '../exec/run-case.ts';
import { workDirsRemoved } from '../exec/work-dir.ts';
import type { Resizer } from '../model/commands.ts';
import { signatureOf, type Finding } from '../oracles/finding.ts';
import { readReport, reportFolders, reproduces, updateReport, type Recheck } from '../reporting/store.ts';

// --recheck: every stored report is run again against today's subject and marked still
// reproducing or fixed. Nothing is deleted: a fixed report keeps its history and can regress.

export interface RecheckResult {
  folder: string;
  signature: string;
  reproduced: boolean;
  /** What the case gave instead, when it did not reproduce. */
  signatures: string[];
}

export interface RecheckOptions {
  reportsDir: string;
  subject: Resizer;
  subjectVersion: string;
  timeoutMs: number;
  workdir: string;
  signal?: AbortSignal;
  say: (line: string) => void;
}

export async function recheckReports(o: RecheckOptions): Promise<RecheckResult[]> {
  const results: RecheckResult[] = [];
  for (const folder of await reportFolders(o.reportsDir)) {
    if (o.signal?.aborted) break;
    const path = join(o.reportsDir, folder);
    const report = await readReport(path);
    let findings: Finding[];
    try {
      const result = await runCase(report.case, {
        subject: o.subject,
        timeoutMs: o.timeoutMs,
        workdir: o.workdir,
        signal: o.signal,
        wantArtifacts: () => false,
      });
      findings = result.findings;
    } catch (err) {
      // a case that no longer builds says nothing about the subject
      if (!(err instanceof CaseSetupError)) throw err;
      o.say(`${folder}: the case could not be built (${err.message}); left as it was`);
      continue;
    }
    const reproduced = reproduces(report, findings);
    const signatures = findings.map(signatureOf);
    const recheck: Recheck = { date: new Date().toISOString(), subjectVersion: o.subjectVersion, reproduced };
    // re-read: a fuzz run may have counted a hit in the meantime
    await updateReport(path, (latest) => ({ ...latest, rechecks: [...latest.rechecks, recheck] }));
    results.push({ folder, signature: report.signature, reproduced, signatures });
    o.say(
      `${reproduced ? 'STILL REPRODUCES' : 'fixed'}: ${folder}` +
        (reproduced || signatures.length === 0 ? '' : ` (findings now: ${signatures.join('; ')})`),
    );
  }
  await workDirsRemoved();
  return results;
}

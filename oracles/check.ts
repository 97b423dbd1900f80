import type { Finding, Side } from './finding.ts';

/** `qemu-img check --output=json`: counters appear only when non-zero. */
export interface CheckReport {
  'check-errors': number;
  corruptions?: number;
  leaks?: number;
  'allocated-clusters'?: number;
  'image-end-offset'?: number;
}

export interface CheckObservation {
  exitCode: number | null;
  /** null when the output was not a check report (the image could not be opened). */
  report: CheckReport | null;
  stderr: string;
}

export function parseCheck(exitCode: number | null, stdout: string, stderr: string): CheckObservation {
  let report: CheckReport | null = null;
  try {
    const parsed = JSON.parse(stdout) as CheckReport;
    if (typeof parsed['check-errors'] === 'number') report = parsed;
  } catch {
    // not JSON: qemu-img printed only an error
  }
  return { exitCode, report, stderr };
}

export const isClean = (c: CheckObservation) =>
  c.exitCode === 0 && c.report !== null && !c.report.corruptions && !c.report.leaks && c.report['check-errors'] === 0;

function checkFinding(side: Side, c: CheckObservation, otherHasLeaks: boolean): Finding | null {
  const r = c.report;
  const base = { oracle: 'check' as const, side, evidence: { exitCode: c.exitCode, report: r, stderr: c.stderr } };
  if (r === null)
    return {
      ...base,
      kind: 'check-failed',
      detail: `exit=${c.exitCode}`,
      message: `qemu-img check could not check the ${side} image: ${c.stderr.trim()}`,
    };
  if (r.corruptions)
    return {
      ...base,
      kind: 'corruptions',
      detail: 'corruptions',
      message: `qemu-img check found ${r.corruptions} corruptions in the ${side} image`,
    };
  if (r['check-errors'])
    return {
      ...base,
      kind: 'check-errors',
      detail: 'check-errors',
      message: `qemu-img check hit ${r['check-errors']} errors on the ${side} image`,
    };
  if (r.leaks && !otherHasLeaks)
    return {
      ...base,
      kind: 'leaks',
      detail: 'leaks',
      message: `qemu-img check found ${r.leaks} leaked clusters in the ${side} image and none in the other`,
    };
  return null;
}

/** Any corruption or check error in the subject's result is a finding; leaks only where qemu's
 * result has none. The reference check is needed only when the subject's is not clean. */
export function checkOracle(subject: CheckObservation, reference: CheckObservation | null): Finding[] {
  const refLeaks = Boolean(reference?.report?.leaks);
  const findings = [checkFinding('subject', subject, refLeaks)];
  if (reference) findings.push(checkFinding('reference', reference, true));
  return findings.filter((f): f is Finding => f !== null);
}

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { parseCase, type Case } from './case.ts';
import { CaseSetupError, runCase } from './execute.ts';
import { processesSpawned } from './process.ts';
import type { KnownDivergence } from './registry.ts';
import { fileReport, writeAtomic, type Report } from './reports.ts';
import type { Resizer } from './subjects.ts';
import { triage } from './triage.ts';
import { caseAt } from '../generators/case.ts';
import { signatureOf } from '../oracles/finding.ts';

export interface FuzzOptions {
  seed: number;
  iterations: number;
  subject: Resizer;
  timeoutMs: number;
  reportsDir: string;
  registry: KnownDivergence[];
  failFast: boolean;
  tools: Report['tools'];
  log: Logger;
  /** Readable progress for the console. */
  say: (line: string) => void;
}

export interface RunSummary {
  seed: number;
  iterationsRequested: number;
  iterations: number;
  elapsedSeconds: number;
  subject: Resizer;
  tools: Report['tools'];
  /** Cases with at least one finding that no registry entry explains. */
  newDivergences: number;
  /** Cases whose findings the registry explains entirely. */
  knownDivergences: number;
  knownByEntry: Record<string, number>;
  /** Signatures of new findings seen in this run, with their report folders. */
  signatures: { signature: string; folder: string; hitsThisRun: number; filedThisRun: boolean }[];
  /** Registry entries that matched nothing in this run. */
  unusedKnown: string[];
  /** Cases whose base image could not be built: harness bugs, never divergences. */
  setupErrors: { iteration: number; message: string }[];
  processes: { total: number; perIteration: number };
}

export async function fuzz(o: FuzzOptions): Promise<RunSummary> {
  const started = performance.now();
  const processesBefore = processesSpawned();
  const knownByEntry: Record<string, number> = Object.fromEntries(o.registry.map((e) => [e.id, 0]));
  const signatures = new Map<string, RunSummary['signatures'][number]>();
  const setupErrors: RunSummary['setupErrors'] = [];
  let newDivergences = 0;
  let knownDivergences = 0;
  let iterations = 0;

  for (let iteration = 0; iteration < o.iterations; iteration++) {
    const c = caseAt(o.seed, iteration);
    iterations++;
    let result;
    try {
      result = await runCase(c, { subject: o.subject, timeoutMs: o.timeoutMs, wantArtifacts: (findings, steps) => triage(c, { findings, steps }, o.registry).fresh.length > 0 });
    } catch (err) {
      if (!(err instanceof CaseSetupError)) throw err;
      setupErrors.push({ iteration, message: err.message });
      o.log.error({ iteration, case: c, command: err.command }, `case could not be built: ${err.message}`);
      o.say(`[${iteration}] harness bug: the generated case could not be built: ${err.message}`);
      continue;
    }
    const { known, fresh } = triage(c, result, o.registry);
    for (const { entry } of known) knownByEntry[entry.id]! += 1;
    o.log.info({ iteration, steps: result.steps.map((s) => `${s.plan.kind}:${s.reference}/${s.subject}`), known: known.map((k) => k.entry.id), fresh: fresh.map(signatureOf) }, 'case done');
    if (fresh.length === 0) {
      if (known.length > 0) knownDivergences++;
    } else {
      newDivergences++;
      const primary = fresh[0]!;
      const filed = await fileReport(o.reportsDir, {
        finding: primary,
        findings: result.findings,
        case: c,
        result,
        subject: o.subject,
        tools: o.tools,
        origin: { seed: o.seed, iteration, date: new Date().toISOString() },
      });
      const signature = signatureOf(primary);
      const entry = signatures.get(signature) ?? { signature, folder: filed.folder, hitsThisRun: 0, filedThisRun: filed.isNew };
      entry.hitsThisRun++;
      signatures.set(signature, entry);
      o.log.warn({ iteration, signature, folder: filed.folder, isNew: filed.isNew }, primary.message);
      o.say(`[${iteration}] ${filed.isNew ? 'NEW' : 'again'}: ${primary.message} -> ${join(o.reportsDir, filed.folder)}`);
      if (o.failFast) break;
    }
    if ((iteration + 1) % 25 === 0) {
      const rate = (iteration + 1) / ((performance.now() - started) / 1000);
      o.say(`[${iteration + 1}/${o.iterations}] ${rate.toFixed(1)} cases/s, new ${newDivergences}, known ${knownDivergences}`);
    }
  }

  const total = processesSpawned() - processesBefore;
  const summary: RunSummary = {
    seed: o.seed,
    iterationsRequested: o.iterations,
    iterations,
    elapsedSeconds: Math.round((performance.now() - started) / 10) / 100,
    subject: o.subject,
    tools: o.tools,
    newDivergences,
    knownDivergences,
    knownByEntry,
    signatures: [...signatures.values()],
    unusedKnown: Object.entries(knownByEntry)
      .filter(([, n]) => n === 0)
      .map(([id]) => id),
    setupErrors,
    processes: { total, perIteration: iterations ? Math.round((total / iterations) * 10) / 10 : 0 },
  };
  await writeAtomic(join(o.reportsDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  return summary;
}

export class ReplayError extends Error {}

/** Reads a report folder: its case and the signature it was filed under. */
export async function readReport(folder: string): Promise<{ report: Report; case: Case }> {
  const file = join(folder, 'report.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ReplayError(`cannot read ${file}: ${(err as Error).message} (pass a folder made by a fuzz run, e.g. reports/<folder>)`);
  }
  let report: Report;
  try {
    report = JSON.parse(text) as Report;
  } catch (err) {
    throw new ReplayError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof report.signature !== 'string') throw new ReplayError(`${file} has no signature: it is not a fuzzer report`);
  try {
    return { report, case: parseCase(report.case, `${file}: case`) };
  } catch (err) {
    throw new ReplayError((err as Error).message);
  }
}

/** Re-runs a stored case in a fresh directory. The registry plays no part: replay asks only
 * whether the stored signature happens again. */
export async function replay(folder: string, subject: Resizer, timeoutMs: number) {
  const { report, case: c } = await readReport(folder);
  const result = await runCase(c, { subject, timeoutMs, wantArtifacts: () => false });
  const signatures = result.findings.map(signatureOf);
  return { expected: report.signature, reproduced: signatures.includes(report.signature), signatures };
}

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Resizer } from '../model/commands.ts';
import { FatalError } from '../model/errors.ts';
import type { Shard } from '../model/shard.ts';
import type { CoverageSummary } from '../triage/coverage.ts';
import { writeJsonAtomic, type Report } from './store.ts';

// summary.json: what one run (or the merge of a sharded run's shards) did, written into the
// reports directory at its end.

export interface RunSummary {
  seed: number;
  /** --iterations: the case indices below it, across all shards; null when only --duration
   * bounded the run. */
  iterationsRequested: number | null;
  /** --duration in seconds, or null. */
  durationSeconds: number | null;
  /** The shard this run was (1-based index of count), or null for a whole run. */
  shard: Shard | null;
  /** Cases run to the end and counted; an interrupted run counts only those. */
  iterations: number;
  /** Why the run ended before its iterations: 'fail-fast', 'interrupted', or 'duration' (the
   * --duration budget was spent). */
  stoppedEarly: 'fail-fast' | 'interrupted' | 'duration' | null;
  elapsedSeconds: number;
  jobs: number;
  subject: Resizer;
  tools: Report['tools'];
  /** Cases with at least one finding that no registry entry explains. */
  newDivergences: number;
  /** Cases whose findings the registry explains entirely. */
  knownDivergences: number;
  knownByEntry: Record<string, number>;
  /** Signatures of new findings seen in this run, with their report folders (generated and
   * corpus cases alike; flaky ones are listed apart, under `flaky`). */
  signatures: SignatureSeen[];
  /** Findings that never reproduced when re-run: filed under flaky/, not counted as divergences. */
  flaky: SignatureSeen[];
  /** Regression cases from the corpus, run before the generated ones and counted apart from them. */
  corpus: { available: number; run: number; newDivergences: number; knownDivergences: number };
  /** Registry entries that matched nothing in this run. */
  unusedKnown: string[];
  /** Registry entries whose case predicates held for a new finding but whose subjectStderr
   * pattern did not match the subject's message: how many findings, and the first message. */
  messageDiffers: Record<string, { findings: number; stderr: string }>;
  /** Registry entries past their `expires` day: they suppressed nothing in this run. */
  expiredKnown: string[];
  /** Cases whose base image could not be built: harness bugs, never divergences. */
  setupErrors: { iteration: number; message: string }[];
  /** Child processes: all of them; per case run (generated or corpus), counting the case's own
   * commands; and those spent confirming and minimising new findings. */
  processes: { total: number; perIteration: number; filing: number };
  coverage: CoverageSummary;
}

export interface SignatureSeen {
  signature: string;
  folder: string;
  hitsThisRun: number;
  filedThisRun: boolean;
  /** The first case of this run that hit it: a case index, or null for a corpus case (named in
   * firstCorpusCase). */
  firstIteration: number | null;
  firstCorpusCase: string | null;
  confirmation: { runs: number; reproduced: number } | null;
  /** Steps and data operations of the case filed when new, and how it was shrunk. */
  minimised: { steps: number; data: number; runs: number; stoppedBy: string } | null;
}

/** What a run says about the registry: entries that matched nothing, and entries whose message
 * pattern missed the subject's message where all else held. */
export function registryNotes(s: Pick<RunSummary, 'unusedKnown' | 'messageDiffers'>): string[] {
  const notes = s.unusedKnown.length ? [`registry entries that matched nothing: ${s.unusedKnown.join(', ')}`] : [];
  for (const [id, seen] of Object.entries(s.messageDiffers ?? {}))
    notes.push(
      `registry entry ${id} held for ${seen.findings} new findings but not its subjectStderr pattern; ` +
        `the subject said: ${seen.stderr}`,
    );
  return notes;
}

const SUMMARY_FILE = 'summary.json';

export const writeSummary = (reportsDir: string, summary: RunSummary) =>
  writeJsonAtomic(join(reportsDir, SUMMARY_FILE), summary);

/** The summary of a finished run; an error that says what is wrong when there is none. */
export async function readSummary(reportsDir: string): Promise<RunSummary> {
  const file = join(reportsDir, SUMMARY_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new FatalError(
      `cannot read ${file}: ${(err as Error).message} (every input must be the reports directory of a finished run)`,
    );
  }
  try {
    return JSON.parse(text) as RunSummary;
  } catch (err) {
    throw new FatalError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
}

import fc from 'fast-check';
import { caseArbitrary } from '../generators/cases.ts';
import { damageUnrepaired, writesBeforeFirstStep, type Case } from '../model/case.ts';
import { CaseAborted } from '../model/errors.ts';
import type { MinimisationRecord } from '../reporting/store.ts';

// A finding is filed with the smallest case that still gives its signature. fast-check does the
// shrinking: it replays the generated case from its seed and path and walks its shrink tree, so
// every candidate is a case the generator could have made (valid by construction), and a feature,
// step or write survives only when the finding needs it. Reductions that fast-check's shrink tree
// may not reach follow, all valid by construction: steps after the one that diverged never run,
// so they go; then each earlier step and each data operation is dropped in turn (any sequence of
// steps is a valid case: a step that no longer makes sense is refused by both tools; snapshot
// operations stay, as a deletion needs its creation).

export interface MinimiseBudget {
  /** Candidate cases run at most; then the smallest case so far is kept. */
  runs: number;
  /** Wall-clock bound in ms. Reached only when cases are slow; a run that hits it is no longer
   * independent of machine speed, which the report records (stoppedBy: 'time'). */
  timeMs: number;
}

export interface Minimised extends MinimisationRecord {
  case: Case;
}

/** Runs one candidate in a fresh directory: the step of the finding with the same signature, or
 * null when the signature did not come back. */
export type Reproduces = (c: Case) => Promise<{ step: number } | null>;

/** Shrinks case `iteration` of `seed` while `reproduces` finds the same signature. */
export async function minimise(
  seed: number,
  iteration: number,
  original: Case,
  reproduces: Reproduces,
  budget: MinimiseBudget,
  originalStep: number,
  arbitrary: fc.Arbitrary<Case> = caseArbitrary(original.image.format),
): Promise<Minimised> {
  const started = performance.now();
  let runs = 0;
  let best = original;
  let bestStep = originalStep;
  let stoppedBy: Minimised['stoppedBy'] = 'done';
  // the dropping of steps and data operations after fast-check's shrinking needs at most one run
  // each: those runs are kept back, so a budget fast-check spends (binary searches over a TiB
  // size take many) still leaves the case without what it does not need
  const reserve = Math.min(budget.runs, original.steps.length + original.data.length);
  let limit = budget.runs - reserve;
  let first = true;
  let failure: unknown = null;
  /** The answer of every candidate case run so far, by its JSON. */
  const tried = new Map<string, { step: number } | null>();
  const property = fc.asyncProperty(arbitrary, async (c) => {
    // the first value is the generated case itself, already known to reproduce; if the generator
    // no longer makes it (a case from an older version), it passes and nothing is shrunk
    if (first) {
      first = false;
      return JSON.stringify(c) !== JSON.stringify(original);
    }
    // a candidate that shrank only draws the case does not use (another operation's recipes) is
    // the best case again: it reproduces without a run, and shrinking goes on from it; and after
    // each such shrink fast-check offers the candidates it tried before again: a case already run
    // keeps its answer
    const key = JSON.stringify(c);
    if (key === JSON.stringify(best)) return false;
    const known = tried.get(key);
    // once the budget is spent every candidate "passes", and shrinking ends
    const found = known !== undefined ? known : await attempt(c);
    if (known === undefined && stoppedBy === 'done' && failure === null) tried.set(key, found);
    if (found === null) return true;
    [best, bestStep] = [c, found.step];
    return false;
  });
  /** One budgeted run; null when the signature did not come back or the search must stop. */
  const attempt = async (c: Case) => {
    if (runs >= limit) stoppedBy = 'runs';
    else if (performance.now() - started >= budget.timeMs) stoppedBy = 'time';
    if (stoppedBy !== 'done' || failure !== null) return null;
    runs++;
    try {
      return await reproduces(c);
    } catch (err) {
      // fast-check would take a thrown error for a reproduction: stop instead
      if (err instanceof CaseAborted) stoppedBy = 'interrupted';
      else failure = err;
      return null;
    }
  };
  await fc.check(property, { seed, path: String(iteration), numRuns: 1 });

  // the reserve is the drops' own: a search stopped only by fast-check's share of the runs goes on
  // (read through a cast: TypeScript cannot see the closure above assign it)
  const fastCheckStopped = stoppedBy as Minimised['stoppedBy'];
  limit = budget.runs;
  if (fastCheckStopped === 'runs') stoppedBy = 'done';
  const keepIf = async (c: Case) => {
    // damage is written for a repair: without one first, any other step meets a broken image
    // nor may guest writes come first: the read-ahead of the first step reads the base image
    if (damageUnrepaired(c) || writesBeforeFirstStep(c)) return;
    const found = await attempt(c);
    if (found !== null) [best, bestStep] = [c, found.step];
  };
  if (best.steps.length > bestStep + 1) await keepIf({ ...best, steps: best.steps.slice(0, bestStep + 1) });
  for (let i = bestStep - 1; i >= 0; i--) await keepIf({ ...best, steps: best.steps.filter((_, j) => j !== i) });
  for (let i = best.data.length - 1; i >= 0; i--) {
    const op = best.data[i]!.op;
    if (op !== 'snapshot-create' && op !== 'snapshot-delete')
      await keepIf({ ...best, data: best.data.filter((_, j) => j !== i) });
  }
  if (failure !== null) throw failure;
  if ((stoppedBy as Minimised['stoppedBy']) === 'done' && fastCheckStopped === 'runs') stoppedBy = 'runs';
  return { case: best, runs, seconds: Math.round((performance.now() - started) / 10) / 100, stoppedBy };
}

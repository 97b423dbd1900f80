import { opOf, type OperationName, type Step } from '../model/case.ts';
import { amend } from './amend/index.ts';
import { bitmap } from './bitmap/index.ts';
import { commit } from './commit/index.ts';
import { rebase } from './rebase/index.ts';
import type { Operation } from './operation.ts';
import { repair } from './repair/index.ts';
import { resize } from './resize/index.ts';
import { snapshot } from './snapshot/index.ts';

// The operation table, beside the oracle table (oracles/table.ts): every operation the harness
// drives, one row each. A new operation is a folder of its own (its step, generator, judging and
// row) and one line here; execution, triage, reports, coverage and the command line take their
// lists from this table.

export const OPERATIONS = { resize, amend, snapshot, repair, bitmap, commit, rebase } satisfies Record<
  OperationName,
  Operation<never>
>;

/** The row of a step's operation. */
export const operationOf = (step: Step): Operation => OPERATIONS[opOf(step)] as unknown as Operation;

/** Every step kind any operation has: the values of the registry's `stepKind` predicate. */
export const ALL_STEP_KINDS = [...new Set(Object.values(OPERATIONS).flatMap((o) => o.kinds))];

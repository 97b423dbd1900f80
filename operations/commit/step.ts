import type { ImageFormat, OutputMode } from '../../model/case.ts';
import type { Resizer } from '../../model/commands.ts';
import type { ImageState, OperationPlan } from '../../model/state.ts';

// `commit`: the top image's data written into a member of its backing chain (`qemu-img commit`).
// The step as a case holds it, both command lines, and qemu's rules for it (qemu-img.c img_commit;
// instar's in ../shared/reference/instar-ops.md). Checked against qemu-img 7.2: without -b the
// data goes into the parent and the top is emptied; `-b BASE` names any member below (through a
// middle layer too) and implies -d, so the top keeps its data; a base smaller than the top is
// grown to the top's size. A vmdk top (qemu-img 7.2 and 10.0): the same, but a smaller base is
// refused (the vmdk driver cannot grow it: "Block job failed: Operation not supported") and the top
// is never emptied (the vmdk driver cannot), and its parentCID is left stale, so that it no longer
// reads through its parent (`Invalid argument`).

export interface CommitStep {
  op: 'commit';
  /** -b BASE exactly as both tools get it (a chain member's name as the image above it stores
   * it), or null: no -b. */
  base: string | null;
  /** What the subject is asked to print (`Image committed.` in both tools, instar's JSON, or -q). */
  output?: OutputMode;
}

export type CommitKind = 'into-parent' | 'explicit-parent' | 'through-middle' | 'not-in-chain' | 'no-backing';
export const COMMIT_KINDS: readonly CommitKind[] = [
  'into-parent',
  'explicit-parent',
  'through-middle',
  'not-in-chain',
  'no-backing',
];

export function parseCommitStep(step: Record<string, unknown>, fail: (field: string, why: string) => never) {
  if (step.base !== null && (typeof step.base !== 'string' || step.base === ''))
    fail('base', 'must be null (no -b) or the name of a chain member');
  return step as unknown as CommitStep;
}

/** The commit command line in a resizer's dialect (the same options in both; instar adds its JSON),
 * for the top's format (qcow2 or vmdk). */
export function commitArgs(
  resizer: Resizer,
  step: CommitStep,
  file: string,
  output: OutputMode,
  format: ImageFormat = 'qcow2',
): string[] {
  const base = step.base === null ? [] : ['-b', step.base];
  const printing =
    output === 'quiet' ? ['-q'] : output === 'json' && resizer.dialect === 'instar' ? ['--output', 'json'] : [];
  return ['commit', '-f', format, ...base, ...printing, file];
}

/** What qemu-img makes of a commit from `state`: the member it writes into, whether there is one,
 * and the top's state after it (its size and chain are unchanged; the base may grow, which is no
 * part of the top's state). */
export function planCommit(step: CommitStep, state: ImageState): OperationPlan {
  const chain = state.chain ?? [];
  const refused = (kind: CommitKind): OperationPlan => ({ kind, target: null, accepted: false, next: state });
  if (chain.length === 0) return refused('no-backing');
  if (step.base === null) return { kind: 'into-parent', target: null, accepted: true, next: state };
  // qemu matches -b against each member's name as the level above stores it
  const at = chain.findIndex((link) => link.name === step.base);
  if (at < 0) return refused('not-in-chain');
  return { kind: at === 0 ? 'explicit-parent' : 'through-middle', target: null, accepted: true, next: state };
}

/** The member a commit writes into: the one -b names, else the parent (its path). */
export const commitTarget = (step: CommitStep, state: ImageState): string | null => {
  const chain = state.chain ?? [];
  return (step.base === null ? chain[0] : chain.find((link) => link.name === step.base))?.path ?? null;
};

export const describeCommit = (step: CommitStep) => `commit${step.base === null ? '' : ` -b ${step.base}`}`;

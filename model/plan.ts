import { planAmend } from '../operations/amend/step.ts';
import { planBitmap } from '../operations/bitmap/step.ts';
import { planCommit } from '../operations/commit/step.ts';
import { planRebase } from '../operations/rebase/step.ts';
import { planRepair } from '../operations/repair/step.ts';
import { planSnapshot } from '../operations/snapshot/step.ts';
import {
  isConverted,
  opOf,
  type Case,
  type ImageFormat,
  type OperationName,
  type ResizeStep,
  type Step,
} from './case.ts';
import { initialState, type ImageState, type OperationPlan } from './state.ts';

// What qemu's rules say of a step: the size it asks for, its kind, whether qemu-img should accept
// it. planStep applies them to a size the caller knows: the run to the size it read from the image
// before the step (the step records, registry predicates and coverage take that), the generator to
// the size it predicts. plannedSizes predicts every step's size from the case alone, so it serves
// only where nothing was observed: generation, and what a case is expected to do before it runs.
// Nothing downstream of execution judges by it; oracles take what the images show.

export type StepKind = 'grow' | 'shrink' | 'same' | 'invalid';
export const STEP_KINDS: readonly StepKind[] = ['grow', 'shrink', 'same', 'invalid'];

/** What qemu's rules say of a step: its kind (a resize's grow or shrink, an amend's downgrade, a
 * snapshot's apply...), the size it asks for where it asks for one, whether qemu-img accepts it. */
export interface StepPlan {
  kind: string;
  /** The requested new size in bytes, or null when SIZE does not parse. */
  target: number | null;
  /** Whether qemu-img is expected to accept it. */
  accepted: boolean;
}

const SUFFIXES: Record<string, number> = {
  '': 1,
  B: 1,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
  P: 2 ** 50,
  E: 2 ** 60,
};

/** Parses SIZE the way qemu-img does: optional sign, a number (fractions need a suffix), a suffix. */
export function parseSize(size: string, current: number): number | null {
  const m = /^([+-]?)(\d+(?:\.\d+)?)([bBkKmMgGtTpPeE]?)$/.exec(size);
  if (!m) return null;
  const [, sign, num, suffix] = m as unknown as [string, string, string, string];
  if (num.includes('.') && (suffix === '' || suffix.toUpperCase() === 'B')) return null;
  const bytes = Number(num) * SUFFIXES[suffix.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes)) return null;
  if (sign === '+') return current + bytes;
  if (sign === '-') return current - bytes;
  return bytes;
}

/** What qemu-img makes of a step from `current` bytes: qcow2 takes only sizes on the 512-byte
 * sector grid, raw any byte count but no metadata preallocation; vhdx, vmdk and vpc are grown as
 * raw is (their reference is a raw resize) and never shrunk (qemu-img resizes none of them, and
 * instar grows them only). */
export function planStep(step: ResizeStep, current: number, format: ImageFormat): StepPlan & { kind: StepKind } {
  const target = parseSize(step.size, current);
  const offGrid = format === 'qcow2' && target !== null && target % 512 !== 0;
  if (target === null || target <= 0 || offGrid) return { kind: 'invalid', target, accepted: false };
  const prealloc = step.preallocation !== null && step.preallocation !== 'off';
  if (target === current) return { kind: 'same', target, accepted: !prealloc };
  if (target > current)
    return { kind: 'grow', target, accepted: format === 'qcow2' || step.preallocation !== 'metadata' };
  return { kind: 'shrink', target, accepted: step.shrink && !prealloc && !isConverted(format) };
}

/** The virtual size qemu sees in a raw file of `length` bytes: whole 512-byte sectors, the last
 * one padded with zeros (a resize to 513 bytes makes a 513-byte file that qemu-img info and the
 * next relative SIZE take for 1024 bytes). */
export const rawVirtualSize = (length: number) => Math.ceil(length / 512) * 512;

/** The virtual size an accepted step leaves, as qemu sees it next: qcow2 the size asked for, the
 * others whole sectors (a resized vpc is converted back with force_size=on: the size asked for,
 * not the size of its CHS geometry). */
export const sizeAfterStep = (target: number, format: ImageFormat) =>
  format === 'qcow2' ? target : rawVirtualSize(target);

/** A resize by qemu's rules, from a state. */
export function planResize(step: ResizeStep, state: ImageState, format: ImageFormat): OperationPlan {
  const plan = planStep(step, state.size, format);
  const size = plan.accepted && plan.target !== null ? sizeAfterStep(plan.target, format) : state.size;
  return { ...plan, next: { ...state, size } };
}

/** Each operation's rules (its step module), by name: a new operation is a line here. */
const PLANNERS: { [K in OperationName]: (step: StepOf<K>, state: ImageState, format: ImageFormat) => OperationPlan } = {
  resize: planResize,
  amend: planAmend,
  snapshot: planSnapshot,
  repair: planRepair,
  bitmap: planBitmap,
  commit: planCommit,
  rebase: planRebase,
};
type StepOf<K extends OperationName> = Extract<Step, { op?: K }>;

/** A step of any operation by qemu's rules, from a state. */
export const planOperation = (step: Step, state: ImageState, format: ImageFormat): OperationPlan =>
  (PLANNERS[opOf(step)] as (s: Step, st: ImageState, f: ImageFormat) => OperationPlan)(step, state, format);

/** The state before each step and what qemu's rules make of the step, from the case alone: a
 * prediction, for generation and what a case is expected to do before it runs. */
export function plannedStates(c: Case): { before: ImageState; plan: OperationPlan }[] {
  let state = initialState(c);
  return c.steps.map((step) => {
    const before = state;
    const plan = planOperation(step, state, c.image.format);
    if (plan.accepted) state = plan.next;
    return { before, plan };
  });
}

/** The virtual size before each step, assuming qemu's rules decide acceptance: a prediction. */
export const plannedSizes = (c: Case): { before: number; plan: StepPlan }[] =>
  plannedStates(c).map(({ before, plan: { next: _, ...plan } }) => ({ before: before.size, plan }));

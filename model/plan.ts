import { isConverted, type Case, type ImageFormat, type ResizeStep } from './case.ts';

// What qemu's rules say of a step: the size it asks for, its kind, whether qemu-img should accept
// it. planStep applies them to a size the caller knows: the run to the size it read from the image
// before the step (the step records, registry predicates and coverage take that), the generator to
// the size it predicts. plannedSizes predicts every step's size from the case alone, so it serves
// only where nothing was observed: generation, and what a case is expected to do before it runs.
// Nothing downstream of execution judges by it; oracles take what the images show.

export type StepKind = 'grow' | 'shrink' | 'same' | 'invalid';
export const STEP_KINDS: readonly StepKind[] = ['grow', 'shrink', 'same', 'invalid'];

export interface StepPlan {
  kind: StepKind;
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
export function planStep(step: ResizeStep, current: number, format: ImageFormat): StepPlan {
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

/** The virtual size before each step, assuming qemu's rules decide acceptance: a prediction. */
export function plannedSizes(c: Case): { before: number; plan: StepPlan }[] {
  let current = c.image.virtualSize;
  return c.steps.map((step) => {
    const plan = planStep(step, current, c.image.format);
    const before = current;
    if (plan.accepted && plan.target !== null) current = sizeAfterStep(plan.target, c.image.format);
    return { before, plan };
  });
}

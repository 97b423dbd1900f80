import type { OutputMode } from '../../model/case.ts';
import type { Resizer } from '../../model/commands.ts';
import type { ImageState, OperationPlan } from '../../model/state.ts';

// `check --repair`: a damaged qcow2 image repaired in place (`qemu-img check -r leaks|all`). The
// step as a case holds it, both command lines, and qemu's rules for it (qemu-img.c img_check,
// block/qcow2-refcount.c qcow2_check_refcounts; instar's in ../shared/reference/instar-ops.md).
// The damage it repairs is a build step of the case (damage.ts), written before either side runs.

export const REPAIR_TIERS = ['leaks', 'all'] as const;
export type RepairTier = (typeof REPAIR_TIERS)[number];

export interface RepairStep {
  op: 'repair';
  /** qemu-img's `-r leaks|all`; instar's `--repair=leaks|all`. */
  tier: RepairTier;
  /** What the subject is asked to print: its words, JSON, or -q. */
  output?: OutputMode;
}

/** The exit codes of a check that ran, as qemu-img defines them after a repair and its re-check: 0
 * clean, 2 corruptions remain, 3 only leaks remain. 1 is a check that failed (qemu's `-r leaks`
 * where the refcounts need a rebuild), 63 a format that cannot be checked. */
export const REPAIR_EXITS = [0, 2, 3] as const;

export function parseRepairStep(
  step: Record<string, unknown>,
  fail: (field: string, why: string) => never,
): RepairStep {
  if (!(REPAIR_TIERS as readonly unknown[]).includes(step.tier))
    fail('tier', `must be one of ${REPAIR_TIERS.join(', ')}`);
  return step as unknown as RepairStep;
}

/** The repair command line in a resizer's dialect: qemu-img's (`-r TIER`, a JSON report that both
 * the reference and a control run's subject print) or instar's (`--repair=TIER`: its value is
 * optional, so it is given with `=`; no -f). */
export function repairArgs(resizer: Resizer, step: RepairStep, file: string, output: OutputMode): string[] {
  if (resizer.dialect === 'qemu-img') return ['check', '-r', step.tier, '--output=json', '-f', 'qcow2', file];
  const printing = output === 'json' ? ['--output', 'json'] : output === 'quiet' ? ['-q'] : [];
  return ['check', `--repair=${step.tier}`, ...printing, file];
}

/** What the subject prints: qemu-img always its JSON report; instar what the step asks for. */
export const repairOutput = (resizer: Resizer, step: RepairStep): OutputMode =>
  resizer.dialect === 'qemu-img' ? 'json' : (step.output ?? 'human');

/** A repair changes neither the virtual size nor the snapshots; its kind is its tier. */
export const planRepair = (step: RepairStep, state: ImageState): OperationPlan => ({
  kind: step.tier,
  target: null,
  accepted: true,
  next: state,
});

// ---- the damage a repair's case states (written by damage.ts) ----------------------------------

export const DAMAGE_KINDS = [
  /** An unreferenced cluster gets refcount 1 (inside the file, or one cluster appended). */
  'leak',
  /** A referenced cluster's refcount one above its references (where the width has room). */
  'refcount-high',
  /** A referenced cluster's refcount one below (a shared cluster's to 1, an unshared one's to 0). */
  'refcount-low',
  /** A referenced cluster's refcount 0: a live cluster the allocator may hand out again. */
  'refcount-zero',
  /** An active L2 entry's OFLAG_COPIED flipped: set on a shared cluster, cleared on an unshared one. */
  'stale-copied',
  /** An active L2 entry pointed at a metadata cluster (L1, refcount table or block). */
  'overlap',
  /** A refcount table entry zeroed: a whole refcount block's clusters lose their counts. */
  'reftable-entry-gone',
] as const;
export type DamageKind = (typeof DAMAGE_KINDS)[number];

/** One damage of a case (a data operation, applied after the build): `pick` chooses among the
 * places the built image offers (modulo their number). */
export interface Damage {
  op: 'damage';
  kind: DamageKind;
  pick: number;
}

/** Whether a case's build ends with damage. */
export const hasDamage = (c: { data: readonly { op: string }[] }) => c.data.some((d) => d.op === 'damage');

/** Whether a case's damage points a data cluster at metadata: qemu-img's repair counts the
 * second reference and exits 0, and the image stays broken for any later use. */
export const overlapped = (c: { data: readonly { op: string; kind?: string }[] }) =>
  c.data.some((d) => d.op === 'damage' && d.kind === 'overlap');

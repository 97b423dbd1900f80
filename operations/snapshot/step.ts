import type { ImageSpec, OutputMode } from '../../model/case.ts';
import { openImage, type Resizer } from '../../model/commands.ts';
import type { ImageState, OperationPlan } from '../../model/state.ts';

// `snapshot`: a qcow2 image's internal snapshots created, applied, deleted or listed in place
// (`qemu-img snapshot -c/-a/-d/-l`). The step as a case holds it, both command lines, and qemu's
// rules for it (qemu-img.c img_snapshot, block/qcow2-snapshot.c; instar's in
// ../shared/reference/instar-ops.md).

export const SNAPSHOT_ACTIONS = ['create', 'apply', 'delete', 'list'] as const;
export type SnapshotAction = (typeof SNAPSHOT_ACTIONS)[number];

export interface SnapshotStep {
  op: 'snapshot';
  action: SnapshotAction;
  /** The snapshot's name (its id for apply, which both tools also take); unused by list. */
  name: string;
  /** What the subject is asked to print: its words (a listing), JSON (a listing) or -q. */
  output?: OutputMode;
}

const FLAG: Record<SnapshotAction, string> = { create: '-c', apply: '-a', delete: '-d', list: '-l' };

export function parseSnapshotStep(
  step: Record<string, unknown>,
  fail: (field: string, why: string) => never,
): SnapshotStep {
  if (!(SNAPSHOT_ACTIONS as readonly unknown[]).includes(step.action))
    fail('action', `must be one of ${SNAPSHOT_ACTIONS.join(', ')}`);
  if (typeof step.name !== 'string') fail('name', 'must be a string (empty for list)');
  if ((step.name as string).includes('\0')) fail('name', 'must not hold a NUL byte');
  return step as unknown as SnapshotStep;
}

/** The snapshot command line in a resizer's dialect: qemu-img's (no -f: 7.2 probes the format;
 * the key of an encrypted image by --image-opts), or instar's (`-f qcow2` and its output options). */
export function snapshotArgs(
  resizer: Resizer,
  step: SnapshotStep,
  file: string,
  image: Pick<ImageSpec, 'format' | 'encrypted'>,
  output: OutputMode,
): string[] {
  const what = step.action === 'list' ? [FLAG.list] : [FLAG[step.action], step.name];
  if (resizer.dialect === 'qemu-img') {
    const opened = openImage(file, image, image.encrypted);
    // qemu-img snapshot takes no -f: the image is named alone, or by --image-opts with its key
    const options = image.encrypted ? opened.options : [];
    return ['snapshot', ...options, ...what, opened.image];
  }
  const printing = output === 'json' ? ['--output', 'json'] : output === 'quiet' ? ['-q'] : [];
  return ['snapshot', ...what, '-f', 'qcow2', ...printing, file];
}

/** What qemu-img makes of a snapshot step from `state` (checked against qemu-img 7.2): a creation
 * raises every allocated cluster's refcount by one, so it needs room above the highest count it
 * leaves (2^bits - 1: no snapshot at 1 bit, two at 2 bits), and no external data file; duplicate
 * names are allowed. An apply or delete needs the name (the first one, by name; qemu also takes an
 * id); an apply sets the size the snapshot was taken at. A listing is read-only and always works. */
export function planSnapshot(step: SnapshotStep, state: ImageState): OperationPlan {
  const at = state.snapshots.findIndex((s) => s.name === step.name);
  const refused: OperationPlan = { kind: step.action, target: null, accepted: false, next: state };
  switch (step.action) {
    case 'list':
      return { kind: 'list', target: null, accepted: true, next: state };
    case 'create': {
      const highest = 2 ** state.refcountBits - 1;
      if (state.dataFile || state.snapshots.length + 2 > highest) return refused;
      const snapshots = [...state.snapshots, { name: step.name, size: state.size }];
      return { kind: 'create', target: null, accepted: true, next: { ...state, snapshots } };
    }
    case 'apply': {
      if (at < 0) return refused;
      const size = state.snapshots[at]!.size;
      return { kind: 'apply', target: size, accepted: true, next: { ...state, size } };
    }
    case 'delete': {
      if (at < 0) return refused;
      const snapshots = state.snapshots.filter((_, i) => i !== at);
      return { kind: 'delete', target: null, accepted: true, next: { ...state, snapshots } };
    }
  }
}

import {
  BACKING_FORMATS,
  type BackingFormat,
  type BackingSpec,
  type ImageFormat,
  type OutputMode,
} from '../../model/case.ts';
import type { Resizer } from '../../model/commands.ts';
import type { ImageState, OperationPlan } from '../../model/state.ts';

// `rebase`: the top image's backing file changed (`qemu-img rebase`). Safe mode first copies into
// the top every cluster where the old and the new chain read differently, so the guest sees the
// same disk; `-u` only rewrites the name. The step as a case holds it, both command lines, and
// qemu's rules for it (qemu-img.c img_rebase; instar's in ../shared/reference/instar-ops.md).
// Checked against qemu-img 7.2: `-b ""` detaches (safe mode copies the whole old chain in); a new
// backing without -F is refused in both modes ("backing format must be specified").

export interface RebaseStep {
  op: 'rebase';
  /** -b exactly as both tools get it: a chain member's name, the name of the image `newBacking`
   * describes, or '' (detach). */
  backing: string;
  /** -F: the new backing's format, or null (not given). */
  backingFormat: BackingFormat | null;
  /** -u: rewrite the name only. */
  unsafe: boolean;
  /** An image the harness builds beside the chain, named `backing`, for a rebase onto content the
   * chain never had. */
  newBacking?: BackingSpec;
  /** The top's old backing, moved beside it (to `movedTo`) or removed (`movedTo` null) by the
   * harness in both sides' directories right before the step: the normal use of -u, which names
   * where it went or another image. */
  oldBacking?: { file: string; movedTo: string | null };
  /** What the subject is asked to print (nothing in qemu-img, instar's `Image rebased.`, its JSON,
   * or -q). */
  output?: OutputMode;
}

export const REBASE_TARGETS = [
  'detach',
  'same-backing',
  'skip-middle',
  'new-backing',
  'moved-backing',
  'missing-backing',
] as const;
export type RebaseTarget = (typeof REBASE_TARGETS)[number];
export const REBASE_KINDS: readonly string[] = [
  ...REBASE_TARGETS.flatMap((t) => [`safe-${t}`, `unsafe-${t}`]),
  'no-format',
  'not-found',
  'vmdk-safe',
  'vmdk-unsafe',
];

/** The file name of the image a rebase step builds (`newBacking`), by its step's index. */
export const newBackingName = (index: number, format: BackingFormat) => `new${index}.${format}`;

export function parseRebaseStep(
  step: Record<string, unknown>,
  fail: (field: string, why: string) => never,
  parseBacking: (json: unknown, field: string) => unknown,
) {
  if (typeof step.backing !== 'string') fail('backing', "must be the -b name, a string ('' detaches)");
  if (step.backingFormat !== null && !BACKING_FORMATS.includes(step.backingFormat as BackingFormat))
    fail('backingFormat', `must be null (no -F) or one of ${BACKING_FORMATS.join(', ')}`);
  if (typeof step.unsafe !== 'boolean') fail('unsafe', 'must be true or false');
  if (step.newBacking !== undefined) parseBacking(step.newBacking, 'newBacking');
  if (step.oldBacking !== undefined) {
    const old = step.oldBacking as { file?: unknown; movedTo?: unknown } | null;
    if (typeof old?.file !== 'string' || old.file === '') fail('oldBacking.file', 'must be the old backing file name');
    if (old.movedTo !== null && (typeof old.movedTo !== 'string' || old.movedTo === ''))
      fail('oldBacking.movedTo', 'must be a file name, or null (removed)');
  }
  return step as unknown as RebaseStep;
}

/** The rebase command line in a resizer's dialect: qemu-img's, or instar's (`-b` first, its
 * output options). */
export function rebaseArgs(
  resizer: Resizer,
  step: RebaseStep,
  file: string,
  output: OutputMode,
  imageFormat: ImageFormat = 'qcow2',
): string[] {
  const format = step.backingFormat === null ? [] : ['-F', step.backingFormat];
  const unsafe = step.unsafe ? ['-u'] : [];
  if (resizer.dialect === 'qemu-img')
    return [
      'rebase',
      '-f',
      imageFormat,
      ...unsafe,
      '-b',
      step.backing,
      ...format,
      ...(output === 'quiet' ? ['-q'] : []),
      file,
    ];
  const printing = output === 'json' ? ['--output', 'json'] : output === 'quiet' ? ['-q'] : [];
  return ['rebase', '-b', step.backing, ...format, ...unsafe, '-f', imageFormat, ...printing, file];
}

/** What the new backing is to the top's chain as `state` has it. */
export function rebaseTarget(step: RebaseStep, state: ImageState): RebaseTarget | null {
  const chain = state.chain ?? [];
  if (step.oldBacking) return step.backing === step.oldBacking.movedTo ? 'moved-backing' : 'missing-backing';
  if (step.backing === '') return 'detach';
  // rebase -b names a path relative to the image (a commit -b, a stored name)
  if (step.backing === chain[0]?.path) return 'same-backing';
  if (step.backing === chain[1]?.path) return 'skip-middle';
  return step.newBacking ? 'new-backing' : null;
}

/** What qemu-img makes of a rebase from `state`: its kind (mode and target), whether it accepts
 * it, and the chain the top has after it. qemu-img refuses every rebase of a vmdk ("Operation not
 * supported", -u too: checked against 7.2 and 10.0). */
export function planRebase(step: RebaseStep, state: ImageState, format: ImageFormat = 'qcow2'): OperationPlan {
  // (safe mode copies the clusters that differ into the vmdk before it fails: the file changes)
  const chain = state.chain ?? [];
  const target = rebaseTarget(step, state);
  const refused = (kind: string): OperationPlan => ({ kind, target: null, accepted: false, next: state });
  if (format === 'vmdk') return refused(step.unsafe ? 'vmdk-unsafe' : 'vmdk-safe');
  if (target === null) return refused('not-found');
  if (target !== 'detach' && step.backingFormat === null) return refused('no-format');
  // safe mode opens the old chain first: gone, qemu-img cannot
  if (step.oldBacking && !step.unsafe) return refused(`safe-${target}`);
  // the image stores -b as given; the levels below keep the names they store
  const named = { name: step.backing, path: step.backing };
  const next =
    target === 'detach'
      ? []
      : target === 'same-backing'
        ? chain
        : target === 'skip-middle'
          ? [named, ...chain.slice(2)]
          : target === 'moved-backing'
            ? [named, ...chain.slice(1)]
            : [named];
  return {
    kind: `${step.unsafe ? 'unsafe' : 'safe'}-${target}`,
    target: null,
    accepted: true,
    next: { ...state, chain: next },
  };
}

export const describeRebase = (step: RebaseStep) => {
  const format = step.backingFormat ? ` -F ${step.backingFormat}` : '';
  const old = step.oldBacking;
  const before = old ? `${old.file} ${old.movedTo ? `moved to ${old.movedTo}` : 'removed'}, then ` : '';
  return `${before}rebase${step.unsafe ? ' -u' : ''} -b ${JSON.stringify(step.backing)}${format}`;
};

/** The files the harness moves or removes in both sides' directories right before the step. */
export const rebaseFileMoves = (step: RebaseStep) => (step.oldBacking ? [step.oldBacking] : []);

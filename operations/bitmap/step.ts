import type { ImageSpec, OutputMode } from '../../model/case.ts';
import { openImage, type Resizer } from '../../model/commands.ts';
import { defaultGranularity, type BitmapState, type ImageState, type OperationPlan } from '../../model/state.ts';

// `bitmap`: a qcow2 image's persistent dirty bitmaps added, removed, cleared, enabled, disabled or
// merged in place (`qemu-img bitmap`). The step as a case holds it, both command lines, and qemu's
// rules for it (qemu-img.c img_bitmap, block/dirty-bitmap.c; instar's in
// ../shared/reference/instar-ops.md: its own action order, its refusals).

export const BITMAP_ACTIONS = ['add', 'remove', 'clear', 'enable', 'disable', 'merge'] as const;
export type BitmapActionName = (typeof BITMAP_ACTIONS)[number];

/** One action of a bitmap call; a merge names the bitmap it ORs into the step's bitmap. */
export interface BitmapAction {
  action: BitmapActionName;
  source?: string;
}

export interface BitmapStep {
  op: 'bitmap';
  /** The actions in command-line order. */
  actions: BitmapAction[];
  /** The bitmap they act on (the command's last argument). */
  name: string;
  /** `-g BYTES`, the granularity of an added bitmap; null: the default (the cluster size within
   * 4 KiB..64 KiB). */
  granularity: number | null;
  /** What the subject is asked to print: its words (nothing), or JSON. instar's bitmap has no -q. */
  output?: OutputMode;
  /** Guest writes made into both images right before the call (qemu-io, never on the first step:
   * the build's writes come before it), so that the enabled bitmaps hold their bits. */
  writes?: GuestWrite[];
}

/** A pattern write of the guest: bytes, multiples of 512. */
export interface GuestWrite {
  offset: number;
  length: number;
  pattern: number;
}

/** The qemu-io commands of a step's guest writes that lie inside a disk of `size` bytes. */
export const guestWriteCommands = (step: BitmapStep, size: number) =>
  (step.writes ?? [])
    .filter((w) => w.offset + w.length <= size)
    .map((w) => `write -q -P ${w.pattern} ${w.offset} ${w.length}`);

/** The step kinds (registry `stepKind`, coverage): an action alone; a merge whose source has another
 * granularity (qemu rescales, instar refuses); several actions; and the calls instar treats its own
 * way: a merge among other actions (refused), a flag repeated so that instar's order differs from
 * the command line's, more than eight actions (refused). */
export const BITMAP_KINDS = [...BITMAP_ACTIONS, 'merge-rescaled', 'several', 'merge-mixed', 'repeated', 'over-eight'];

/** The most bytes qemu lets one bitmap's bits take (BME_MAX_PHYS_SIZE, block/qcow2-bitmap.c):
 * 512 MiB of bits: a 4 TiB disk needs a granularity of 1 KiB or more. */
export const MAX_BITMAP_BYTES = 2 ** 29;

/** The granularity asked for, or the smallest power of two above it whose bitmap qemu can store
 * for a disk of `size` bytes. */
export function storableGranularity(granularity: number | null, size: number): number | null {
  if (granularity === null) return null;
  let g = granularity;
  while (Math.ceil(size / g / 8) > MAX_BITMAP_BYTES) g *= 2;
  return g;
}

/** instar's cap on the actions of one call. */
export const MAX_ACTIONS = 8;

export function parseBitmapStep(
  step: Record<string, unknown>,
  fail: (field: string, why: string) => never,
): BitmapStep {
  if (!Array.isArray(step.actions) || step.actions.length === 0) fail('actions', 'must be a non-empty array');
  (step.actions as unknown[]).forEach((a, i) => {
    const action = (a ?? {}) as Record<string, unknown>;
    if (!(BITMAP_ACTIONS as readonly unknown[]).includes(action.action))
      fail(`actions[${i}].action`, `must be one of ${BITMAP_ACTIONS.join(', ')}`);
    if (action.action === 'merge' && typeof action.source !== 'string')
      fail(`actions[${i}].source`, 'must name the bitmap a merge reads');
  });
  if (typeof step.name !== 'string' || step.name.includes('\0')) fail('name', 'must be a string without NUL');
  const g = step.granularity;
  if (g !== null && (typeof g !== 'number' || !Number.isInteger(g) || g < 1))
    fail('granularity', 'must be null or a positive integer (bytes)');
  if (step.writes !== undefined) {
    if (!Array.isArray(step.writes)) fail('writes', 'must be an array of {offset, length, pattern}');
    (step.writes as unknown[]).forEach((w, i) => {
      const write = (w ?? {}) as Record<string, unknown>;
      for (const key of ['offset', 'length', 'pattern'] as const) {
        const v = write[key];
        if (typeof v !== 'number' || !Number.isInteger(v) || v < (key === 'length' ? 1 : 0))
          fail(`writes[${i}].${key}`, 'must be a whole number of bytes (length above 0)');
      }
    });
  }
  return step as unknown as BitmapStep;
}

const flagOf = (a: BitmapAction) => (a.action === 'merge' ? ['--merge', a.source!] : [`--${a.action}`]);

/** The bitmap command line in a resizer's dialect: qemu-img's (-f qcow2, or the key of an encrypted
 * image by --image-opts) or instar's (`-f qcow2` and its output option). */
export function bitmapArgs(
  resizer: Resizer,
  step: BitmapStep,
  file: string,
  image: Pick<ImageSpec, 'format' | 'encrypted'>,
  output: OutputMode,
): string[] {
  const flags = step.actions.flatMap(flagOf);
  const g = step.granularity === null ? [] : ['-g', String(step.granularity)];
  if (resizer.dialect === 'qemu-img') {
    const { options, image: opened } = openImage(file, image, image.encrypted);
    return ['bitmap', ...flags, ...g, ...options, opened, step.name];
  }
  const printing = output === 'json' ? ['--output', 'json'] : [];
  return ['bitmap', ...flags, ...g, '-f', 'qcow2', ...printing, file, step.name];
}

/** What the subject prints: qemu-img nothing but its errors; instar its JSON where asked. */
export const bitmapOutput = (resizer: Resizer, step: BitmapStep): OutputMode =>
  resizer.dialect === 'qemu-img' || step.output !== 'json' ? 'human' : 'json';

/** instar's order of a call's actions: its flags are counters, so every use of one flag runs at
 * that flag's first place on the command line (`--add --remove --add` runs add, add, remove). */
export function instarOrder(actions: readonly BitmapAction[]): BitmapAction[] {
  const firsts = [...new Set(actions.map((a) => a.action))];
  return firsts.flatMap((name) => actions.filter((a) => a.action === name));
}

/** What qemu-img makes of a bitmap call from `state` (checked against qemu-img 7.2): the actions
 * in order, each on the bitmaps the ones before left; the first that fails fails the call (the
 * ones before it stay done: qemu-img stores the bitmaps as it closes the image). v2 images hold no
 * bitmaps; a merge rescales a source of another granularity. */
export function planBitmap(step: BitmapStep, state: ImageState): OperationPlan {
  const kind = bitmapKind(step, state.bitmaps ?? []);
  let bitmaps = [...(state.bitmaps ?? [])];
  const refused = { kind, target: null, accepted: false, next: state };
  for (const a of step.actions) {
    const target = bitmaps.find((b) => b.name === step.name);
    if (a.action === 'add') {
      if (state.compat === '0.10' || target) return refused;
      const granularity = step.granularity ?? defaultGranularity(state.clusterSize ?? 65536);
      bitmaps = [...bitmaps, { name: step.name, granularity, enabled: true }];
    } else if (!target) return refused;
    else if (a.action === 'remove') bitmaps = bitmaps.filter((b) => b !== target);
    else if (a.action === 'enable' || a.action === 'disable')
      bitmaps = bitmaps.map((b) => (b === target ? { ...b, enabled: a.action === 'enable' } : b));
    else if (a.action === 'merge' && !bitmaps.some((b) => b.name === a.source)) return refused;
  }
  return { kind, target: null, accepted: true, next: { ...state, bitmaps } };
}

/** A call's kind (BITMAP_KINDS), from its actions and the bitmaps it starts from. */
export function bitmapKind(step: BitmapStep, bitmaps: readonly BitmapState[]): string {
  const { actions } = step;
  const merges = actions.filter((a) => a.action === 'merge');
  if (actions.length > MAX_ACTIONS) return 'over-eight';
  if (merges.length > 0 && merges.length < actions.length) return 'merge-mixed';
  if (instarOrder(actions).some((a, i) => a !== actions[i])) return 'repeated';
  const granularity = (name: string) => bitmaps.find((b) => b.name === name)?.granularity;
  const target = granularity(step.name);
  const rescaled = merges.some(
    (m) => target !== undefined && granularity(m.source!) !== undefined && granularity(m.source!) !== target,
  );
  if (rescaled) return 'merge-rescaled';
  if (actions.length > 1) return 'several';
  return actions[0]!.action;
}

/** How a report and repro.sh name a step: `bitmap --add --disable -g 512 "b1"`. */
export function describeBitmap(step: BitmapStep): string {
  const flags = step.actions.map((a) => flagOf(a).join(' '));
  const g = step.granularity === null ? [] : [`-g ${step.granularity}`];
  const writes = step.writes?.length ? [`(after ${step.writes.length} guest writes)`] : [];
  return ['bitmap', ...flags, ...g, JSON.stringify(step.name), ...writes].join(' ');
}

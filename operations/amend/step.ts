import type { ImageSpec, OutputMode } from '../../model/case.ts';
import { openImage, type Resizer } from '../../model/commands.ts';
import type { ImageState, OperationPlan } from '../../model/state.ts';

// `amend`: the options of a qcow2 image changed in place (`qemu-img amend -o`). The step as a case
// holds it, both command lines, and qemu's rules for it (qemu-img.c img_amend, block/qcow2.c
// qcow2_amend_options; instar's in ../shared/reference/instar-ops.md).

export interface AmendStep {
  op: 'amend';
  /** The -o argument exactly as both tools get it: `compat=0.10`, `lazy_refcounts=on,compat=1.1`. */
  options: string;
  /** What the subject is asked to print (instar's `Image amended.`, its JSON, or -q). */
  output?: OutputMode;
}

export type AmendKind = 'upgrade' | 'downgrade' | 'refcount-bits' | 'size' | 'lazy-refcounts' | 'noop' | 'invalid';
export const AMEND_KINDS: readonly AmendKind[] = [
  'upgrade',
  'downgrade',
  'refcount-bits',
  'size',
  'lazy-refcounts',
  'noop',
  'invalid',
];

/** The -o pieces as key and value, in order; empty pieces skipped (both tools skip them). */
export const amendPairs = (options: string): { key: string; value: string | null }[] =>
  options
    .split(',')
    .filter((p) => p !== '')
    .map((p) => {
      const at = p.indexOf('=');
      return at < 0 ? { key: p, value: null } : { key: p.slice(0, at), value: p.slice(at + 1) };
    });

export function parseAmendStep(step: Record<string, unknown>, fail: (field: string, why: string) => never): AmendStep {
  if (typeof step.options !== 'string') fail('options', 'must be the -o argument, a string');
  return step as unknown as AmendStep;
}

/** The amend command line in a resizer's dialect: qemu-img's (given the key of an encrypted image),
 * or instar's (`-f qcow2`, its output options; no key: it refuses --object). */
export function amendArgs(
  resizer: Resizer,
  step: AmendStep,
  file: string,
  image: Pick<ImageSpec, 'format' | 'encrypted'>,
  output: OutputMode,
): string[] {
  if (resizer.dialect === 'qemu-img') {
    const { options, image: name } = openImage(file, image, image.encrypted);
    return ['amend', ...options, '-o', step.options, name];
  }
  const printing = output === 'json' ? ['--output', 'json'] : output === 'quiet' ? ['-q'] : [];
  return ['amend', '-f', 'qcow2', '-o', step.options, ...printing, file];
}

const SECTOR = 512;
const sizeOf = (text: string): number | null => {
  const m = /^(\d+)([kKmMgGtT]?)$/.exec(text);
  if (!m) return null;
  const unit = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase()]!;
  return Number(m[1]) * unit;
};

/** What qemu-img makes of an amend from `state` (checked against qemu-img 7.2): the kind of change
 * that leads (a downgrade before anything else it asks), whether qemu accepts it, and the state it
 * leaves. qemu reads `compat` as 0.10/v2 or 1.1/v3, `lazy_refcounts` as on/off (case-sensitive),
 * `refcount_bits` as a power of two up to 64, `size` in whole sectors; it downgrades an image whose
 * refcounts are 16 bits wide and which has no extended L2 entries or external data file (it expands
 * zero clusters and drops lazy refcounts on the way), and refuses any other key. */
export function planAmend(step: AmendStep, state: ImageState): OperationPlan {
  const invalid: OperationPlan = { kind: 'invalid', target: null, accepted: false, next: state };
  const pairs = amendPairs(step.options);
  if (pairs.length === 0) return invalid;
  const next = { ...state };
  let explicitLazy: boolean | null = null;
  let sizeAsked: number | null = null;
  for (const { key, value } of pairs) {
    if (value === null) return invalid;
    if (key === 'compat') {
      if (['0.10', 'v2'].includes(value)) next.compat = '0.10';
      else if (['1.1', 'v3'].includes(value)) next.compat = '1.1';
      else return invalid;
    } else if (key === 'lazy_refcounts') {
      if (value !== 'on' && value !== 'off') return invalid;
      explicitLazy = value === 'on';
    } else if (key === 'refcount_bits') {
      const bits = Number(value);
      if (!/^\d+$/.test(value) || bits < 1 || bits > 64 || (bits & (bits - 1)) !== 0) return invalid;
      next.refcountBits = bits as ImageState['refcountBits'];
    } else if (key === 'size') {
      const size = sizeOf(value);
      if (size === null || size <= 0 || size % SECTOR !== 0) return invalid;
      sizeAsked = size;
    } else return invalid;
  }
  const downgrade = state.compat === '1.1' && next.compat === '0.10';
  const upgrade = state.compat === '0.10' && next.compat === '1.1';
  if (next.compat === '0.10') {
    if (next.refcountBits !== 16 || explicitLazy === true)
      return { ...invalid, kind: downgrade ? 'downgrade' : 'invalid' };
    if (downgrade && (state.extendedL2 || state.dataFile)) return { ...invalid, kind: 'downgrade' };
    next.lazyRefcounts = false;
  } else if (explicitLazy !== null) next.lazyRefcounts = explicitLazy;
  if (sizeAsked !== null) next.size = sizeAsked;
  const kind: AmendKind = downgrade
    ? 'downgrade'
    : upgrade
      ? 'upgrade'
      : next.refcountBits !== state.refcountBits
        ? 'refcount-bits'
        : next.size !== state.size
          ? 'size'
          : next.lazyRefcounts !== state.lazyRefcounts
            ? 'lazy-refcounts'
            : 'noop';
  return { kind, target: sizeAsked, accepted: true, next };
}

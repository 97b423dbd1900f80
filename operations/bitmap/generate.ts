import fc from 'fast-check';
import type { DataOp, ImageSpec, OutputMode } from '../../model/case.ts';
import type { BitmapState, ImageState } from '../../model/state.ts';
import { fraction } from '../../generators/bounds.ts';
import {
  planBitmap,
  storableGranularity,
  type GuestWrite,
  type BitmapAction,
  type BitmapActionName,
  type BitmapStep,
} from './step.ts';

// bitmap steps and the images they meet. A case with bitmap steps is a v3 image (but one in ten,
// where the drawn image is v2: no bitmaps there, so every call is refused) whose build adds
// bitmaps between its writes, so that the enabled ones hold the bits of the writes after them;
// 16-bit refcounts in two cases in three (the only width instar takes). A step is one action
// most often, on a bitmap the image has (a new one for an add), now and then one it lacks; else
// several actions qemu-img takes whole, a flag repeated so that instar's order differs from the
// command line's, a merge among other actions, or more than eight actions.

const ACTIONS = [
  { weight: 3, arbitrary: fc.constant('add' as const) },
  { weight: 2, arbitrary: fc.constant('remove' as const) },
  { weight: 2, arbitrary: fc.constant('clear' as const) },
  { weight: 2, arbitrary: fc.constant('enable' as const) },
  { weight: 2, arbitrary: fc.constant('disable' as const) },
  { weight: 3, arbitrary: fc.constant('merge' as const) },
];

const SHAPES = [
  { weight: 8, arbitrary: fc.constant('single' as const) },
  { weight: 4, arbitrary: fc.constant('several' as const) },
  { weight: 2, arbitrary: fc.constant('repeated' as const) },
  { weight: 1, arbitrary: fc.constant('merge-mixed' as const) },
  { weight: 1, arbitrary: fc.constant('over-eight' as const) },
];

/** Granularities of added bitmaps: the default (null), qemu's smallest, the usual ones, 1 MiB. */
export const GRANULARITIES = [null, 512, 4096, 65536, 1048576] as const;

export const bitmapStepRecipeArb = fc.record({
  shape: fc.oneof(...SHAPES),
  actions: fc.array(fc.oneof(...ACTIONS), { minLength: 4, maxLength: 4 }),
  which: fraction,
  source: fraction,
  granularity: fc.constantFrom(...GRANULARITIES),
  /** One single action in eight names a bitmap the image lacks (or adds one it has). */
  stray: fc.integer({ min: 0, max: 7 }),
  /** Guest writes before the call (after the first step) in two steps in three. */
  writes: fc.array(
    fc.record({ at: fraction, sectors: fc.integer({ min: 1, max: 128 }), pattern: fc.integer({ min: 1, max: 255 }) }),
    {
      minLength: 0,
      maxLength: 2,
    },
  ),
});
export type BitmapStepRecipe = typeof bitmapStepRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** Calls whose repeated flag instar runs in another order than qemu-img: qemu takes them whole. */
const REORDERED: BitmapActionName[][] = [
  ['enable', 'disable', 'enable'],
  ['disable', 'enable', 'disable'],
  ['add', 'remove', 'add'],
  ['clear', 'disable', 'clear', 'enable'],
];

/** A bitmap step for an image in `state`: a new bitmap is `bm<n>`, unused so far. */
export function materialiseBitmap(
  r: BitmapStepRecipe,
  state: ImageState,
  output: OutputMode,
  first = false,
): BitmapStep {
  const made = bitmapCall(r, state, output);
  const writes = first ? [] : r.writes.map((w) => guestWrite(w, state.size)).filter((w) => w !== null);
  return writes.length > 0 ? { ...made, writes } : made;
}

/** A write of up to 64 KiB at a drawn place inside the disk; none on a disk below one sector. */
function guestWrite(w: BitmapStepRecipe['writes'][number], size: number): GuestWrite | null {
  const sectors = Math.floor(size / 512);
  if (sectors === 0) return null;
  const length = Math.min(w.sectors, sectors) * 512;
  const offset = Math.floor(w.at * (sectors - length / 512 + 1)) * 512;
  return { offset, length, pattern: w.pattern };
}

function bitmapCall(r: BitmapStepRecipe, state: ImageState, output: OutputMode): BitmapStep {
  const bitmaps = state.bitmaps ?? [];
  const pick = (f: number): BitmapState | undefined => bitmaps[Math.floor(f * bitmaps.length)];
  const fresh = () => {
    for (let n = bitmaps.length; ; n++) if (!bitmaps.some((b) => b.name === `bm${n}`)) return `bm${n}`;
  };
  const target = pick(r.which);
  // a merge's source has another granularity than its target half the time where the image has one:
  // qemu rescales its bits, which instar refuses and a faulty merge gets wrong
  const rescaled = bitmaps.filter((b) => b.granularity !== target?.granularity);
  const source =
    (r.source < 0.5 && rescaled.length > 0 ? rescaled[Math.floor(r.source * 2 * rescaled.length)] : pick(r.source))
      ?.name ?? 'nosuch';
  const step = (actions: BitmapAction[], name: string): BitmapStep => ({
    op: 'bitmap',
    actions,
    name,
    granularity: actions.some((a) => a.action === 'add') ? storableGranularity(r.granularity, state.size) : null,
    output,
  });
  const of = (names: BitmapActionName[]): BitmapAction[] =>
    names.map((action) => (action === 'merge' ? { action, source } : { action }));
  const existing = target?.name;
  switch (r.shape) {
    case 'repeated': {
      const names = REORDERED[Math.floor(r.which * REORDERED.length)]!;
      return names[0] === 'add' || existing === undefined
        ? step(of(['add', 'remove', 'add']), fresh())
        : step(of(names), existing);
    }
    case 'merge-mixed':
      return step([{ action: 'add' }, { action: 'merge', source }], fresh());
    case 'over-eight': {
      if (existing === undefined) return step(of(['add', ...Array<BitmapActionName>(8).fill('clear')]), fresh());
      const names = Array.from({ length: 9 }, (_, i): BitmapActionName => (i % 2 ? 'disable' : 'enable'));
      return step(of(names), existing);
    }
    case 'several': {
      // the actions drawn, each kept where qemu-img takes the call up to it: a call qemu refuses
      // half-way leaves the actions before done, which says nothing of either tool
      if (r.actions[0] === 'merge' && existing !== undefined)
        return step(
          [
            { action: 'merge', source },
            { action: 'merge', source: pick(r.stray / 8)?.name ?? source },
          ],
          existing,
        );
      const first = existing === undefined || r.actions[0] === 'add' ? 'add' : r.actions[0]!;
      const name = first === 'add' ? fresh() : existing!;
      let actions = of([first]);
      for (const next of r.actions.slice(1)) {
        if (next === 'merge') continue; // instar refuses a merge among other actions: merge-mixed
        const tried = step([...actions, ...of([next])], name);
        if (planBitmap(tried, state).accepted) actions = tried.actions;
      }
      return step(actions, name);
    }
    case 'single': {
      const action = r.actions[0]!;
      const stray = r.stray === 0;
      if (action === 'add') return step(of(['add']), stray && existing !== undefined ? existing : fresh());
      if (existing === undefined || stray) return step(of([action]), existing === undefined ? fresh() : 'nosuch');
      return step(of([action]), existing);
    }
  }
}

// ---- the images of cases with bitmap steps ------------------------------------------------------

export const bitmapCaseRecipeArb = fc.record({
  width: fraction,
  v2: fraction,
  adds: fc.array(
    fc.record({
      at: fraction,
      granularity: fc.constantFrom(...GRANULARITIES),
      enabled: fc.integer({ min: 0, max: 3 }),
    }),
    { minLength: 1, maxLength: 3 },
  ),
});
export type BitmapCaseRecipe = typeof bitmapCaseRecipeArb extends fc.Arbitrary<infer T> ? T : never;

/** The image and data of a case with bitmap steps: one both tools open without a second file (no
 * external data file; an encrypted one stays: its bitmaps need no key), clean (not dirty), v3 but
 * one in ten drawn v2; its bitmaps added among its data operations (one in four disabled), each at
 * a drawn place, so that the writes after an enabled one set its bits. */
export function shapeForBitmaps(
  drawn: ImageSpec,
  data: DataOp[],
  r: BitmapCaseRecipe,
): { image: ImageSpec; data: DataOp[] } {
  const keepV2 = drawn.compat === '0.10' && r.v2 < 1 / 10;
  const sixteen = r.width < 2 / 3 ? { refcountBits: 16 as const, createdWithRefcountBits: null } : {};
  const image: ImageSpec = {
    ...drawn,
    ...(keepV2 ? {} : { compat: '1.1' as const }),
    ...sixteen,
    dataFile: 'none',
    dirty: false,
    bitmaps: keepV2 ? 0 : drawn.bitmaps,
  };
  if (keepV2) return { image, data };
  const out = [...data];
  r.adds.forEach((a, i) => {
    const at = Math.floor(a.at * (out.length + 1));
    const granularity = storableGranularity(a.granularity, image.virtualSize);
    out.splice(at, 0, { op: 'bitmap-add', name: `built${i}`, granularity, enabled: a.enabled !== 0 });
  });
  return { image, data: out };
}

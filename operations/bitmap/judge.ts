import type { ImageState } from '../../model/state.ts';
import type { BitmapStep } from './step.ts';

// How bitmap's own output is judged (oracles/output.ts): in human mode it prints nothing, in
// qemu-img and in instar; instar's `--output json` report is {"actions-applied": N,
// "resulting-bitmaps": M}: the actions of the call and the bitmaps the image holds after it. The
// bitmaps themselves are the bitmaps oracle's (oracles/bitmaps.ts).

export const BITMAP_JSON_KEYS = ['actions-applied', 'resulting-bitmaps'] as const;

/** The values a JSON report must hold, from the step and the subject's image after it (null: not
 * read, not judged). */
export const bitmapJsonExpected = (step: BitmapStep, after: ImageState | null): Record<string, unknown> => ({
  'actions-applied': step.actions.length,
  'resulting-bitmaps': after?.bitmaps?.length ?? null,
});

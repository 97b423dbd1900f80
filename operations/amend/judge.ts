import type { ImageState } from '../../model/state.ts';

// How amend's own report is judged (oracles/output.ts): instar's `--output json` prints
// `{filename, format, action, compat, lazy_refcounts}` (../shared/reference/instar-ops.md), which
// must say what the image shows: the compat level and lazy_refcounts after the step, and whether
// it changed anything.

export const AMEND_JSON_KEYS = ['filename', 'format', 'action', 'compat', 'lazy_refcounts'] as const;

/** The values an amend's JSON report must hold, from the subject's image before and after the
 * step as read from it; null where they could not be read. */
export function amendJsonExpected(before: ImageState | null, after: ImageState | null): Record<string, unknown> {
  const changed =
    before && after
      ? before.compat !== after.compat ||
        before.lazyRefcounts !== after.lazyRefcounts ||
        before.refcountBits !== after.refcountBits ||
        before.size !== after.size
      : null;
  return {
    format: 'qcow2',
    action: changed === null ? null : changed ? 'amended' : 'noop',
    compat: after?.compat ?? null,
    lazy_refcounts: after ? (after.lazyRefcounts ? 'on' : 'off') : null,
  };
}

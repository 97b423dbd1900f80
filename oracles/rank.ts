import type { Finding } from './finding.ts';

// One case files one report: its first new finding. So a case's findings are ranked from cause to
// symptom by one fixed order, and one cause gives the same primary finding whatever else the case
// shows: how the tools read the size; the subject dying or refusing before anything it left behind;
// a header or tables qemu cannot make sense of before what qemu-img check says of them; refcount
// damage as qemu-img check names it (its word is what a maintainer can check with qemu-img alone)
// before the reader's own view of it; damage before a header that merely differs; header fields
// before the guest content they change. Subject findings come before qemu's own behaviour of the
// same rank.

const ORDER = [
  'size-grammar/refused',
  'size-grammar/accepted',
  'size-grammar/read-differently',
  'outcome/crashed',
  'outcome/timed-out',
  'outcome/refused',
  'outcome/accepted',
  'unchanged-on-refusal/image-modified-on-refusal',
  // a chain member a commit or rebase lost or left unreadable: before what the top shows of it
  'chain/member-missing',
  'chain/member-extra',
  'chain/member-unreadable',
  'structure/unreadable',
  'structure/header-inconsistent',
  'structure/metadata-invalid',
  'structure/spec-violation',
  // a whole structure lost (a header rebuilt without it): the cause of the refcount damage below
  'structure/structure-dropped',
  'check/check-failed',
  'check/corruptions',
  'check/check-errors',
  'check/leaks',
  'chain/member-check-failed',
  'structure/refcount-mismatch',
  'structure/copied-flag-mismatch',
  'structure/beyond-eof',
  'structure/mapping-beyond-end',
  'structure/refcount-order-changed',
  'structure/header-field-changed',
  'structure/extension-lost',
  'structure/extension-changed',
  'structure/extension-added',
  'chain/member-backing-differs',
  'bitmaps/bitmap-directory-differs',
  'info/info-failed',
  'info/info-mismatch',
  'content/size-differs',
  'content/compare-failed',
  'content/content-differs',
  'content/stale-bytes-after-regrow',
  'content/snapshot-content-differs',
  'chain/member-content-differs',
  'chain/top-alone-differs',
  // dirty bits record guest writes: a step that wrote what it should not shows in the content first
  'bitmaps/bitmap-bits-differ',
  'allocation/grown-range-differs',
  'allocation/host-blow-up',
  // a repair's verdict on its own result: after what the result is (check, structure, content)
  'repair/exit-differs',
  'repair/counts-differ',
  'repair/json-invalid',
  'repair/quiet-printed',
  'output/json-invalid',
  'output/json-incomplete',
  'output/json-wrong',
  'output/stdout-differs',
  'output/quiet-printed',
  'in-place/replaced',
  'in-place/attributes-changed',
  'in-place/files-left',
  'after-use/workload-failed',
];

/** The rank of a finding: its kind's place in ORDER (an after-use finding's inner kind, after
 * every step finding), subject before reference; unknown kinds last. */
export function rankOf(f: Pick<Finding, 'oracle' | 'kind' | 'side'>): number {
  const own = ORDER.indexOf(`${f.oracle}/${f.kind}`);
  const inner = f.oracle === 'after-use' && own < 0 ? ORDER.findIndex((k) => k.endsWith(`/${f.kind}`)) : -1;
  const place = own >= 0 ? own : inner >= 0 ? ORDER.length + inner : 2 * ORDER.length;
  return place * 2 + (f.side === 'reference' ? 1 : 0);
}

/** Findings in rank order (stable: equal ranks keep the order the oracles gave). */
export const byRank = <F extends Pick<Finding, 'oracle' | 'kind' | 'side'>>(findings: F[]): F[] =>
  findings
    .map((f, i) => ({ f, i }))
    .sort((a, b) => rankOf(a.f) - rankOf(b.f) || a.i - b.i)
    .map(({ f }) => f);

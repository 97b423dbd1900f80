import type { SnapshotStep } from '../../model/case.ts';

// How snapshot's own output is judged (oracles/output.ts): the mutating modes print nothing, in
// qemu-img and in instar; a listing is qemu-img's table, which must be the same but for the dates
// and clocks (the two sides take their snapshots moments apart); instar's `--output json` listing
// is an array of {id, name, vm-state-size, date, vm-clock, icount} that must name the image's
// snapshots in table order.

/** A `qemu-img snapshot -l` table with what differs from run to run taken out: the date and time
 * of each snapshot and the VM clock. */
export const normaliseListing = (text: string) =>
  text.replace(/\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}/g, '<date>').replace(/\d{2,}:\d{2}:\d{2}\.\d{3}/g, '<clock>');

export const SNAPSHOT_JSON_KEYS = ['id', 'name', 'vm-state-size', 'date', 'vm-clock', 'icount'] as const;

/** What is wrong with a JSON listing against the image's snapshots (id and name, in table order):
 * the keys an entry lacks, the fields that disagree; null when it is not an array. A mutating step
 * owes no JSON: it must print nothing. */
export function snapshotJsonDisagreements(
  step: SnapshotStep,
  report: unknown,
  snapshots: { id: string; name: string }[] | null,
): { wrong: string[]; missing: string[] } | null {
  if (step.action !== 'list') return { wrong: report === undefined ? [] : ['printed'], missing: [] };
  if (!Array.isArray(report)) return null;
  const entries = report as Record<string, unknown>[];
  const missing = [...new Set(entries.flatMap((e) => SNAPSHOT_JSON_KEYS.filter((k) => !(k in (e ?? {})))))];
  const wrong: string[] = [];
  if (snapshots !== null) {
    if (entries.length !== snapshots.length) wrong.push('entries');
    else {
      if (entries.some((e, i) => String(e?.id) !== snapshots[i]!.id)) wrong.push('id');
      if (entries.some((e, i) => e?.name !== snapshots[i]!.name)) wrong.push('name');
    }
  }
  return { wrong: wrong.sort(), missing: missing.sort() };
}

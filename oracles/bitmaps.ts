import type { BitmapBits } from '../qcow2/bitmaps.ts';
import type { Finding } from './finding.ts';

// The bitmaps oracle: a qcow2 image's persistent dirty bitmaps as a guest tool sees them (their
// names, granularity, in_use and auto flags) and the bits each holds, read from the bitmap tables
// by the harness (qcow2/bitmaps.ts), against qemu's result of the same step. By name, not by
// directory order: where a bitmap sits in the directory means nothing to a guest. Refcounts of
// the tables and the extension's presence are the structure oracle's and check's.

/** What differs in the bitmaps of the two results: the directory (bitmaps missing or extra in the
 * subject's, granularity, flags) and the bits of bitmaps both have with the same granularity. After
 * a bitmap call every bit must be qemu's (`exact`); after a step of another operation only a bit
 * qemu's result holds and the subject's lacks is a finding: a tool that wrote more guest data than
 * qemu (zeros over a grown tail, say) rightly dirtied its bitmaps there, and the content oracle
 * judges the data itself. */
export function bitmapsOracle(
  reference: BitmapBits[] | undefined,
  subject: BitmapBits[] | undefined,
  exact = true,
): Finding[] {
  if (reference === undefined || subject === undefined) return [];
  const theirs = new Map(subject.map((b) => [b.name, b]));
  const ours = new Map(reference.map((b) => [b.name, b]));
  const directory = new Set<string>();
  const directoryLines: string[] = [];
  const bitLines: string[] = [];
  let bitsDiffer = false;
  for (const r of reference) {
    const s = theirs.get(r.name);
    if (!s) {
      directory.add('missing');
      directoryLines.push(`${JSON.stringify(r.name)} missing`);
      continue;
    }
    if (s.granularity !== r.granularity) {
      directory.add('granularity');
      directoryLines.push(`${JSON.stringify(r.name)} granularity ${s.granularity} (qemu ${r.granularity})`);
    } else if (exact ? s.set !== r.set || s.runs !== r.runs : !holdsAll(s, r)) {
      bitsDiffer = true;
      bitLines.push(
        `${JSON.stringify(r.name)} has ${s.set} bits set (${s.runs || 'none'}), qemu ${r.set} (${r.runs || 'none'})`,
      );
    }
    if (s.flags.join() !== r.flags.join()) {
      directory.add('flags');
      directoryLines.push(`${JSON.stringify(r.name)} flags [${s.flags.join(',')}] (qemu [${r.flags.join(',')}])`);
    }
  }
  for (const s of subject)
    if (!ours.has(s.name)) {
      directory.add('extra');
      directoryLines.push(`${JSON.stringify(s.name)} extra`);
    }
  const findings: Finding[] = [];
  const evidence = { reference, subject };
  if (directory.size > 0)
    findings.push({
      oracle: 'bitmaps',
      kind: 'bitmap-directory-differs',
      side: 'subject',
      detail: [...directory].sort().join(','),
      message: `the bitmaps differ from qemu's result: ${directoryLines.join('; ')}`,
      evidence,
    });
  // one detail for every difference of bits: the same fault sets more bits in one case and fewer
  // in another
  if (bitsDiffer)
    findings.push({
      oracle: 'bitmaps',
      kind: 'bitmap-bits-differ',
      side: 'subject',
      detail: 'bits',
      message: `dirty bits differ from qemu's result: ${bitLines.join('; ')}`,
      evidence,
    });
  return findings;
}

/** Whether `subject` holds every bit `reference` holds, as far as the runs listed show (past them,
 * by the count). */
function holdsAll(subject: BitmapBits, reference: BitmapBits): boolean {
  if (subject.set < reference.set) return false;
  const runs = (b: BitmapBits) =>
    b.runs
      .split(',')
      .filter((r) => /^\d/.test(r))
      .map((r) => r.split('-').map(Number))
      .map(([a, z]) => [a!, z ?? a!] as const);
  const theirs = runs(subject);
  const listedAll = !subject.runs.includes('more runs');
  return runs(reference).every(
    ([a, z]) => theirs.some(([x, y]) => x <= a && z <= y) || (!listedAll && a > (theirs.at(-1)?.[1] ?? -1)),
  );
}

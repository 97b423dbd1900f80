import type { Finding } from './finding.ts';

// A resize is in place, as qemu-img's is: the image keeps its inode (a hard link, an open file
// descriptor or a bind mount still sees the result), its mode and its owner, and the directory
// holds no new files afterwards (no staging copy, journal or lock left next to the image). A
// subject that writes a new file and renames it over the image passes every other oracle.

/** What `stat` says of the subject's image, as the oracle compares it. */
export interface FileIdentity {
  /** The inode number, as a decimal string (inode numbers pass 2^53). */
  ino: string;
  /** Permission bits and the file type, st_mode. */
  mode: number;
  uid: number;
  gid: number;
}

export interface InPlaceObservation {
  /** The image's file name in its directory. */
  image: string;
  before: FileIdentity;
  /** Null when the image is gone (the structure oracle reports that). */
  after: FileIdentity | null;
  /** The names in the image's directory right before and right after the subject's resize. */
  filesBefore: string[];
  filesAfter: string[];
}

/** A file name as a signature can hold it: the image's name and numbers (pids, times) taken out,
 * so `subject.qcow2.journal-4711` and `subject.qcow2.journal-99` are one kind of leftover. */
const leftoverName = (name: string, image: string) => name.split(image).join('<image>').replace(/\d+/g, '<n>');

export function inPlaceOracle(o: InPlaceObservation): Finding[] {
  const base = { oracle: 'in-place' as const, side: 'subject' as const };
  const out: Finding[] = [];
  const { before, after } = o;
  if (after !== null && after.ino !== before.ino) {
    const message =
      `the image is a new file after the step (inode ${before.ino}, now ${after.ino}): ` +
      'it was replaced, not resized in place';
    out.push({ ...base, kind: 'replaced', detail: 'inode', message, evidence: { before, after } });
  } else if (after !== null && (after.mode !== before.mode || after.uid !== before.uid || after.gid !== before.gid)) {
    const changed = [
      ...(after.mode !== before.mode ? ['mode'] : []),
      ...(after.uid !== before.uid || after.gid !== before.gid ? ['owner'] : []),
    ];
    const octal = (m: number) => (m & 0o7777).toString(8);
    const message =
      `the step changed the image's ${changed.join(' and ')}: mode ${octal(before.mode)} → ${octal(after.mode)}, ` +
      `owner ${before.uid}:${before.gid} → ${after.uid}:${after.gid}`;
    out.push({ ...base, kind: 'attributes-changed', detail: changed.join(','), message, evidence: { before, after } });
  }
  const had = new Set(o.filesBefore);
  const left = o.filesAfter.filter((n) => !had.has(n)).sort();
  if (left.length > 0) {
    const names = [...new Set(left.map((n) => leftoverName(n, o.image)))].sort();
    const message = `the step left ${left.length} new file(s) next to the image: ${left.join(', ')}`;
    out.push({ ...base, kind: 'files-left', detail: names.join(','), message, evidence: { left } });
  }
  return out;
}

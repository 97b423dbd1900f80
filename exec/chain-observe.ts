import { access, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { withoutBacking } from '../model/commands.ts';
import { chainFileFormat, chainMembers, imagePath, type SideFiles } from '../model/layout.ts';
import type { ChainMemberObservation, ChainObservation, CompareRun } from '../oracles/chain.ts';
import { isClean, parseCheck } from '../oracles/check.ts';
import { HEADER_OFFSET, parseQcow2Header, type Qcow2Header } from '../qcow2/format.ts';
import { portableBackingName, withQcow2 } from '../qcow2/reader.ts';
import { vmdkBackingName } from '../formats/vmdk.ts';
import type { CaseRun } from './case-run.ts';
import { contentHash } from './files.ts';
import { backingNameOf } from './image-state.ts';

// What the chain oracle (oracles/chain.ts) looks at after a commit or a rebase: each chain file of
// both sides, and both tops read alone. A member byte for byte the same on both sides costs two
// reads and no process; only a member that differs is compared, checked and its header read.

const exists = (file: string) =>
  access(file).then(
    () => true,
    () => false,
  );

const compareRun = (r: { exitCode?: number | null; stdout: string; stderr: string }): CompareRun => ({
  exitCode: r.exitCode ?? null,
  stdout: r.stdout,
  stderr: r.stderr,
});

/** A qcow2 chain file's bytes but its backing name's (and that name as Qcow2Reader's
 * portableBackingFile writes it), or null for another file. */
async function withoutOwnName(file: string): Promise<{ name: string | null; rest: Buffer } | null> {
  const b = await readFile(file);
  let h: Qcow2Header;
  try {
    h = parseQcow2Header(b);
  } catch {
    return null;
  }
  const [offset, size, clusterSize] = [h.backingFileOffset, h.backingFileSize, h.clusterSize];
  if (offset === 0 || offset + size > b.length) return null;
  const name = portableBackingName(b.subarray(offset, offset + size).toString('utf8'), file);
  // the name's length field and the name are left out, and the zeros after it in the first
  // cluster (a longer name leaves fewer)
  const sizeField = HEADER_OFFSET.backingFileSize;
  let end = Math.min(clusterSize, b.length);
  while (end > offset + size && b[end - 1] === 0) end--;
  const rest = [
    b.subarray(0, sizeField),
    b.subarray(sizeField + 4, offset),
    b.subarray(offset + size, end),
    b.subarray(clusterSize),
  ];
  return { name, rest: Buffer.concat(rest) };
}

/** Two copies of a chain file that differ only in naming their own directory by absolute path
 * (each side's chain is its own): the same file to the oracle. */
async function sameButOwnDirectory(r: string, s: string): Promise<boolean> {
  const [a, b] = [await withoutOwnName(r), await withoutOwnName(s)];
  return a !== null && b !== null && a.name === b.name && a.rest.equals(b.rest);
}

/** A chain file's backing name as the oracle compares it (a qcow2 level's own directory written
 * `<image dir>`: Qcow2Reader's portableBackingFile), or null. */
const portableBackingOf = (file: string) =>
  withQcow2(file, async (q) => q.portableBackingFile()).catch(() => vmdkBackingName(file).catch(() => null));

/** Whether a qcow2 or vmdk chain file names a backing file that is not there. */
async function backingGone(file: string): Promise<boolean> {
  const name = await backingNameOf(file);
  return name !== null && !(await exists(resolve(dirname(file), name)));
}

/** Each chain file of both sides; `written` is the member the step writes into (its path). */
export async function observeChain(run: CaseRun, written: string | null): Promise<ChainObservation> {
  const { reference, subject } = run.layout;
  const inSide = (side: SideFiles, file: string) => join(run.dir, side.dir, file);
  const members: ChainMemberObservation[] = [];
  for (const { file, role } of chainMembers(run.c)) {
    const [r, s] = [inSide(reference, file), inSide(subject, file)];
    const present = { reference: await exists(r), subject: await exists(s) };
    const member: ChainMemberObservation = { file, role, written: file === written, present, identical: false };
    members.push(member);
    if (!present.reference || !present.subject) continue;
    member.identical = (await contentHash(r)) === (await contentHash(s)) || (await sameButOwnDirectory(r, s));
    if (member.identical) continue;
    const format = chainFileFormat(file);
    const rel = (side: SideFiles) => `${side.dir}/${file}`;
    const both = ['compare', '-f', format, '-F', format, rel(reference), rel(subject)];
    if (format === 'raw') {
      member.compare = compareRun(await run.run('qemu-img', both));
      continue;
    }
    // a member whose own backing is gone on both sides (a rebase -u's removed old backing below it)
    // opens on neither: it is read alone, as qemu's own result can be
    const alone = (await backingGone(r)) && (await backingGone(s));
    if (alone) member.readAlone = true;
    const compared = alone
      ? ['compare', withoutBacking(rel(reference), format), withoutBacking(rel(subject), format)]
      : both;
    member.compare = compareRun(await run.run('qemu-img', compared));
    const check = async (side: SideFiles) => {
      const named = alone ? [withoutBacking(file, format)] : ['-f', format, file];
      const c = await run.run('qemu-img', ['check', '--output=json', ...named], side);
      return parseCheck(c.exitCode ?? null, c.stdout, c.stderr);
    };
    member.subjectCheck = await check(subject);
    member.referenceCheck = isClean(member.subjectCheck) ? null : await check(reference);
    member.backing = { reference: await portableBackingOf(r), subject: await portableBackingOf(s) };
  }
  const topFormat = run.c.image.format === 'vmdk' ? 'vmdk' : 'qcow2';
  const top = await run.run('qemu-img', [
    'compare',
    withoutBacking(imagePath(reference), topFormat),
    withoutBacking(imagePath(subject), topFormat),
  ]);
  return { members, topAlone: compareRun(top) };
}

import { createHash } from 'node:crypto';
import { mkdir, open, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

// Whole-file reading of images and data files: the content hash of a refused step's files, sparse
// copies, and the stamps that spare a second hash of files nothing wrote. Files are read in blocks:
// an all-zero block (a hole, or preallocated space) is hashed as one marker byte and not copied, so
// files mostly made of holes cost a read, not a hash or a write.

const BLOCK = 64 * 1024;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** The blocks of an open file with their offsets, the last one possibly short. Reads fill the
 * buffer to the end (or to EOF), so blocks always start at the same offsets. */
async function* blocksOf(fd: FileHandle): AsyncGenerator<{ at: number; block: Buffer; zero: boolean }> {
  const buffer = Buffer.allocUnsafe(16 * BLOCK);
  for (let at = 0, filled = -1; filled !== 0; at += filled) {
    filled = 0;
    for (let n = -1; n !== 0 && filled < buffer.length; filled += n)
      n = (await fd.read(buffer, filled, buffer.length - filled, at + filled)).bytesRead;
    for (let b = 0; b < filled; b += BLOCK) {
      const block = buffer.subarray(b, Math.min(b + BLOCK, filled));
      yield { at: at + b, block, zero: block.equals(ZERO_BLOCK.subarray(0, block.length)) };
    }
  }
}

/** The files' content hash; a subject may delete the image, which is evidence, not a harness
 * error. */
export async function contentHash(...files: string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const file of files) {
    const fd = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    // by its place in the list, not its path: the same files in another directory (the base
    // image's and a side's) hash the same, present or not
    if (fd === null) {
      hash.update('missing\0');
      continue;
    }
    try {
      for await (const { block, zero } of blocksOf(fd)) {
        if (zero && block.length === BLOCK) hash.update('z');
        else hash.update('d').update(block);
      }
    } finally {
      await fd.close();
    }
    hash.update('\0');
  }
  return hash.digest('hex');
}

/** Copies a file to each of `to`, keeping its holes and reading it once: a data file is as long
 * as the virtual disk and mostly a hole, and copyFile on tmpfs writes every byte of it. */
export async function copySparse(from: string, to: string[]): Promise<void> {
  const src = await open(from, 'r');
  const dsts = await Promise.all(to.map((file) => open(file, 'w')));
  try {
    const { size } = await src.stat();
    await Promise.all(dsts.map((dst) => dst.truncate(size)));
    for await (const { at, block, zero } of blocksOf(src))
      if (!zero) await Promise.all(dsts.map((dst) => dst.write(block, 0, block.length, at)));
  } finally {
    await Promise.all([src, ...dsts].map((f) => f.close()));
  }
}

/** File timestamps may be a kernel tick coarse (up to 10 ms): two writes within one tick can
 * leave the same mtime and ctime. */
export const TICK_MARGIN_MS = 20;

/** Files' identity, size and change times, taken right before a command that may write them. */
export interface Stamp {
  id: string;
  /** The latest ctime among the files, in ms. */
  changedMs: number;
  takenMs: number;
}

export async function stampOf(files: string[]): Promise<Stamp> {
  const takenMs = Date.now();
  const stats = await Promise.all(files.map((f) => stat(f, { bigint: true }).catch(() => null)));
  return {
    id: stats.map((s) => (s ? `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}` : 'missing')).join('|'),
    changedMs: Math.max(0, ...stats.map((s) => (s ? Number(s.ctimeNs / 1_000_000n) : 0))),
    takenMs,
  };
}

/** Whether files are as they were at `before`, from their stamps alone: any write or truncation
 * changes ctime (even when mtime is set back), and a write after `before` lands in a later tick
 * than the last change before it when that change was a margin before the stamp. */
export const provenUnchanged = (before: Stamp, now: Stamp) =>
  now.id === before.id && before.changedMs < before.takenMs - TICK_MARGIN_MS;

/** `mkdir -p`, one level at a time. Node's own `mkdir(dir, { recursive: true })` never returns for
 * a path such as /proc/x, where the parent exists but refuses the child with ENOENT: it retries the
 * parent for ever. Here a level that still cannot be made once its parent exists is an error. */
export async function makeDirectory(dir: string): Promise<void> {
  try {
    await mkdir(dir);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err;
  }
  await makeDirectory(dirname(dir));
  await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
}

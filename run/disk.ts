import { statfs } from 'node:fs/promises';
import { DiskFullError } from '../model/errors.ts';

/** Below this much free space in the work or reports directory the run stops cleanly. */
const MIN_FREE_BYTES = 256 * 1024 * 1024;

/** Throws DiskFullError, saying what to do, when `dir` has less than MIN_FREE_BYTES free. */
export async function ensureSpace(dir: string, what: string, flag: string) {
  const s = await statfs(dir);
  const free = s.bavail * s.bsize;
  if (free >= MIN_FREE_BYTES) return;
  const mib = (n: number) => Math.floor(n / 2 ** 20);
  throw new DiskFullError(
    `the ${what} ${dir} has only ${mib(free)} MiB free (at least ${mib(MIN_FREE_BYTES)} MiB needed): ` +
      `free space or pass ${flag} DIR`,
  );
}

import { dir as tmpDir } from 'tmp-promise';
import { DiskFullError, isNoSpace } from '../model/errors.ts';

// Each case runs in a temporary directory of its own below --workdir, removed afterwards. Freeing a
// large file on tmpfs takes milliseconds, so a case does not wait for its removal: the next case
// starts, and whoever ran the cases awaits workDirsRemoved() before it ends.

const removals = new Set<Promise<void>>();
let removalError: Error | null = null;

function removeInBackground(removal: Promise<void>) {
  const tracked = removal.then(
    () => undefined,
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') removalError ??= err;
    },
  );
  removals.add(tracked);
  void tracked.then(() => removals.delete(tracked));
}

/** Waits until every case directory is gone; throws if one could not be removed. */
export async function workDirsRemoved(): Promise<void> {
  await Promise.all(removals);
  const err = removalError;
  removalError = null;
  if (err) throw new Error(`a case directory could not be removed: ${err.message}`);
}

export const diskFull = (workdir: string, why: string) =>
  new DiskFullError(`the work directory ${workdir} is full: ${why}; free space or pass --workdir DIR`);

/** Runs `body` in a fresh directory below `workdir`, which is removed afterwards (in the
 * background). A full disk there ends the run: it is no divergence. */
export async function inCaseDirectory<T>(workdir: string, body: (dir: string) => Promise<T>): Promise<T> {
  try {
    const { path, cleanup } = await tmpDir({ unsafeCleanup: true, prefix: 'instar-fuzz-', tmpdir: workdir });
    try {
      return await body(path);
    } finally {
      removeInBackground(cleanup());
    }
  } catch (err) {
    if (isNoSpace(err)) throw diskFull(workdir, (err as Error).message);
    throw err;
  }
}

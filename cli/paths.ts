import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { makeDirectory } from '../exec/files.ts';
import { UsageError, usageFail } from './args.ts';

// The directories a command line works in, checked first: light to load, so that a bad path is
// said at once, before the modules of a run load.

/** A tmpfs keeps image churn off the disk; the system temp dir where there is none. */
export async function defaultWorkdir(): Promise<string> {
  const shm = '/dev/shm';
  try {
    await access(shm, constants.W_OK);
    if ((await stat(shm)).isDirectory()) return shm;
  } catch {
    // no usable /dev/shm
  }
  return tmpdir();
}

export async function writableDir(dir: string, flag: string, create: boolean) {
  try {
    if (create) await makeDirectory(dir);
    if (!(await stat(dir)).isDirectory()) usageFail(`${dir} is not a directory (${flag})`);
    await access(dir, constants.W_OK);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    usageFail(`${flag} ${dir} is not a writable directory: ${(err as Error).message}`);
  }
}

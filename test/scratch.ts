import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { execa } from 'execa';

/** A scratch directory for one test file's images: made on first use (so other hooks may use it),
 * removed after the file's tests. */
export function scratch() {
  let made: string | undefined;
  let seq = 0;
  const dir = () => (made ??= mkdtempSync(join(tmpdir(), 'fuzz-scratch-')));
  after(() => {
    if (made) rmSync(made, { recursive: true, force: true });
  });
  /** A fresh path in the directory (img0.qcow2, img1.qcow2, ...), or the named one. */
  const path = (name = `img${seq++}.qcow2`) => join(dir(), name);
  /** Creates a qcow2 image with `-o opts` and runs the qemu-io commands on it. */
  const image = async (opts: string, size: string, io: string[] = []): Promise<string> => {
    const file = path();
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), file, size]);
    if (io.length > 0) await execa('qemu-io', ['-f', 'qcow2', ...io.flatMap((c) => ['-c', c]), file]);
    return file;
  };
  return { path, image, dir };
}

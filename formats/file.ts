import { open, stat, type FileHandle } from 'node:fs/promises';

// Read-only access to an image file for the format readers: a structure at a time, at the offsets
// the image names, never the whole file.

/** An image file opened for reading, with its length. */
export class ImageFile {
  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly length: number,
  ) {}

  static async open(path: string): Promise<ImageFile> {
    const fh = await open(path, 'r');
    try {
      return new ImageFile(fh, path, (await fh.stat()).size);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** `length` bytes at `offset`; what lies past the end of the file reads as zeros (a structure
   * that runs past it is reported by the rules, not thrown). */
  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    for (let n = -1; done < length && n !== 0 && offset + done < this.length; done += n)
      n = (await this.fh.read(buf, done, length - done, offset + done)).bytesRead;
    return buf;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/** Runs `fn` on the file opened for reading, and closes it. */
export async function withImageFile<T>(path: string, fn: (f: ImageFile) => Promise<T>): Promise<T> {
  const f = await ImageFile.open(path);
  try {
    return await fn(f);
  } finally {
    await f.close();
  }
}

/** Whether a path is a regular file. */
export const isFile = (path: string) =>
  stat(path).then(
    (s) => s.isFile(),
    () => false,
  );

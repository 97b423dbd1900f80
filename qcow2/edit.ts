// Edits qcow2 images in place: the damage a repair step's case states (operations/repair/damage.ts)
// is written with these, the test doubles inject their faults with them, and the tests corrupt
// images with them. Reading is qcow2/reader.ts.
import { open, type FileHandle } from 'node:fs/promises';
import {
  HEADER_OFFSET,
  extensionAreaEnd,
  type HeaderExtension,
  type Qcow2Header,
  type RefcountBlockRef,
} from './format.ts';
import { headerOf, readAt, withQcow2, type Qcow2Reader } from './reader.ts';
import { refcountEntriesPerBlock } from './tables.ts';

async function withWritable<T>(path: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await open(path, 'r+');
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

const writeAt = (fh: FileHandle, offset: number, data: Buffer) => fh.write(data, 0, data.length, offset);

/** Writes entry `index` of a refcount block in place. Sub-byte widths are packed LSB-first, as
 * qemu does (getRefcountEntry reads them back); wider ones big-endian. */
export function setRefcountEntry(block: Buffer, index: number, bits: number, value: number): void {
  if (![1, 2, 4, 8, 16, 32, 64].includes(bits)) throw new RangeError(`bad refcount width ${bits}`);
  if (!Number.isSafeInteger(value) || value < 0 || (bits < 53 && value >= 2 ** bits)) {
    throw new RangeError(`refcount ${value} does not fit in ${bits} bits`);
  }
  if (bits >= 8) {
    const bytes = bits / 8;
    if (bits === 64) block.writeBigUInt64BE(BigInt(value), index * 8);
    else block.writeUIntBE(value, index * bytes, bytes);
    return;
  }
  const perByte = 8 / bits;
  const at = Math.floor(index / perByte);
  const byte = block[at];
  if (byte === undefined) throw new RangeError(`refcount index ${index} out of block`);
  const shift = bits * (index % perByte);
  const mask = ((1 << bits) - 1) << shift;
  block[at] = (byte & ~mask) | (value << shift);
}

/** Sets the stored refcount of one host cluster. Returns false, writing nothing, when the
 * refcount block that would hold it is not allocated (this never allocates metadata). */
export async function setRefcount(path: string, cluster: number, value: number): Promise<boolean> {
  const edit = await withQcow2(path, async (r) => {
    const h = r.header;
    const perBlock = refcountEntriesPerBlock(h.clusterSize, h.refcountBits);
    const blockOffset = (await r.readRefcountTable())[Math.floor(cluster / perBlock)];
    if (!blockOffset) return null;
    const block = await r.readRefcountBlock(blockOffset);
    setRefcountEntry(block, cluster % perBlock, h.refcountBits, value);
    return { blockOffset, block };
  });
  if (edit === null) return false;
  await withWritable(path, (fh) => writeAt(fh, edit.blockOffset, edit.block));
  return true;
}

/** Reads one cluster-sized refcount block at a host offset. */
export async function readRefcountBlock(path: string, offset: number, clusterSize: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    return await readAt(fh, offset, clusterSize);
  } finally {
    await fh.close();
  }
}

/** Writes one refcount block back at its host offset. */
export async function writeRefcountBlock(path: string, offset: number, block: Buffer): Promise<void> {
  await withWritable(path, (fh) => writeAt(fh, offset, block));
}

/** Every non-zero reftable entry, in table order. */
export const readRefcountBlocks = (path: string) => withQcow2(path, (r) => r.refcountBlocks());

/** Host cluster index -> refcount, only non-zero entries. */
export const readRefcounts = (path: string) => withQcow2(path, (r) => r.readRefcounts());

/** Header extensions of an image file. */
export const readHeaderExtensions = (path: string) => withQcow2(path, async (r) => r.extensions());

/**
 * Calls `transform` on every refcount block and writes back what it returns (if anything).
 * Returns how many blocks were written.
 */
export async function rewriteRefcountBlocks(
  path: string,
  transform: (block: Buffer, ref: RefcountBlockRef, header: Qcow2Header) => Buffer | undefined,
): Promise<number> {
  const edits = await withQcow2(path, async (r: Qcow2Reader) => {
    const out: { offset: number; block: Buffer }[] = [];
    for (const ref of await r.refcountBlocks()) {
      const block = transform(await r.readRefcountBlock(ref.offset), ref, r.header);
      if (block === undefined) continue;
      if (block.length !== r.header.clusterSize) throw new Error('refcount block must stay one cluster long');
      out.push({ offset: ref.offset, block });
    }
    return out;
  });
  await withWritable(path, async (fh) => {
    for (const e of edits) await writeAt(fh, e.offset, e.block);
  });
  return edits.length;
}

/** Overwrites the header's virtual size. */
export async function writeVirtualSize(path: string, size: number): Promise<void> {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64BE(BigInt(size));
  await withWritable(path, (fh) => writeAt(fh, HEADER_OFFSET.size, buf));
}

/** Overwrites the v3 compatible-features field (offset 80). Throws on v2, which has no such field. */
export async function writeCompatibleFeatures(path: string, value: bigint): Promise<void> {
  await withWritable(path, async (fh) => {
    const h = await headerOf(fh);
    if (h.version < 3) throw new Error('compatible features need a version 3 header');
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64BE(value);
    await writeAt(fh, HEADER_OFFSET.compatibleFeatures, buf);
  });
}

/** Serialises extensions into an extension area: each padded to 8 bytes, then the end marker. */
export function encodeHeaderExtensions(exts: Pick<HeaderExtension, 'type' | 'data'>[]): Buffer {
  const parts = exts.map((e) => {
    const b = Buffer.alloc(8 + Math.ceil(e.data.length / 8) * 8);
    b.writeUInt32BE(e.type, 0);
    b.writeUInt32BE(e.data.length, 4);
    e.data.copy(b, 8);
    return b;
  });
  return Buffer.concat([...parts, Buffer.alloc(8)]);
}

/**
 * Replaces the header extensions with what `transform` returns (e.g. one removed). Returns
 * whether anything changed. The backing file name, if any, is left where it is.
 */
export async function rewriteHeaderExtensions(
  path: string,
  transform: (exts: HeaderExtension[]) => HeaderExtension[],
): Promise<boolean> {
  const edit = await withQcow2(path, async (r) => {
    const before = r.extensions();
    const encoded = encodeHeaderExtensions(transform(before));
    if (encoded.equals(encodeHeaderExtensions(before))) return null;
    const area = extensionAreaEnd(r.header) - r.header.headerLength;
    if (encoded.length > area) throw new Error('header extensions do not fit in the first cluster');
    // the whole area is zeroed, so that no stale bytes of a removed extension follow the end marker
    const buf = Buffer.alloc(area);
    encoded.copy(buf);
    return { at: r.header.headerLength, buf };
  });
  if (edit === null) return false;
  await withWritable(path, (fh) => writeAt(fh, edit.at, edit.buf));
  return true;
}

/** Writes bytes at a host offset of an image file. */
export const writeBytes = (path: string, offset: number, data: Buffer) =>
  withWritable(path, (fh) => writeAt(fh, offset, data)).then(() => undefined);

/**
 * Rebuilds a version 3 header as version 2 in the first cluster and changes nothing else, as instar
 * documents its downgrade (../shared/reference/instar-ops.md): the 72 bytes of the v2 header copied
 * with version 2, every header extension copied after them verbatim, the backing file name moved up
 * with them (backing_file_offset follows). No L1, L2 or refcount is touched: zero-flag L2 entries
 * stay, where qemu's downgrade expands them.
 */
export async function downgradeHeaderOnly(path: string): Promise<void> {
  const h = await withQcow2(path, async (r) => r.header);
  const cluster0 = await withWritable(path, async (fh) => {
    const old = await readAt(fh, 0, h.clusterSize);
    const shift = h.headerLength - 72;
    const out = Buffer.alloc(h.clusterSize);
    old.copy(out, 0, 0, 72);
    out.writeUInt32BE(2, HEADER_OFFSET.version);
    const extensionsEnd = extensionAreaEnd(h);
    old.copy(out, 72, h.headerLength, extensionsEnd);
    if (h.backingFileOffset > 0) {
      old.copy(out, h.backingFileOffset - shift, h.backingFileOffset, h.backingFileOffset + h.backingFileSize);
      out.writeBigUInt64BE(BigInt(h.backingFileOffset - shift), HEADER_OFFSET.backingFileOffset);
    }
    return out;
  });
  await withWritable(path, (fh) => writeAt(fh, 0, cluster0));
}

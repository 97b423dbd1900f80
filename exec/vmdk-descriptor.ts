import { open } from 'node:fs/promises';

/** A vmdk's descriptor, and whether it is embedded in a sparse extent. A monolithicFlat or
 * twoGbMaxExtentSparse vmdk is a text descriptor file itself; a monolithicSparse or
 * streamOptimized one embeds it, and its header ("KDMV") names where it lies and how long it is,
 * in sectors (VMware's Virtual Disk Format 5.0, SparseExtentHeader). null for a file that is
 * neither (or is missing). */
export async function readVmdkDescriptor(file: string): Promise<{ embedded: boolean; text: string } | null> {
  const fd = await open(file, 'r').catch(() => null);
  if (!fd) return null;
  try {
    const header = Buffer.alloc(44);
    await fd.read(header, 0, 44, 0);
    if (header.toString('latin1', 0, 4) !== 'KDMV') {
      const head = Buffer.alloc(64 * 1024);
      const { bytesRead } = await fd.read(head, 0, head.length, 0);
      const text = head.toString('latin1', 0, bytesRead);
      return text.startsWith('# Disk DescriptorFile') ? { embedded: false, text } : null;
    }
    const offset = Number(header.readBigUInt64LE(28)) * 512;
    const length = Math.min(Number(header.readBigUInt64LE(36)) * 512, 1 << 20);
    const text = Buffer.alloc(length);
    await fd.read(text, 0, length, offset);
    return { embedded: true, text: text.toString('latin1').replace(/\0+$/, '') };
  } finally {
    await fd.close();
  }
}

import { stat } from 'node:fs/promises';
import { withImageFile } from './file.ts';
import type { FormatStructure, StructuredFormat } from './rules.ts';
import { readVhdxStructure, vhdxVirtualSize } from './vhdx.ts';
import { readVmdkStructure, vmdkVirtualSize } from './vmdk.ts';
import { readVpcStructure, vpcVirtualSize } from './vpc.ts';

// The structure readers of vpc, vhdx and vmdk images, by format: what the structure oracle judges,
// and each image's virtual size as qemu reads it, without starting qemu.

const READERS = {
  vpc: { structure: readVpcStructure, virtualSize: vpcVirtualSize },
  vhdx: { structure: readVhdxStructure, virtualSize: vhdxVirtualSize },
  vmdk: { structure: readVmdkStructure, virtualSize: vmdkVirtualSize },
} as const satisfies Record<StructuredFormat, unknown>;

/** Reads an image's structures and checks them against its format's rules; never throws. */
export async function readFormatStructure(path: string, format: StructuredFormat): Promise<FormatStructure> {
  const file = await stat(path).catch(() => null);
  if (!file?.isFile()) return { readable: false, format, reason: 'missing', message: `${path} is not a regular file` };
  try {
    return await withImageFile(path, (f) => READERS[format].structure(f));
  } catch (err) {
    return { readable: false, format, reason: 'error', message: (err as Error).message };
  }
}

/** The virtual size qemu gives a vpc, vhdx or vmdk image, read from its structures. */
export const formatVirtualSize = (path: string, format: StructuredFormat): Promise<number> =>
  withImageFile(path, (f) => READERS[format].virtualSize(f));

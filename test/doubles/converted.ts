// How the instar test double resizes a vhdx, vmdk or vpc image, which qemu-img does not resize:
// the image converted to raw, the raw resized by qemu-img, converted back in place with the
// options the image was made with, read back from the image itself. A shrink is refused as
// instar refuses it.
import { open, rm, stat } from 'node:fs/promises';
import { execa } from 'execa';
import { readVmdkDescriptor } from '../../formats/vmdk.ts';
import { adapterTypeOf } from '../../oracles/info.ts';

export const CONVERTED = ['vhdx', 'vmdk', 'vpc'];

/** instar's guest refusals of these formats (src/crates/resize/src/{vhdx,vmdk,vhd}.rs). */
export const SHRINK_REFUSAL = 'resize: guest reported error 7: shrink not yet supported for this format';
export const SHRINK_FLAG_REFUSAL =
  'resize: guest reported error 3: shrinking requires --shrink (would discard data above the new size)';
export const PREALLOCATION_REFUSAL = 'resize: guest reported error 8: preallocation mode not supported by this format';
export const SUBFORMAT_REFUSAL = 'resize: guest reported error 6: subformat does not support resize';
/** instar's host probe reads a vmdk's sparse header (src/vmm/src/main.rs): a text descriptor is none. */
export const VMDK_HEADER_REFUSAL = 'resize: invalid vmdk header';
const GRAIN = 64 * 1024;

interface Request {
  file: string;
  format: string;
  oldSize: number;
  wanted: number;
  shrink: boolean;
  preallocation: string | undefined;
}

/** Resizes as a faithful resizer would; a refusal's words, or null once resized. A vmdk whose
 * descriptor is a text file is refused, as instar documents (its extent files would need resizing
 * in place). With `real`, as instar's source says it does: a vmdk only when it is monolithicSparse
 * (after the shrink and same-size checks), to whole grains. `options` changes the options it converts back with (a
 * fault that loses some). */
export async function resizeConverted(
  r: Request,
  real: boolean,
  options: (own: Record<string, string>) => Record<string, string> = (own) => own,
): Promise<string | null> {
  if (r.format === 'vmdk' && (await readVmdkDescriptor(r.file))?.embedded !== true) return VMDK_HEADER_REFUSAL;
  if (r.preallocation === 'metadata') return PREALLOCATION_REFUSAL;
  if (r.wanted < r.oldSize) return r.shrink ? SHRINK_REFUSAL : SHRINK_FLAG_REFUSAL;
  const own = await optionsOf(r.file, r.format);
  let wanted = r.wanted;
  if (real && r.format === 'vmdk' && wanted !== r.oldSize) {
    if (own.subformat !== 'monolithicSparse') return SUBFORMAT_REFUSAL;
    wanted = Math.ceil(wanted / GRAIN) * GRAIN;
  }
  const scratch = `${r.file}.raw`;
  try {
    await execa('qemu-img', ['convert', '-q', '-f', r.format, '-O', 'raw', r.file, scratch]);
    const resize = ['resize', '-q', '-f', 'raw', ...(r.preallocation ? [`--preallocation=${r.preallocation}`] : [])];
    const resized = await execa('qemu-img', [...resize, scratch, String(wanted)], { reject: false });
    if (resized.exitCode !== 0)
      return String(resized.stderr)
        .replace(/^qemu-img: /, '')
        .trim();
    const back = Object.entries(options(own)).map(([k, v]) => `${k}=${v}`);
    await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', r.format, '-o', back.join(','), scratch, r.file]);
    return null;
  } finally {
    await rm(scratch, { force: true });
  }
}

/** The create options of an image, from the image: what qemu-img info shows and what it does not
 * (a vhdx's log size from its header, a vmdk's adapter type from its descriptor, a vpc's disk
 * type from its footer). A vhdx is taken for fixed when its file holds the whole disk. */
async function optionsOf(file: string, format: string): Promise<Record<string, string>> {
  const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-f', format, file])).stdout) as Record<
    string,
    unknown
  > & { 'format-specific'?: { data?: { 'create-type'?: string } } };
  const length = (await stat(file)).size;
  const bytes = async (at: number, n: number) => {
    const fd = await open(file, 'r');
    try {
      const b = Buffer.alloc(n);
      await fd.read(b, 0, n, at);
      return b;
    } finally {
      await fd.close();
    }
  };
  if (format === 'vhdx') {
    // the two headers at 64 and 128 KiB: the one with the higher sequence number is current
    const [h1, h2] = [await bytes(64 * 1024, 80), await bytes(128 * 1024, 80)];
    const current = h1.readBigUInt64LE(8) >= h2.readBigUInt64LE(8) ? h1 : h2;
    return {
      subformat: length >= Number(info['virtual-size']) ? 'fixed' : 'dynamic',
      block_size: String(info['cluster-size']),
      log_size: String(current.readUInt32LE(68)),
    };
  }
  if (format === 'vmdk') {
    const descriptor = await readVmdkDescriptor(file);
    const adapter = (descriptor && adapterTypeOf(descriptor.text)) ?? 'ide';
    return { subformat: info['format-specific']?.data?.['create-type'] ?? 'monolithicSparse', adapter_type: adapter };
  }
  // a resized vpc holds the size asked for (force_size), not the size of its CHS geometry
  const diskType = (await bytes(length - 512, 512)).readUInt32BE(60);
  return { subformat: diskType === 2 ? 'fixed' : 'dynamic', force_size: 'on' };
}

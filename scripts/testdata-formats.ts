// The format-images/ cases of testdata/: vpc, vhdx and vmdk images as qemu makes them, and copies
// damaged to break one rule of the format readers (formats/) each, the way a resizer that writes
// these formats in place could break it. Recorded by `npm run testdata -- --record`.
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { StructuredFormat } from '../formats/rules.ts';
import {
  VHDX_HEADER,
  VMDK_HEADER,
  VMDK_NEWLINES,
  VMDK_UNCLEAN_SHUTDOWN,
  VPC_DYNAMIC,
  VPC_FOOTER,
  currentVhdxHeader,
  editBytes,
  editVhdxHeader,
  editVhdxRegionTable,
  editVmdkDescriptor,
  editVpcDynamicHeader,
  editVpcFooter,
  setVhdxBatEntry,
  setVmdkDirectoryEntry,
  setVmdkTableEntry,
  setVpcBatEntry,
  vhdxBatEntry,
  vhdxRegions,
  vmdkDirectories,
  vpcLayout,
  writeBytes,
} from '../test/doubles/format-edit.ts';
import type { FormatImagesInput } from '../test/unit/testdata.ts';

interface FormatScene {
  name: string;
  description: string;
  format: StructuredFormat;
  /** `qemu-img create -o` options and size; the image gets data in its first and last blocks. */
  options: string;
  size: string;
  /** Makes the copy break its rule; none for an image as qemu made it. */
  damage?: (image: string, dir: string) => Promise<unknown>;
}

const MiB = 2 ** 20;
const VPC = 'subformat=dynamic';
const VHDX = 'subformat=dynamic,block_size=1048576,log_size=1048576';
const VMDK = 'subformat=monolithicSparse';

export const FORMAT_SCENES: FormatScene[] = [
  // as qemu makes them: no rule broken
  { name: 'vpc-dynamic', description: 'a dynamic vpc as qemu makes it', format: 'vpc', options: VPC, size: '5M' },
  {
    name: 'vpc-fixed',
    description: 'a fixed vpc as qemu makes it',
    format: 'vpc',
    options: 'subformat=fixed',
    size: '1M',
  },
  {
    name: 'vpc-force-size',
    description: 'a dynamic vpc made with force_size (the largest geometry, creator qem2)',
    format: 'vpc',
    options: `${VPC},force_size=on`,
    size: '5M',
  },
  { name: 'vhdx-dynamic', description: 'a dynamic vhdx as qemu makes it', format: 'vhdx', options: VHDX, size: '4M' },
  {
    name: 'vhdx-fixed',
    description: 'a fixed vhdx as qemu makes it',
    format: 'vhdx',
    options: 'subformat=fixed,block_size=1048576,log_size=1048576',
    size: '2M',
  },
  {
    name: 'vmdk-sparse',
    description: 'a monolithicSparse vmdk as qemu makes it',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
  },
  {
    name: 'vmdk-stream',
    description: 'a streamOptimized vmdk as qemu converts it (compressed grains behind markers)',
    format: 'vmdk',
    options: 'subformat=streamOptimized',
    size: '4M',
  },
  {
    name: 'vmdk-flat',
    description: 'a monolithicFlat vmdk: a text descriptor and its flat extent',
    format: 'vmdk',
    options: 'subformat=monolithicFlat',
    size: '1M',
  },
  {
    name: 'vmdk-two-gb',
    description: 'a twoGbMaxExtentSparse vmdk: a text descriptor and one sparse extent',
    format: 'vmdk',
    options: 'subformat=twoGbMaxExtentSparse',
    size: '4M',
  },

  // vpc: each rule broken
  {
    name: 'vpc-footer-cookie',
    description: 'the footer at the end overwritten (qemu reads the copy at offset 0 and sees nothing)',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: async (f) => writeBytes(f, (await vpcLayout(f)).footerAt, Buffer.from('notavhd!')),
  },
  {
    name: 'vpc-footer-checksum',
    description: 'the footer at the end with a stale checksum (its current size changed, not its checksum)',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: async (f) =>
      editBytes(f, (await vpcLayout(f)).footerAt, 512, (b) =>
        b.writeUInt32BE(b.readUInt32BE(VPC_FOOTER.checksum) + 1, VPC_FOOTER.checksum),
      ),
  },
  {
    name: 'vpc-footer-fields',
    description: 'both footers say disk type 5, which the specification does not define',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: (f) => editVpcFooter(f, (b) => b.writeUInt32BE(5, VPC_FOOTER.diskType)),
  },
  {
    name: 'vpc-geometry',
    description: 'the current size grown in both footers, the geometry left as it was (Virtual PC sizes by geometry)',
    format: 'vpc',
    options: `${VPC},force_size=on`,
    size: '5M',
    damage: (f) =>
      editVpcFooter(f, (b) => {
        b.writeBigUInt64BE(BigInt(6 * MiB), VPC_FOOTER.currentSize);
        b.writeUInt16BE(100, VPC_FOOTER.geometry);
        b.writeUInt8(4, VPC_FOOTER.geometry + 2);
        b.writeUInt8(17, VPC_FOOTER.geometry + 3);
      }),
  },
  {
    name: 'vpc-file-length',
    description: 'a fixed vpc whose footer says a disk one sector longer than its file holds',
    format: 'vpc',
    options: 'subformat=fixed,force_size=on',
    size: '1M',
    damage: (f) => editVpcFooter(f, (b) => b.writeBigUInt64BE(BigInt(MiB + 512), VPC_FOOTER.currentSize)),
  },
  {
    name: 'vpc-footer-copy',
    description: 'the footer copy at offset 0 with another timestamp than the footer at the end (each checksum right)',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: async (f) =>
      editBytes(f, 0, 512, (b) => {
        b.writeUInt32BE(b.readUInt32BE(VPC_FOOTER.timestamp) + 1, VPC_FOOTER.timestamp);
        b.writeUInt32BE(b.readUInt32BE(VPC_FOOTER.checksum) - 1, VPC_FOOTER.checksum);
      }),
  },
  {
    name: 'vpc-dynamic-header-cookie',
    description: "the dynamic header's cookie overwritten",
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: (f) => editVpcDynamicHeader(f, (b) => b.write('cxspars!', 0, 'latin1')),
  },
  {
    name: 'vpc-dynamic-header-checksum',
    description: "the dynamic header's BAT entries raised, its checksum not (qemu never checks it)",
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: (f) =>
      editVpcDynamicHeader(
        f,
        (b) => b.writeUInt32BE(b.readUInt32BE(VPC_DYNAMIC.maxTableEntries) + 1, VPC_DYNAMIC.maxTableEntries),
        true,
      ),
  },
  {
    name: 'vpc-dynamic-header-fields',
    description: 'a block size of 3 MiB, not a power of two',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: (f) => editVpcDynamicHeader(f, (b) => b.writeUInt32BE(3 * MiB, VPC_DYNAMIC.blockSize)),
  },
  {
    name: 'vpc-bat-inside-file',
    description: 'the BAT moved past the end of the file',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: (f) => editVpcDynamicHeader(f, (b) => b.writeBigUInt64BE(BigInt(64 * MiB), VPC_DYNAMIC.tableOffset)),
  },
  {
    name: 'vpc-bat-covers-disk',
    description: 'one BAT entry for a disk of three blocks',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: (f) => editVpcDynamicHeader(f, (b) => b.writeUInt32BE(1, VPC_DYNAMIC.maxTableEntries)),
  },
  {
    name: 'vpc-block-inside-file',
    description: 'a BAT entry pointing past the footer',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: (f) => setVpcBatEntry(f, 1, 0x100000),
  },
  {
    name: 'vpc-regions-overlap',
    description: 'two BAT entries pointing to the same block',
    format: 'vpc',
    options: VPC,
    size: '5M',
    damage: async (f) => {
      const { header } = await vpcLayout(f);
      const bat = (await readFile(f)).subarray(header!.tableOffset, header!.tableOffset + 12);
      await setVpcBatEntry(f, 1, bat.readUInt32BE(0));
    },
  },

  // vhdx
  {
    name: 'vhdx-file-identifier',
    description: 'the file type identifier overwritten',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: (f) => writeBytes(f, 0, Buffer.from('vhdxfil!')),
  },
  {
    name: 'vhdx-header-checksum',
    description: 'the older header rewritten with a new sequence number and its old checksum',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => {
      const older = (await currentVhdxHeader(f)) === 0 ? 1 : 0;
      await editVhdxHeader(
        f,
        older,
        (b) => b.writeBigUInt64LE(b.readBigUInt64LE(VHDX_HEADER.sequence) + 5n, VHDX_HEADER.sequence),
        true,
      );
    },
  },
  {
    name: 'vhdx-header-sequence',
    description: 'both headers with one sequence number',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => {
      const current = await currentVhdxHeader(f);
      const seq = (await readFile(f)).readBigUInt64LE((current === 0 ? 64 : 128) * 1024 + VHDX_HEADER.sequence);
      await editVhdxHeader(f, current === 0 ? 1 : 0, (b) => b.writeBigUInt64LE(seq, VHDX_HEADER.sequence));
    },
  },
  {
    name: 'vhdx-header-fields',
    description: 'the current header says version 2',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => editVhdxHeader(f, await currentVhdxHeader(f), (b) => b.writeUInt16LE(2, VHDX_HEADER.version)),
  },
  {
    name: 'vhdx-log-empty',
    description: 'the current header names a log (its GUID set): the log was left open',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) =>
      editVhdxHeader(f, await currentVhdxHeader(f), (b) => b.fill(0x5a, VHDX_HEADER.logGuid, VHDX_HEADER.logGuid + 16)),
  },
  {
    name: 'vhdx-region-table-checksum',
    description: 'the second region table with a stale checksum (qemu reads the first only)',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: (f) => editVhdxRegionTable(f, 1, (b) => b.writeUInt32LE(b.readUInt32LE(4) ^ 1, 4), true),
  },
  {
    name: 'vhdx-region-tables-equal',
    description: "the second region table's BAT region one MiB longer, its checksum right",
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: (f) => editVhdxRegionTable(f, 1, (b) => b.writeUInt32LE(b.readUInt32LE(16 + 24) + MiB, 16 + 24)),
  },
  {
    name: 'vhdx-regions',
    description: 'the BAT region at an offset off the MiB grid, in both region tables',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => {
      for (const slot of [0, 1] as const)
        await editVhdxRegionTable(f, slot, (b) => b.writeBigUInt64LE(b.readBigUInt64LE(16 + 16) + 4096n, 16 + 16));
    },
  },
  {
    name: 'vhdx-metadata-table',
    description: "the metadata table's signature overwritten",
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => writeBytes(f, (await vhdxRegions(f)).metadata, Buffer.from('metadat!')),
  },
  {
    name: 'vhdx-metadata-items',
    description: 'the page 83 item gone from the metadata table',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => {
      const page83 = (await vhdxRegions(f)).items.find((i) => i.guid === 'ab12cabee6b2234593efc309e000c746')!;
      await writeBytes(f, page83.entry, Buffer.alloc(16));
    },
  },
  {
    name: 'vhdx-file-parameters',
    description: 'a block size of 3 MiB',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => {
      const params = (await vhdxRegions(f)).items.find((i) => i.guid === '3767a1ca36fa434db3b633f0aa44e76b')!;
      const b = Buffer.alloc(4);
      b.writeUInt32LE(3 * MiB);
      await writeBytes(f, params.offset, b);
    },
  },
  {
    name: 'vhdx-virtual-size',
    description: 'a virtual size off the sector grid',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => {
      const size = (await vhdxRegions(f)).items.find((i) => i.guid === '2442a52f1bcd7648b2115dbed83bf4b8')!;
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt(4 * MiB - 100));
      await writeBytes(f, size.offset, b);
    },
  },
  {
    name: 'vhdx-bat-covers-disk',
    description: 'the virtual size grown to 1 TiB, the BAT region left at one MiB',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => {
      const size = (await vhdxRegions(f)).items.find((i) => i.guid === '2442a52f1bcd7648b2115dbed83bf4b8')!;
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(2n ** 40n);
      await writeBytes(f, size.offset, b);
    },
  },
  {
    name: 'vhdx-bat-entry-states',
    description: 'a payload block in state 4, which the specification does not define',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: (f) => setVhdxBatEntry(f, 1, 4, 0),
  },
  {
    name: 'vhdx-block-inside-file',
    description: 'a fully present block at an offset past the end of the file',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: (f) => setVhdxBatEntry(f, 1, 6, 1000),
  },
  {
    name: 'vhdx-regions-overlap',
    description: 'a second block at the first block offset',
    format: 'vhdx',
    options: VHDX,
    size: '4M',
    damage: async (f) => setVhdxBatEntry(f, 3, 6, (await vhdxBatEntry(f, 0)).offsetMiB),
  },

  // vmdk
  {
    name: 'vmdk-descriptor',
    description: 'the descriptor without its createType line',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: (f) => editVmdkDescriptor(f, /createType="monolithicSparse"/, '#reateType="monolithicSparse"'),
  },
  {
    name: 'vmdk-extent-files',
    description: 'a twoGbMaxExtentSparse vmdk whose extent file is gone',
    format: 'vmdk',
    options: 'subformat=twoGbMaxExtentSparse',
    size: '4M',
    damage: (f) => rm(f.replace(/\.vmdk$/, '-s001.vmdk')),
  },
  {
    name: 'vmdk-header-magic',
    description: 'the extent header says version 9',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: (f) => editBytes(f, 0, 512, (b) => b.writeUInt32LE(9, VMDK_HEADER.version)),
  },
  {
    name: 'vmdk-newline-detection',
    description: 'the end-of-line test characters mangled, as a text-mode FTP transfer leaves them',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: (f) => writeBytes(f, VMDK_NEWLINES, Buffer.from('\n \n\n', 'latin1')),
  },
  {
    name: 'vmdk-header-fields',
    description: '256 entries per grain table, where the specification fixes 512',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: (f) => editBytes(f, 0, 512, (b) => b.writeUInt32LE(256, VMDK_HEADER.numGTEsPerGT)),
  },
  {
    name: 'vmdk-descriptor-capacity',
    description: "the header's capacity grown, the descriptor's extent line not",
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: (f) =>
      editBytes(f, 0, 512, (b) =>
        b.writeBigUInt64LE(b.readBigUInt64LE(VMDK_HEADER.capacity) + 128n, VMDK_HEADER.capacity),
      ),
  },
  {
    name: 'vmdk-unclean-shutdown',
    description: 'uncleanShutdown left set',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: (f) => writeBytes(f, VMDK_UNCLEAN_SHUTDOWN, Buffer.from([1])),
  },
  {
    name: 'vmdk-gd-inside-file',
    description: 'the grain directory offset past the end of the file',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: (f) => editBytes(f, 0, 512, (b) => b.writeBigUInt64LE(1n << 20n, VMDK_HEADER.gdOffset)),
  },
  {
    name: 'vmdk-gt-inside-file',
    description: 'a grain directory entry past the end of the file',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: async (f) => {
      const { gd, rgd } = await vmdkDirectories(f);
      await setVmdkDirectoryEntry(f, gd.sector, 0, 1 << 20);
      await setVmdkDirectoryEntry(f, rgd.sector, 0, 1 << 20);
    },
  },
  {
    name: 'vmdk-grain-inside-file',
    description: 'a grain table entry past the end of the file, in both tables',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: async (f) => {
      const { gd, rgd } = await vmdkDirectories(f);
      await setVmdkTableEntry(f, gd.entries[0]!, 3, 1 << 20);
      await setVmdkTableEntry(f, rgd.entries[0]!, 3, 1 << 20);
    },
  },
  {
    name: 'vmdk-grain-marker',
    description: "a compressed grain's marker naming another guest sector",
    format: 'vmdk',
    options: 'subformat=streamOptimized',
    size: '4M',
    damage: async (f) => {
      const { gd } = await vmdkDirectories(f);
      const sector = (await readFile(f)).readUInt32LE(gd.entries[0]! * 512);
      await editBytes(f, sector * 512, 8, (b) => b.writeBigUInt64LE(b.readBigUInt64LE(0) + 128n));
    },
  },
  {
    name: 'vmdk-redundant-gd',
    description: 'a grain mapped in the primary grain table, not in the redundant one',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: async (f) => {
      const { rgd } = await vmdkDirectories(f);
      await setVmdkTableEntry(f, rgd.entries[0]!, 0, 0);
    },
  },
  {
    name: 'vmdk-regions-overlap',
    description: 'a grain table entry pointing into the grain directory, in both tables',
    format: 'vmdk',
    options: VMDK,
    size: '4M',
    damage: async (f) => {
      const { gd, rgd } = await vmdkDirectories(f);
      await setVmdkTableEntry(f, gd.entries[0]!, 5, gd.sector);
      await setVmdkTableEntry(f, rgd.entries[0]!, 5, gd.sector);
    },
  },
];

/** Files of a vmdk with a text descriptor besides the image: its extents, named after it. */
const extentNames = (image: string, options: string) =>
  options.includes('monolithicFlat')
    ? [image.replace(/\.vmdk$/, '-flat.vmdk')]
    : options.includes('twoGbMaxExtentSparse')
      ? [image.replace(/\.vmdk$/, '-s001.vmdk')]
      : [];

/** Builds and damages each scene in `dir`; testdata file -> content (images raw, gzipped on writing). */
export async function recordFormatScenes(dir: string, files: Map<string, Buffer | string>): Promise<void> {
  const run = (args: string[], program = 'qemu-img') => execa(program, args, { cwd: dir });
  for (const s of FORMAT_SCENES) {
    const image = `${s.name}.${s.format}`;
    // data in the first and last MiB, through a raw image: qemu-io cannot write a streamOptimized vmdk
    const raw = `${s.name}.raw`;
    await run(['create', '-q', '-f', 'raw', raw, s.size]);
    const size = (await readFile(join(dir, raw))).length;
    await run(['-f', 'raw', '-c', 'write -q -P 7 0 4k', '-c', `write -q -P 9 ${size - 4096} 4k`, raw], 'qemu-io');
    await run(['convert', '-q', '-f', 'raw', '-O', s.format, '-o', s.options, raw, image]);
    await rm(join(dir, raw));
    await s.damage?.(join(dir, image), dir);
    const names = [image, ...extentNames(image, s.options)];
    const present: Record<string, string> = {};
    for (const name of names) {
      const data = await readFile(join(dir, name)).catch(() => null);
      if (data === null) continue;
      present[name] = `${name}.gz`;
      files.set(`format-images/${name}.gz`, data);
    }
    const input: FormatImagesInput = { format: s.format, image, files: present };
    files.set(
      `format-images/${s.name}.json`,
      `${JSON.stringify({ description: s.description, input, expected: null }, null, 2)}\n`,
    );
  }
}

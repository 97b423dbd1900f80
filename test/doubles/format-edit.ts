// Edits vpc, vhdx and vmdk images in place, the way a faulty resizer would: the fault doubles
// damage their results with these, and scripts/testdata.ts breaks each rule of the format readers
// (formats/) with them. The harness itself only reads images.
import { open } from 'node:fs/promises';
import { crc32cWithout } from '../../formats/crc32c.ts';
import { cidOf, parseSparseHeader, readVmdkDescriptor } from '../../formats/vmdk.ts';
import { parseDynamicHeader, parseFooter, vhdChecksum } from '../../formats/vpc.ts';

/** `length` bytes of a file at `offset`. */
export async function readBytes(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b;
  } finally {
    await fh.close();
  }
}

/** Writes `data` into a file at `offset`, in place. */
export async function writeBytes(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** Reads the structure at `offset`, lets `edit` change it, writes it back. */
export async function editBytes(path: string, offset: number, length: number, edit: (b: Buffer) => void) {
  const b = await readBytes(path, offset, length);
  edit(b);
  await writeBytes(path, offset, b);
}

const fileLength = async (path: string) => {
  const fh = await open(path, 'r');
  try {
    return (await fh.stat()).size;
  } finally {
    await fh.close();
  }
};

// ---- vpc (VHD): big-endian, a footer at the end and (dynamic) its copy at 0 -----------------------

export const VPC_FOOTER = { currentSize: 48, geometry: 56, diskType: 60, checksum: 64, timestamp: 24 } as const;
export const VPC_DYNAMIC = { tableOffset: 16, maxTableEntries: 28, blockSize: 32, checksum: 36 } as const;

/** Where a vpc's structures are: the trailing footer, the copy at 0 and the dynamic header (null
 * for a fixed disk), and the BAT. */
export async function vpcLayout(path: string) {
  const length = await fileLength(path);
  const footerAt = length - 512;
  const footer = parseFooter(await readBytes(path, footerAt, 512));
  const dynamic = footer.diskType !== 2;
  const headerAt = dynamic ? Number(footer.dataOffset) : null;
  const header = headerAt === null ? null : parseDynamicHeader(await readBytes(path, headerAt, 1024));
  return { footerAt, footer, headerAt, header };
}

/** Edits the trailing footer (and, with `copy`, the copy at offset 0 the same way), then writes
 * its checksum as the bytes give it. */
export async function editVpcFooter(path: string, edit: (b: Buffer) => void, copy = true) {
  const { footerAt, headerAt } = await vpcLayout(path);
  const places = copy && headerAt !== null ? [footerAt, 0] : [footerAt];
  for (const at of places)
    await editBytes(path, at, 512, (b) => {
      edit(b);
      b.writeUInt32BE(vhdChecksum(b, VPC_FOOTER.checksum), VPC_FOOTER.checksum);
    });
}

/** Edits a dynamic vpc's dynamic header; its checksum is refreshed unless `stale`. */
export async function editVpcDynamicHeader(path: string, edit: (b: Buffer) => void, stale = false) {
  const { headerAt } = await vpcLayout(path);
  if (headerAt === null) throw new Error(`${path} is a fixed vpc: it has no dynamic header`);
  await editBytes(path, headerAt, 1024, (b) => {
    edit(b);
    if (!stale) b.writeUInt32BE(vhdChecksum(b, VPC_DYNAMIC.checksum), VPC_DYNAMIC.checksum);
  });
}

/** Sets entry `index` of a dynamic vpc's BAT (a sector number; 0xffffffff is unused). */
export async function setVpcBatEntry(path: string, index: number, sector: number) {
  const { header } = await vpcLayout(path);
  const b = Buffer.alloc(4);
  b.writeUInt32BE(sector >>> 0);
  await writeBytes(path, header!.tableOffset + index * 4, b);
}

// ---- vhdx: little-endian; headers at 64 and 128 KiB, region tables at 192 and 256 KiB -------------

export const VHDX_HEADERS = [64 * 1024, 128 * 1024] as const;
export const VHDX_REGION_TABLES = [192 * 1024, 256 * 1024] as const;
export const VHDX_HEADER = { checksum: 4, sequence: 8, dataWriteGuid: 32, logGuid: 48, version: 66 } as const;

/** Edits the header in slot 0 or 1; its CRC-32C is refreshed unless `stale`. */
export async function editVhdxHeader(path: string, slot: 0 | 1, edit: (b: Buffer) => void, stale = false) {
  await editBytes(path, VHDX_HEADERS[slot], 4096, (b) => {
    edit(b);
    if (!stale) b.writeUInt32LE(crc32cWithout(b, 4), 4);
  });
}

/** The slot of the current header: the one with the higher sequence number. */
export async function currentVhdxHeader(path: string): Promise<0 | 1> {
  const [a, b] = await Promise.all(VHDX_HEADERS.map((at) => readBytes(path, at, 16)));
  return a!.readBigUInt64LE(8) >= b!.readBigUInt64LE(8) ? 0 : 1;
}

/** Edits the region table in slot 0 or 1; its CRC-32C is refreshed unless `stale`. */
export async function editVhdxRegionTable(path: string, slot: 0 | 1, edit: (b: Buffer) => void, stale = false) {
  await editBytes(path, VHDX_REGION_TABLES[slot], 64 * 1024, (b) => {
    edit(b);
    if (!stale) b.writeUInt32LE(crc32cWithout(b, 4), 4);
  });
}

/** The file offsets of the BAT and metadata regions, and of each metadata item by its position in
 * the metadata table (file parameters first, then the virtual disk size, as qemu writes them). */
export async function vhdxRegions(path: string) {
  const table = await readBytes(path, VHDX_REGION_TABLES[0], 64 * 1024);
  const entries = Array.from({ length: table.readUInt32LE(8) }, (_, i) => ({
    guid: table.toString('hex', 16 + i * 32, 32 + i * 32),
    offset: Number(table.readBigUInt64LE(32 + i * 32)),
  }));
  const bat = entries.find((e) => e.guid === '6677c22d23f600429d64115e9bfd4a08')!.offset;
  const metadata = entries.find((e) => e.guid === '06a27c8b90479a4bb8fe575f050f886e')!.offset;
  const meta = await readBytes(path, metadata, 64 * 1024);
  const items = Array.from({ length: meta.readUInt16LE(10) }, (_, i) => ({
    entry: metadata + 32 + i * 32,
    guid: meta.toString('hex', 32 + i * 32, 48 + i * 32),
    offset: metadata + meta.readUInt32LE(48 + i * 32),
  }));
  return { bat, metadata, items };
}

/** Sets BAT entry `index` of a vhdx: a state (bits 0-2) and a file offset in MiB. */
export async function setVhdxBatEntry(path: string, index: number, state: number, offsetMiB: number) {
  const { bat } = await vhdxRegions(path);
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE((BigInt(offsetMiB) << 20n) | BigInt(state));
  await writeBytes(path, bat + index * 8, b);
}

export async function vhdxBatEntry(path: string, index: number): Promise<{ state: number; offsetMiB: number }> {
  const { bat } = await vhdxRegions(path);
  const e = (await readBytes(path, bat + index * 8, 8)).readBigUInt64LE(0);
  return { state: Number(e & 7n), offsetMiB: Number(e >> 20n) };
}

// ---- vmdk: little-endian sparse extent header, grain directories and tables, in sectors ----------

export const VMDK_HEADER = { version: 4, capacity: 12, numGTEsPerGT: 44, rgdOffset: 48, gdOffset: 56 } as const;
export const VMDK_UNCLEAN_SHUTDOWN = 72;
export const VMDK_NEWLINES = 73;

/** A sparse extent's header and both grain directories: their entries (grain table sectors). */
export async function vmdkDirectories(path: string) {
  const h = parseSparseHeader(await readBytes(path, 0, 512));
  const entries = Math.ceil(h.capacity / (h.grainSize * h.numGTEsPerGT));
  const read = async (sector: number) => {
    const b = await readBytes(path, sector * 512, entries * 4);
    return Array.from({ length: entries }, (_, i) => b.readUInt32LE(i * 4));
  };
  return {
    header: h,
    gd: { sector: Number(h.gdOffset), entries: await read(Number(h.gdOffset)) },
    rgd: { sector: h.rgdOffset, entries: h.rgdOffset ? await read(h.rgdOffset) : [] },
  };
}

/** Sets entry `index` of the grain directory at `sector`. */
export async function setVmdkDirectoryEntry(path: string, sector: number, index: number, value: number) {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  await writeBytes(path, sector * 512 + index * 4, b);
}

/** Sets entry `index` of the grain table at `sector`. */
export const setVmdkTableEntry = setVmdkDirectoryEntry;

/** Replaces text in a vmdk's embedded descriptor with text of the same length. */
export async function editVmdkDescriptor(path: string, from: string | RegExp, to: string) {
  const h = parseSparseHeader(await readBytes(path, 0, 512));
  await editBytes(path, h.descriptorOffset * 512, h.descriptorSize * 512, (b) => {
    const text = b.toString('latin1');
    const changed = text.replace(from, to);
    if (changed.length !== text.length) throw new Error(`descriptor edit changes its length: ${String(from)} -> ${to}`);
    b.write(changed, 'latin1');
  });
}

/** A vmdk's CID (its descriptor's), or null where it has none. */
export async function vmdkCid(path: string): Promise<string | null> {
  const d = await readVmdkDescriptor(path);
  return d === null ? null : cidOf(d.text, 'CID');
}

/** Rewrites a monolithic sparse vmdk's parent in its embedded descriptor, as instar's rebase -u
 * does: parentFileNameHint named `parent` (its line removed for none) and parentCID set to
 * `parentCid` (ffffffff for none). False where the descriptor's sectors have no room. */
export async function setVmdkParent(path: string, parent: string | null, parentCid: string | null): Promise<boolean> {
  const h = parseSparseHeader(await readBytes(path, 0, 512));
  const room = h.descriptorSize * 512;
  const b = await readBytes(path, h.descriptorOffset * 512, room);
  const text = b.toString('latin1').replace(/\0+$/, '');
  const withCid = text.replace(/^parentCID=.*$/m, `parentCID=${parentCid ?? 'ffffffff'}`);
  const hint = /^parentFileNameHint=.*\n/m;
  const line = parent === null ? '' : `parentFileNameHint="${parent}"\n`;
  const changed = hint.test(withCid)
    ? withCid.replace(hint, line)
    : withCid.replace(/^(createType=.*\n)/m, `$1${line}`);
  if (Buffer.byteLength(changed, 'latin1') > room) return false;
  const out = Buffer.alloc(room);
  out.write(changed, 'latin1');
  await writeBytes(path, h.descriptorOffset * 512, out);
  return true;
}

/** Every grain table entry of a sparse vmdk that maps a grain: where it lies in the file (bytes)
 * and the grain's sector. */
export async function vmdkMappedGrains(path: string): Promise<{ at: number; sector: number }[]> {
  const { header, gd } = await vmdkDirectories(path);
  const out: { at: number; sector: number }[] = [];
  for (const table of gd.entries) {
    if (table === 0) continue;
    const b = await readBytes(path, table * 512, header.numGTEsPerGT * 4);
    for (let i = 0; i < header.numGTEsPerGT; i++) {
      const sector = b.readUInt32LE(i * 4);
      // 1: a zeroed grain (qemu's zeroed_grain), no data
      if (sector > 1) out.push({ at: table * 512 + i * 4, sector });
    }
  }
  return out;
}

import { dirname, join } from 'node:path';
import { ImageFile, isFile, withImageFile } from './file.ts';
import { RuleBook, describeRegion, overlaps, MAX_REGIONS, type FormatStructure, type Region } from './rules.ts';

// A VMDK image read by the rules of VMware's Virtual Disk Format 1.1 (and 5.0, which adds the
// stream-optimized layout): the descriptor (embedded in a sparse extent, or a text file naming its
// extents), and for each hosted sparse extent its header, grain directory and grain tables, the
// redundant copies of both, and the grains they map. qemu reads the primary grain directory only and
// sizes a sparse extent by its header; VMware's tools read the descriptor and fall back on the
// redundant directory. All fields are little-endian; offsets and sizes are in 512-byte sectors.

const SECTOR = 512;
const MAGIC = 'KDMV';
const FLAG_NEWLINE_TEST = 1;
const FLAG_REDUNDANT = 2;
const FLAG_COMPRESSED = 1 << 16;
/** A grain directory written at the end of a stream-optimized file (its header says so). */
const GD_AT_END = 0xffffffffffffffffn;

export interface SparseHeader {
  magic: string;
  version: number;
  flags: number;
  capacity: number;
  grainSize: number;
  descriptorOffset: number;
  descriptorSize: number;
  numGTEsPerGT: number;
  rgdOffset: number;
  gdOffset: bigint;
  overHead: number;
  uncleanShutdown: number;
  newlineChars: string;
}

export function parseSparseHeader(b: Buffer): SparseHeader {
  return {
    magic: b.toString('latin1', 0, 4),
    version: b.readUInt32LE(4),
    flags: b.readUInt32LE(8),
    capacity: Number(b.readBigUInt64LE(12)),
    grainSize: Number(b.readBigUInt64LE(20)),
    descriptorOffset: Number(b.readBigUInt64LE(28)),
    descriptorSize: Number(b.readBigUInt64LE(36)),
    numGTEsPerGT: b.readUInt32LE(44),
    rgdOffset: Number(b.readBigUInt64LE(48)),
    gdOffset: b.readBigUInt64LE(56),
    overHead: Number(b.readBigUInt64LE(64)),
    uncleanShutdown: b.readUInt8(72),
    newlineChars: b.toString('latin1', 73, 77),
  };
}

/** One extent line of a descriptor: `RW 81920 SPARSE "name.vmdk"`. */
export interface ExtentLine {
  access: string;
  sectors: number;
  type: string;
  file: string | null;
}

export function parseExtentLines(descriptor: string): ExtentLine[] {
  return [...descriptor.matchAll(/^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)")?/gm)].map((m) => ({
    access: m[1]!,
    sectors: Number(m[2]),
    type: m[3]!,
    file: m[4] ?? null,
  }));
}

/** A descriptor's parent (`parentFileNameHint`: the backing file's name as the image stores it),
 * or null; and its CID and parentCID fields (qemu reads through the parent only while the
 * child's parentCID is the parent's CID). */
export const parentNameOf = (descriptor: string) =>
  /^parentFileNameHint\s*=\s*"([^"]*)"/m.exec(descriptor)?.[1] ?? null;
export const cidOf = (descriptor: string, field: 'CID' | 'parentCID') =>
  new RegExp(`^${field}\\s*=\\s*([0-9a-fA-F]+)`, 'm').exec(descriptor)?.[1] ?? null;

/** The backing file name a vmdk stores (its descriptor's parentFileNameHint), or null: none, or
 * not a vmdk. */
export const vmdkBackingName = async (file: string) => {
  const d = await readVmdkDescriptor(file);
  return d === null ? null : parentNameOf(d.text);
};

export const createTypeOf = (descriptor: string) => /^createType\s*=\s*"([^"]*)"/m.exec(descriptor)?.[1] ?? null;

/** A vmdk's descriptor, and whether it is embedded in a sparse extent (monolithicSparse,
 * streamOptimized: the header names where it lies) or the file itself (monolithicFlat,
 * twoGbMaxExtentSparse). null for a file that is neither (or is missing). */
export async function readVmdkDescriptor(file: string): Promise<{ embedded: boolean; text: string } | null> {
  if (!(await isFile(file))) return null;
  return withImageFile(file, descriptorOf);
}

async function descriptorOf(f: ImageFile): Promise<{ embedded: boolean; text: string } | null> {
  const header = parseSparseHeader(await f.read(0, SECTOR));
  if (header.magic !== MAGIC) {
    const text = (await f.read(0, Math.min(f.length, 64 * 1024))).toString('latin1').replace(/\0+$/, '');
    return text.startsWith('# Disk DescriptorFile') ? { embedded: false, text } : null;
  }
  const length = Math.min(header.descriptorSize * SECTOR, 1 << 20);
  const text = (await f.read(header.descriptorOffset * SECTOR, length)).toString('latin1').replace(/\0+$/, '');
  return { embedded: true, text };
}

/** The virtual size qemu gives a vmdk: each sparse extent by its header's capacity, any other by
 * its descriptor line. */
export async function vmdkVirtualSize(f: ImageFile): Promise<number> {
  const header = parseSparseHeader(await f.read(0, SECTOR));
  if (header.magic === MAGIC) return header.capacity * SECTOR;
  const descriptor = await descriptorOf(f);
  if (!descriptor) throw new Error(`${f.path}: neither a sparse extent nor a descriptor`);
  let sectors = 0;
  for (const extent of parseExtentLines(descriptor.text)) {
    const path = extent.file === null ? null : join(dirname(f.path), extent.file);
    const sparse = extent.type === 'SPARSE' && path !== null;
    sectors += sparse
      ? await withImageFile(path, async (e) => parseSparseHeader(await e.read(0, SECTOR)).capacity)
      : extent.sectors;
  }
  return sectors * SECTOR;
}

export const VMDK_RULES = [
  'descriptor',
  'extent-files',
  'header-magic',
  'newline-detection',
  'header-fields',
  'descriptor-capacity',
  'unclean-shutdown',
  'gd-inside-file',
  'gt-inside-file',
  'grain-inside-file',
  'grain-marker',
  'redundant-gd',
  'regions-overlap',
] as const;

export async function readVmdkStructure(f: ImageFile): Promise<FormatStructure> {
  const rules = new RuleBook();
  const regions: Region[] = [];
  const descriptor = await descriptorOf(f);
  const extents = descriptor ? parseExtentLines(descriptor.text) : [];
  const createType = descriptor ? createTypeOf(descriptor.text) : null;
  const result = (virtualSize: number): FormatStructure => ({
    readable: true,
    format: 'vmdk',
    virtualSize,
    fileLength: f.length,
    checked: rules.checked,
    broken: rules.broken,
    regions: regions.slice(0, MAX_REGIONS),
  });
  if (
    !rules.check(
      'descriptor',
      descriptor !== null && createType !== null && extents.length > 0 && extents.every((e) => e.file !== null),
      () =>
        descriptor === null
          ? 'neither a sparse extent header nor a descriptor file'
          : `the descriptor has ${createType === null ? 'no createType' : `createType ${createType}`} and ` +
            `${extents.length} extent lines`,
    )
  )
    return result(0);
  let sectors = 0;
  if (descriptor!.embedded) {
    // monolithicSparse or streamOptimized: one sparse extent, this file
    const extent = extents[0]!;
    rules.check(
      'extent-files',
      extents.length === 1 && extent.type === 'SPARSE',
      () => `an embedded descriptor names ${extents.length} extents (${extents.map((e) => e.type).join(', ')})`,
    );
    const capacity = await checkSparseExtent(f, extent, rules, regions, '');
    return result((capacity ?? extent.sectors) * SECTOR);
  }
  for (const [i, extent] of extents.entries()) {
    const path = join(dirname(f.path), extent.file!);
    if (!rules.check('extent-files', await isFile(path), () => `extent ${extent.file} is missing`)) continue;
    if (extent.type === 'SPARSE') {
      const capacity = await withImageFile(path, (e) => checkSparseExtent(e, extent, rules, regions, `extent ${i} `));
      sectors += capacity ?? extent.sectors;
    } else {
      sectors += extent.sectors;
      // a flat extent (monolithicFlat) is the disk's bytes from its offset: at least that long
      const length = await withImageFile(path, async (e) => e.length);
      rules.check(
        'descriptor-capacity',
        extent.type !== 'FLAT' || length >= extent.sectors * SECTOR,
        () => `flat extent ${extent.file} is ${length} bytes, its descriptor line says ${extent.sectors} sectors`,
      );
    }
  }
  return result(sectors * SECTOR);
}

/** One hosted sparse extent's rules; its capacity in sectors, or null when its header is unusable. */
async function checkSparseExtent(
  f: ImageFile,
  line: ExtentLine,
  rules: RuleBook,
  regions: Region[],
  where: string,
): Promise<number | null> {
  const h = parseSparseHeader(await f.read(0, SECTOR));
  if (
    !rules.check(
      'header-magic',
      h.magic === MAGIC && h.version >= 1 && h.version <= 3,
      () => `${where}header: magic ${JSON.stringify(h.magic)}, version ${h.version}`,
    )
  )
    return null;
  const at = (sector: number) => sector * SECTOR;
  regions.push({ name: `${where}header`, offset: 0, length: SECTOR });
  // bit 0: the end-of-line characters are there to catch a file moved by FTP in text mode
  rules.check(
    'newline-detection',
    (h.flags & FLAG_NEWLINE_TEST) === 0 || h.newlineChars === '\n \r\n',
    () => `${where}header: end-of-line test characters ${JSON.stringify(h.newlineChars)}`,
  );
  const grainOk = h.grainSize > 8 && (h.grainSize & (h.grainSize - 1)) === 0;
  if (
    !rules.check(
      'header-fields',
      grainOk && h.numGTEsPerGT === 512 && h.capacity > 0,
      () =>
        `${where}header: grain size ${h.grainSize} sectors, ${h.numGTEsPerGT} entries per grain table, ` +
        `capacity ${h.capacity}`,
    )
  )
    return null;
  rules.check(
    'descriptor-capacity',
    line.sectors === h.capacity,
    () => `${where}the descriptor's extent line says ${line.sectors} sectors, the extent's header ${h.capacity}`,
  );
  rules.check(
    'unclean-shutdown',
    h.uncleanShutdown === 0,
    () => `${where}header: uncleanShutdown is ${h.uncleanShutdown}`,
  );
  if (h.descriptorOffset > 0 && h.descriptorSize > 0)
    regions.push({ name: `${where}descriptor`, offset: at(h.descriptorOffset), length: at(h.descriptorSize) });
  if (h.gdOffset === GD_AT_END) return h.capacity;
  const gtCoverage = h.grainSize * h.numGTEsPerGT;
  const gdEntries = Math.ceil(h.capacity / gtCoverage);
  const gtBytes = h.numGTEsPerGT * 4;
  const directory = async (name: string, sector: number): Promise<(Buffer | null)[] | null> => {
    const gd = { name: `${where}${name}`, offset: at(sector), length: Math.ceil((gdEntries * 4) / SECTOR) * SECTOR };
    if (
      !rules.check(
        'gd-inside-file',
        sector > 0 && gd.offset + gdEntries * 4 <= f.length,
        () => `${describeRegion(gd)} lies outside the ${f.length}-byte file`,
      )
    )
      return null;
    regions.push(gd);
    const entries = await f.read(gd.offset, gdEntries * 4);
    const tables: (Buffer | null)[] = [];
    for (let i = 0; i < gdEntries; i++) {
      const gtSector = entries.readUInt32LE(i * 4);
      if (gtSector === 0) {
        tables.push(null);
        continue;
      }
      const gt = {
        name: `${where}${name === 'gd' ? 'gt' : 'rgt'} ${i}`,
        offset: at(gtSector),
        length: Math.ceil(gtBytes / SECTOR) * SECTOR,
      };
      if (
        !rules.check(
          'gt-inside-file',
          gt.offset + gtBytes <= f.length,
          () => `${describeRegion(gt)} lies outside the ${f.length}-byte file`,
        )
      ) {
        tables.push(null);
        continue;
      }
      regions.push(gt);
      tables.push(await f.read(gt.offset, gtBytes));
    }
    return tables;
  };
  const primary = await directory('gd', Number(h.gdOffset));
  if (h.flags & FLAG_REDUNDANT) {
    const redundant = await directory('rgd', h.rgdOffset);
    // VMware falls back on the redundant directory: it must map every grain the primary maps
    const differ =
      primary && redundant
        ? primary.map((t, i) => i).filter((i) => !sameTable(primary[i] ?? null, redundant[i] ?? null))
        : [];
    rules.check(
      'redundant-gd',
      differ.length === 0,
      () =>
        `${where}the redundant grain tables differ from the primary ones ` +
        `for grain directory entries ${differ.slice(0, 8).join(', ')}`,
    );
  }
  if (!primary) return h.capacity;
  const compressed = (h.flags & FLAG_COMPRESSED) !== 0;
  const grains: Region[] = [];
  const wrongMarkers: number[] = [];
  for (const [i, table] of primary.entries()) {
    if (!table) continue;
    for (let j = 0; j < h.numGTEsPerGT; j++) {
      const sector = table.readUInt32LE(j * 4);
      // 0: unallocated; 1: a zeroed grain (version 2 and later)
      if (sector === 0 || (sector === 1 && h.version >= 2)) continue;
      const guestSector = (i * h.numGTEsPerGT + j) * h.grainSize;
      let length = at(h.grainSize);
      if (compressed) {
        // a grain marker: the guest sector it holds (u64) and its compressed size (u32)
        const marker = await f.read(at(sector), 12);
        if (Number(marker.readBigUInt64LE(0)) !== guestSector && wrongMarkers.length < 8)
          wrongMarkers.push(guestSector);
        length = Math.ceil((12 + marker.readUInt32LE(8)) / SECTOR) * SECTOR;
      }
      const grain = { name: `${where}grain ${guestSector}`, offset: at(sector), length };
      rules.check(
        'grain-inside-file',
        grain.offset + grain.length <= f.length,
        () => `${describeRegion(grain)} lies outside the ${f.length}-byte file`,
      );
      grains.push(grain);
    }
  }
  if (compressed)
    rules.check(
      'grain-marker',
      wrongMarkers.length === 0,
      () => `${where}grain markers name other guest sectors than their table entries (${wrongMarkers.join(', ')})`,
    );
  const clash = overlaps([...regions.filter((r) => r.name.startsWith(where)), ...grains]);
  rules.check('regions-overlap', clash.length === 0, () =>
    clash
      .slice(0, 3)
      .map(({ a, b }) => `${describeRegion(a)} overlaps ${describeRegion(b)}`)
      .join('; '),
  );
  regions.push(...grains.slice(0, MAX_REGIONS));
  return h.capacity;
}

/** The redundant copy of a grain table is one when both are there with the same entries, or
 * neither is: a table in one directory only is not copied. */
function sameTable(a: Buffer | null, b: Buffer | null): boolean {
  return a && b ? a.equals(b) : a === b;
}

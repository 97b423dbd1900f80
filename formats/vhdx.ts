import { crc32cWithout } from './crc32c.ts';
import type { ImageFile } from './file.ts';
import { RuleBook, describeRegion, overlaps, MAX_REGIONS, type FormatStructure, type Region } from './rules.ts';

// A VHDX image read by the rules of Microsoft's [MS-VHDX] specification (v20160714): the file type
// identifier, the two headers (CRC-32C, sequence numbers, the log), the two region tables, the
// metadata region and its items, and the block allocation table. qemu reads the first region table
// only and replays a log it finds; Hyper-V checks both copies. All fields are little-endian.

const KiB = 1024;
const MiB = 1024 * KiB;
const HEADERS = [64 * KiB, 128 * KiB];
const HEADER_SIZE = 4 * KiB;
const REGION_TABLES = [192 * KiB, 256 * KiB];
const REGION_TABLE_SIZE = 64 * KiB;
/** The first MiB holds the identifier, headers and region tables (the header section). */
const HEADER_SECTION = MiB;

/** GUIDs as their 16 bytes on disk (little-endian first three fields), in hex. */
const guid = (text: string) => {
  const [a, b, c, d, e] = text.split('-') as [string, string, string, string, string];
  const le = (h: string) => Buffer.from(h, 'hex').reverse().toString('hex');
  return `${le(a)}${le(b)}${le(c)}${d}${e}`.toLowerCase();
};
const BAT_REGION = guid('2DC27766-F623-4200-9D64-115E9BFD4A08');
const METADATA_REGION = guid('8B7CA206-4790-4B9A-B8FE-575F050F886E');
const ITEMS = {
  fileParameters: guid('CAA16737-FA36-4D43-B3B6-33F0AA44E76B'),
  virtualDiskSize: guid('2FA54224-CD1B-4876-B211-5DBED83BF4B8'),
  page83: guid('BECA12AB-B2E6-4523-93EF-C309E000C746'),
  logicalSectorSize: guid('8141BF1D-A96F-4709-BA47-F233A8FAAB5F'),
  physicalSectorSize: guid('CDA348C7-445D-4471-9CC9-E9885251C556'),
} as const;
const ZERO_GUID = '0'.repeat(32);

/** BAT entry states (bits 0-2): a payload block's, and a sector bitmap block's. */
const PAYLOAD_STATES = new Map([
  [0, 'not-present'],
  [1, 'undefined'],
  [2, 'zero'],
  [3, 'unmapped'],
  [6, 'fully-present'],
  [7, 'partially-present'],
]);
const FULLY_PRESENT = 6;
const PARTIALLY_PRESENT = 7;

export interface VhdxHeader {
  valid: boolean;
  sequence: bigint;
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

function parseHeader(b: Buffer): VhdxHeader {
  return {
    valid: b.toString('latin1', 0, 4) === 'head' && b.readUInt32LE(4) === crc32cWithout(b, 4),
    sequence: b.readBigUInt64LE(8),
    logGuid: b.toString('hex', 48, 64),
    logVersion: b.readUInt16LE(64),
    version: b.readUInt16LE(66),
    logLength: b.readUInt32LE(68),
    logOffset: Number(b.readBigUInt64LE(72)),
  };
}

interface RegionEntry {
  guid: string;
  offset: number;
  length: number;
}

function parseRegionTable(b: Buffer): { valid: boolean; entries: RegionEntry[] } {
  const valid = b.toString('latin1', 0, 4) === 'regi' && b.readUInt32LE(4) === crc32cWithout(b, 4);
  const count = Math.min(b.readUInt32LE(8), 2047);
  const entries = Array.from({ length: count }, (_, i) => {
    const at = 16 + i * 32;
    return {
      guid: b.toString('hex', at, at + 16),
      offset: Number(b.readBigUInt64LE(at + 16)),
      length: b.readUInt32LE(at + 24),
    };
  });
  return { valid, entries };
}

interface MetadataItem {
  guid: string;
  offset: number;
  length: number;
}

function parseMetadataTable(b: Buffer): { signature: boolean; items: MetadataItem[] } {
  const signature = b.toString('latin1', 0, 8) === 'metadata';
  const count = Math.min(b.readUInt16LE(10), 2047);
  const items = Array.from({ length: count }, (_, i) => {
    const at = 32 + i * 32;
    return { guid: b.toString('hex', at, at + 16), offset: b.readUInt32LE(at + 16), length: b.readUInt32LE(at + 20) };
  });
  return { signature, items };
}

/** The current header: the valid one with the higher sequence number. */
const currentOf = (headers: VhdxHeader[]) =>
  headers.filter((h) => h.valid).sort((a, b) => (a.sequence < b.sequence ? 1 : a.sequence > b.sequence ? -1 : 0))[0];

export const VHDX_RULES = [
  'file-identifier',
  'header-checksum',
  'header-sequence',
  'header-fields',
  'log-empty',
  'region-table-checksum',
  'region-tables-equal',
  'regions',
  'metadata-table',
  'metadata-items',
  'file-parameters',
  'virtual-size',
  'bat-covers-disk',
  'bat-entry-states',
  'block-inside-file',
  'regions-overlap',
] as const;

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** The metadata a reader needs: the regions, and the parameters the metadata items give. */
interface Parameters {
  bat: RegionEntry;
  metadata: RegionEntry;
  blockSize: number;
  virtualSize: number;
  logicalSectorSize: number;
  hasParent: boolean;
}

/** The region tables and metadata items as the first region table names them (qemu's reading). */
async function readParameters(f: ImageFile, rules: RuleBook | null): Promise<Parameters | null> {
  const check = (rule: string, ok: boolean, why: () => string) => (rules ? rules.check(rule, ok, why) : ok);
  const tables = await Promise.all(REGION_TABLES.map((at) => f.read(at, REGION_TABLE_SIZE)));
  const parsed = tables.map(parseRegionTable);
  check(
    'region-table-checksum',
    parsed.every((t) => t.valid),
    () =>
      parsed
        .map((t, i) =>
          t.valid ? null : `the region table at ${REGION_TABLES[i]! / KiB} KiB has a bad signature or checksum`,
        )
        .filter(Boolean)
        .join('; '),
  );
  check('region-tables-equal', tables[0]!.equals(tables[1]!), () => 'the two region tables differ');
  const table = parsed.find((t) => t.valid) ?? parsed[0]!;
  const bat = table.entries.filter((e) => e.guid === BAT_REGION);
  const metadata = table.entries.filter((e) => e.guid === METADATA_REGION);
  const regionOk = (e: RegionEntry) =>
    e.offset % MiB === 0 &&
    e.length % MiB === 0 &&
    e.offset >= HEADER_SECTION &&
    e.length > 0 &&
    e.offset + e.length <= f.length;
  if (
    !check(
      'regions',
      bat.length === 1 && metadata.length === 1 && regionOk(bat[0]!) && regionOk(metadata[0]!),
      () =>
        `region table: ${bat.length} BAT and ${metadata.length} metadata regions ` +
        `(${table.entries.map((e) => `${e.offset}+${e.length}`).join(', ')}), in a file of ${f.length} bytes`,
    )
  )
    return null;
  const region = metadata[0]!;
  const meta = await f.read(region.offset, Math.min(region.length, 64 * KiB));
  const { signature, items } = parseMetadataTable(meta);
  if (!check('metadata-table', signature, () => `no "metadata" signature at ${region.offset}`)) return null;
  const itemOf = (id: string) => items.find((i) => i.guid === id);
  const required = Object.entries(ITEMS).filter(([, id]) => !itemOf(id));
  const outside = items.filter((i) => i.length > 0 && (i.offset < 64 * KiB || i.offset + i.length > region.length));
  if (
    !check('metadata-items', required.length === 0 && outside.length === 0, () =>
      [
        ...required.map(([name]) => `the ${name} item is missing`),
        ...outside.map((i) => `an item at ${i.offset} (+${i.length}) lies outside the metadata region's data`),
      ].join('; '),
    )
  )
    return null;
  const value = async (id: string, length: number) => f.read(region.offset + itemOf(id)!.offset, length);
  const params = await value(ITEMS.fileParameters, 8);
  return {
    bat: bat[0]!,
    metadata: region,
    blockSize: params.readUInt32LE(0),
    hasParent: (params.readUInt32LE(4) & 2) !== 0,
    virtualSize: Number((await value(ITEMS.virtualDiskSize, 8)).readBigUInt64LE(0)),
    logicalSectorSize: (await value(ITEMS.logicalSectorSize, 4)).readUInt32LE(0),
  };
}

/** The virtual size of a vhdx image, as its metadata (and qemu) gives it. */
export async function vhdxVirtualSize(f: ImageFile): Promise<number> {
  const p = await readParameters(f, null);
  if (!p) throw new Error(`${f.path}: no readable vhdx metadata`);
  return p.virtualSize;
}

export async function readVhdxStructure(f: ImageFile): Promise<FormatStructure> {
  const rules = new RuleBook();
  const regions: Region[] = [{ name: 'header-section', offset: 0, length: HEADER_SECTION }];
  const fail = (virtualSize = 0): FormatStructure => ({
    readable: true,
    format: 'vhdx',
    virtualSize,
    fileLength: f.length,
    checked: rules.checked,
    broken: rules.broken,
    regions,
  });
  const id = (await f.read(0, 8)).toString('latin1');
  if (!rules.check('file-identifier', id === 'vhdxfile', () => `the file begins ${JSON.stringify(id)}, not "vhdxfile"`))
    return fail();
  const headers = (await Promise.all(HEADERS.map((at) => f.read(at, HEADER_SIZE)))).map(parseHeader);
  rules.check(
    'header-checksum',
    headers.every((h) => h.valid),
    () =>
      headers
        .map((h, i) => (h.valid ? null : `the header at ${HEADERS[i]! / KiB} KiB has a bad signature or checksum`))
        .filter(Boolean)
        .join('; '),
  );
  const current = currentOf(headers);
  if (!current) return fail();
  rules.check(
    'header-sequence',
    headers.filter((h) => h.valid).length < 2 || headers[0]!.sequence !== headers[1]!.sequence,
    () => `both headers have sequence number ${headers[0]!.sequence}`,
  );
  rules.check(
    'header-fields',
    current.version === 1 &&
      current.logVersion === 0 &&
      current.logLength % MiB === 0 &&
      current.logOffset % MiB === 0 &&
      current.logOffset >= HEADER_SECTION &&
      current.logOffset + current.logLength <= f.length,
    () =>
      `current header: version ${current.version}, log version ${current.logVersion}, ` +
      `log ${current.logLength} bytes at ${current.logOffset}, in a file of ${f.length} bytes`,
  );
  regions.push({ name: 'log', offset: current.logOffset, length: current.logLength });
  rules.check(
    'log-empty',
    current.logGuid === ZERO_GUID,
    () => `the current header names log ${current.logGuid}: the log has entries to replay`,
  );
  const p = await readParameters(f, rules);
  if (!p) return fail();
  regions.push(
    { name: 'bat', offset: p.bat.offset, length: p.bat.length },
    { name: 'metadata', offset: p.metadata.offset, length: p.metadata.length },
  );
  rules.check(
    'file-parameters',
    isPowerOfTwo(p.blockSize) && p.blockSize >= MiB && p.blockSize <= 256 * MiB && !p.hasParent,
    () => `block size ${p.blockSize}${p.hasParent ? ', a parent (this is no differencing disk)' : ''}`,
  );
  const sectorOk = p.logicalSectorSize === 512 || p.logicalSectorSize === 4096;
  rules.check(
    'virtual-size',
    sectorOk && p.virtualSize % p.logicalSectorSize === 0 && p.virtualSize > 0 && p.virtualSize <= 64 * 2 ** 40,
    () => `virtual size ${p.virtualSize} with ${p.logicalSectorSize}-byte logical sectors`,
  );
  if (!sectorOk || !isPowerOfTwo(p.blockSize)) return fail(p.virtualSize);
  // payload entries, each chunk of them followed by one sector bitmap entry
  const chunkRatio = (2 ** 23 * p.logicalSectorSize) / p.blockSize;
  const dataBlocks = Math.ceil(p.virtualSize / p.blockSize);
  const entries = dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio);
  if (
    !rules.check(
      'bat-covers-disk',
      entries * 8 <= p.bat.length,
      () => `${entries} BAT entries do not fit in a ${p.bat.length}-byte BAT region`,
    )
  )
    return fail(p.virtualSize);
  const bat = await f.read(p.bat.offset, entries * 8);
  const blocks: Region[] = [];
  const badStates: string[] = [];
  for (let i = 0; i < entries; i++) {
    const entry = bat.readBigUInt64LE(i * 8);
    const state = Number(entry & 7n);
    const offset = Number(entry >> 20n) * MiB;
    const bitmap = (i + 1) % (chunkRatio + 1) === 0;
    const reserved = (entry >> 3n) & 0x1ffffn;
    const known = bitmap
      ? state === 0 || state === FULLY_PRESENT
      : PAYLOAD_STATES.has(state) && (state !== PARTIALLY_PRESENT || p.hasParent);
    if (!known || reserved !== 0n)
      badStates.push(`entry ${i}: state ${state}${reserved ? `, reserved bits ${reserved}` : ''}`);
    if (state === FULLY_PRESENT || state === PARTIALLY_PRESENT) {
      const block = { name: bitmap ? `sector-bitmap ${i}` : `block ${i}`, offset, length: bitmap ? MiB : p.blockSize };
      rules.check(
        'block-inside-file',
        offset >= HEADER_SECTION && offset + block.length <= f.length,
        () => `${describeRegion(block)} lies outside the ${f.length}-byte file`,
      );
      blocks.push(block);
    }
  }
  rules.check('bat-entry-states', badStates.length === 0, () => badStates.slice(0, 5).join('; '));
  const clash = overlaps([...regions, ...blocks]);
  rules.check('regions-overlap', clash.length === 0, () =>
    clash
      .slice(0, 3)
      .map(({ a, b }) => `${describeRegion(a)} overlaps ${describeRegion(b)}`)
      .join('; '),
  );
  regions.push(...blocks.slice(0, MAX_REGIONS));
  return fail(p.virtualSize);
}

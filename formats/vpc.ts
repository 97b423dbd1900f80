import { MAX_VPC_GEOMETRY, vpcGeometry, type VpcGeometry } from '../model/vpc.ts';
import type { ImageFile } from './file.ts';
import { RuleBook, describeRegion, overlaps, MAX_REGIONS, type FormatStructure, type Region } from './rules.ts';

// A VHD (qemu's vpc) image read by the rules of Microsoft's Virtual Hard Disk Image Format
// Specification (2006): the hard disk footer at the end of the file, for a dynamic disk its copy at
// offset 0, the dynamic disk header and the block allocation table (BAT). qemu reads the copy at
// offset 0 and checks only the footer's checksum; Hyper-V, Azure and Virtual PC read the footer at
// the end and the dynamic header too. All fields are big-endian.

const SECTOR = 512;
const FOOTER_SIZE = 512;
const DYNAMIC_HEADER_SIZE = 1024;
const FIXED = 2;
const DYNAMIC = 3;
const DIFFERENCING = 4;
const UNUSED = 0xffffffff;
const NO_OFFSET = 0xffffffffffffffffn;

export interface VpcFooter {
  cookie: string;
  features: number;
  version: number;
  dataOffset: bigint;
  creatorApp: string;
  currentSize: number;
  originalSize: number;
  geometry: VpcGeometry;
  diskType: number;
  checksum: number;
  /** The checksum the footer's bytes give. */
  computedChecksum: number;
}

export interface VpcDynamicHeader {
  cookie: string;
  dataOffset: bigint;
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  computedChecksum: number;
}

/** The one's complement of the sum of the bytes, the checksum field (4 bytes at `at`) left out. */
export function vhdChecksum(bytes: Buffer, at: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) if (i < at || i >= at + 4) sum += bytes[i]!;
  return ~sum >>> 0;
}

export function parseFooter(b: Buffer): VpcFooter {
  return {
    cookie: b.toString('latin1', 0, 8),
    features: b.readUInt32BE(8),
    version: b.readUInt32BE(12),
    dataOffset: b.readBigUInt64BE(16),
    creatorApp: b.toString('latin1', 28, 32),
    originalSize: Number(b.readBigUInt64BE(40)),
    currentSize: Number(b.readBigUInt64BE(48)),
    geometry: { cylinders: b.readUInt16BE(56), heads: b.readUInt8(58), sectorsPerTrack: b.readUInt8(59) },
    diskType: b.readUInt32BE(60),
    checksum: b.readUInt32BE(64),
    computedChecksum: vhdChecksum(b.subarray(0, FOOTER_SIZE), 64),
  };
}

export function parseDynamicHeader(b: Buffer): VpcDynamicHeader {
  return {
    cookie: b.toString('latin1', 0, 8),
    dataOffset: b.readBigUInt64BE(8),
    tableOffset: Number(b.readBigUInt64BE(16)),
    headerVersion: b.readUInt32BE(24),
    maxTableEntries: b.readUInt32BE(28),
    blockSize: b.readUInt32BE(32),
    checksum: b.readUInt32BE(36),
    computedChecksum: vhdChecksum(b.subarray(0, DYNAMIC_HEADER_SIZE), 36),
  };
}

const sameGeometry = (a: VpcGeometry, b: VpcGeometry) =>
  a.cylinders === b.cylinders && a.heads === b.heads && a.sectorsPerTrack === b.sectorsPerTrack;
const geometryText = (g: VpcGeometry) => `${g.cylinders}/${g.heads}/${g.sectorsPerTrack}`;
const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** The virtual size qemu reads from a footer (block/vpc.c vpc_open): the geometry's, for the
 * creators that size by it ("vpc ", and "qemu" for images qemu-img made without force_size),
 * unless it is the largest geometry; else the current size (Hyper-V's reading, and qemu's for
 * force_size images, creator "qem2"). */
export function qemuVpcSize(footer: Pick<VpcFooter, 'creatorApp' | 'geometry' | 'currentSize'>): number {
  const g = footer.geometry;
  const byGeometry = ['vpc ', 'qemu'].includes(footer.creatorApp) && !sameGeometry(g, MAX_VPC_GEOMETRY);
  return byGeometry ? g.cylinders * g.heads * g.sectorsPerTrack * SECTOR : footer.currentSize;
}

/** The virtual size of a vpc image as qemu reads it: from the footer copy at offset 0 when there is
 * one (qemu reads that first), else from the footer at the end. */
export async function vpcVirtualSize(f: ImageFile): Promise<number> {
  const head = parseFooter(await f.read(0, FOOTER_SIZE));
  const footer =
    head.cookie === 'conectix' ? head : parseFooter(await f.read(Math.max(0, f.length - FOOTER_SIZE), FOOTER_SIZE));
  if (footer.cookie !== 'conectix') throw new Error(`${f.path}: no VHD footer`);
  return qemuVpcSize(footer);
}

/** Every rule of the specification this reader checks, in order (each broken one is a signature). */
export const VPC_RULES = [
  'footer-cookie',
  'footer-checksum',
  'footer-fields',
  'geometry',
  'file-length',
  'footer-copy',
  'dynamic-header-cookie',
  'dynamic-header-checksum',
  'dynamic-header-fields',
  'bat-inside-file',
  'bat-covers-disk',
  'block-inside-file',
  'regions-overlap',
] as const;

export async function readVpcStructure(f: ImageFile): Promise<FormatStructure> {
  const rules = new RuleBook();
  const regions: Region[] = [];
  const length = f.length;
  const footerAt = Math.max(0, length - FOOTER_SIZE);
  const tail = await f.read(footerAt, FOOTER_SIZE);
  const footer = parseFooter(tail);
  // the footer's cookie: without it nothing else is a VHD
  if (
    !rules.check(
      'footer-cookie',
      footer.cookie === 'conectix',
      () => `the last 512 bytes begin ${JSON.stringify(footer.cookie)}, not "conectix"`,
    )
  )
    return done(rules, regions, footer, length);
  regions.push({ name: 'footer', offset: footerAt, length: FOOTER_SIZE });
  rules.check(
    'footer-checksum',
    footer.checksum === footer.computedChecksum,
    () => `the footer's checksum is ${hex(footer.checksum)}, its bytes give ${hex(footer.computedChecksum)}`,
  );
  const dynamic = footer.diskType === DYNAMIC || footer.diskType === DIFFERENCING;
  rules.check(
    'footer-fields',
    footer.version === 0x00010000 &&
      (footer.features & 2) === 2 &&
      [FIXED, DYNAMIC, DIFFERENCING].includes(footer.diskType) &&
      (dynamic ? footer.dataOffset !== NO_OFFSET : footer.dataOffset === NO_OFFSET) &&
      footer.currentSize % SECTOR === 0,
    () =>
      `footer: version ${hex(footer.version)}, features ${hex(footer.features)}, disk type ${footer.diskType}, ` +
      `data offset ${footer.dataOffset}, current size ${footer.currentSize}`,
  );
  // Virtual PC sizes the disk by its geometry, which the specification's algorithm derives from the
  // size; the largest geometry says "read the current size" (qemu's force_size, Hyper-V)
  const expected = vpcGeometry(Math.floor(footer.currentSize / SECTOR));
  rules.check(
    'geometry',
    sameGeometry(footer.geometry, expected) || sameGeometry(footer.geometry, MAX_VPC_GEOMETRY),
    () =>
      `the geometry ${geometryText(footer.geometry)} is not the one the current size ${footer.currentSize} ` +
      `gives (${geometryText(expected)}), nor the largest one`,
  );
  rules.check('file-length', length % SECTOR === 0 && (dynamic || length === footer.currentSize + FOOTER_SIZE), () =>
    dynamic
      ? `the file is ${length} bytes, not whole sectors`
      : `a fixed disk of ${footer.currentSize} bytes is a file of ${footer.currentSize + FOOTER_SIZE}, not ${length}`,
  );
  if (!dynamic) return done(rules, regions, footer, length);

  const copy = await f.read(0, FOOTER_SIZE);
  regions.push({ name: 'footer-copy', offset: 0, length: FOOTER_SIZE });
  rules.check('footer-copy', copy.equals(tail), () => `the footer copy at offset 0 differs from the footer at the end`);
  const headerAt = Number(footer.dataOffset);
  const header = parseDynamicHeader(await f.read(headerAt, DYNAMIC_HEADER_SIZE));
  regions.push({ name: 'dynamic-header', offset: headerAt, length: DYNAMIC_HEADER_SIZE });
  if (
    !rules.check(
      'dynamic-header-cookie',
      header.cookie === 'cxsparse',
      () => `at ${headerAt}: ${JSON.stringify(header.cookie)}, not "cxsparse"`,
    )
  )
    return done(rules, regions, footer, length);
  rules.check(
    'dynamic-header-checksum',
    header.checksum === header.computedChecksum,
    () => `the dynamic header's checksum is ${hex(header.checksum)}, its bytes give ${hex(header.computedChecksum)}`,
  );
  rules.check(
    'dynamic-header-fields',
    header.dataOffset === NO_OFFSET &&
      header.headerVersion === 0x00010000 &&
      isPowerOfTwo(header.blockSize) &&
      header.blockSize >= SECTOR &&
      header.tableOffset % SECTOR === 0,
    () =>
      `dynamic header: data offset ${header.dataOffset}, version ${hex(header.headerVersion)}, ` +
      `block size ${header.blockSize}, table offset ${header.tableOffset}`,
  );
  const batBytes = Math.ceil((header.maxTableEntries * 4) / SECTOR) * SECTOR;
  regions.push({ name: 'bat', offset: header.tableOffset, length: batBytes });
  if (
    !rules.check(
      'bat-inside-file',
      header.tableOffset + batBytes <= footerAt,
      () => `the BAT (${batBytes} bytes at ${header.tableOffset}) runs past the footer at ${footerAt}`,
    )
  )
    return done(rules, regions, footer, length);
  const needed = Math.ceil(footer.currentSize / Math.max(header.blockSize, 1));
  rules.check(
    'bat-covers-disk',
    header.maxTableEntries >= needed,
    () =>
      `${header.maxTableEntries} BAT entries cover ${header.maxTableEntries * header.blockSize} bytes, ` +
      `the disk is ${footer.currentSize}`,
  );
  // each allocated block: its sector bitmap (whole sectors) then its data, before the footer
  const bitmapBytes = Math.ceil(header.blockSize / SECTOR / 8 / SECTOR) * SECTOR;
  const bat = await f.read(header.tableOffset, header.maxTableEntries * 4);
  const blocks: Region[] = [];
  for (let i = 0; i < header.maxTableEntries; i++) {
    const sector = bat.readUInt32BE(i * 4);
    if (sector === UNUSED) continue;
    const block = { name: `block ${i}`, offset: sector * SECTOR, length: bitmapBytes + header.blockSize };
    rules.check(
      'block-inside-file',
      block.offset + block.length <= footerAt && block.offset > 0,
      () => `${describeRegion(block)} runs past the footer at ${footerAt}`,
    );
    blocks.push(block);
  }
  const clash = overlaps([...regions.filter((r) => r.name !== 'footer'), ...blocks]);
  rules.check('regions-overlap', clash.length === 0, () =>
    clash
      .slice(0, 3)
      .map(({ a, b }) => `${describeRegion(a)} overlaps ${describeRegion(b)}`)
      .join('; '),
  );
  regions.push(...blocks.slice(0, MAX_REGIONS));
  return done(rules, regions, footer, length);
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

const done = (rules: RuleBook, regions: Region[], footer: VpcFooter, fileLength: number): FormatStructure => ({
  readable: true,
  format: 'vpc',
  virtualSize: qemuVpcSize(footer),
  fileLength,
  checked: rules.checked,
  broken: rules.broken,
  regions,
});

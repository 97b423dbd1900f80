import { chainOf, opOf, type BackingSpec, type Case } from './case.ts';

// Where a case's files live, relative to its work directory.
//
// qemu-img 7.2 resolves a relative backing file name against the image's directory, but a relative
// `data_file` name against the working directory of the process (verified: from another directory
// `qemu-img check DIR/img.qcow2` fails with "Could not open 'data.raw'"). Each side needs its own
// data file (a resize truncates or extends it), and the name stored in the header is the same in
// each copy of the image. So with a data file each side gets a directory of its own (base/,
// reference/, subject/) holding its image, its data file and its copy of the backing image, and
// every command on a side runs in that side's directory, where both resolutions agree; the one
// command on both sides at once, `qemu-img compare`, names each data file explicitly
// (compareArgs). Without a data file all files stay in the work directory: the backing image is
// only ever opened read-only by qemu-img resize, check, compare and qemu-io (verified), so both
// sides share it.

/** The backing image and the external data file, as the image names them: next to the image. */
export const BACKING = 'backing.qcow2';
export const DATA_FILE = 'data.raw';

/** The backing image's file name, by its format (backing.qcow2, backing.raw, backing.vmdk). */
export const backingFileOf = (c: Case) => (c.image.backing === null ? null : `backing.${c.image.backing.format}`);

/** The names a chain's levels below the image are stored by, parent first: the image names
 * backing.qcow2 (or .raw, .vmdk), prefixed with the chain's directory where it has one; that level
 * names lower.qcow2 (or .raw, .vmdk), beside itself. The lower name is the shorter: instar rewrites
 * a backing name in place and refuses a longer one, so a rebase past the middle reaches its code. */
export const chainLinks = (levels: readonly BackingSpec[]): { name: string; path: string }[] => {
  const dir = levels[0]?.directory ? `${levels[0].directory}/` : '';
  return levels.map((b, i) => {
    const file = `${i === 0 ? 'backing' : 'lower'}.${b.format}`;
    return { name: i === 0 ? `${dir}${file}` : file, path: `${dir}${file}` };
  });
};

/** Stands for the absolute directory a build command runs in, which the harness and repro.sh put
 * in: a level named by its absolute path is stored as `${CWD}/<its path from the image>`. */
export const CWD = '{cwd}';

/** The backing name the level above level `i` stores: relative (chainLinks' name), or its absolute
 * path (CWD-based) where the level says so. */
export const storedLinkName = (levels: readonly BackingSpec[], i: number): string => {
  const link = chainLinks(levels)[i]!;
  return levels[i]!.absolute ? `${CWD}/${link.path}` : link.name;
};

/** Whether a level below the image is named by its absolute path: each side's copy of the chain
 * is then retargeted to its own files, and no longer the base's byte for byte. */
export const hasAbsoluteLinks = (c: Case) => chainOf(c.image).some((b) => b.absolute === true);

/** The files of a chain's levels below the image, parent first, relative to the image's directory. */
export const chainFileNames = (levels: readonly BackingSpec[]) => chainLinks(levels).map((l) => l.path);

/** The directory below the image's that holds its chain, or null. */
export const chainDirectory = (c: Case) => c.image.backing?.directory ?? null;

/** Whether a step may write the chain below the image (a commit writes into a member, a rebase
 * names another): each side then has a chain of its own. */
export const writesChain = (c: Case) => c.steps.some((s) => opOf(s) === 'commit' || opOf(s) === 'rebase');

/** What a chain file is to the case: a level of its build (the image's parent, the level below
 * that), an image a rebase step builds to rebase onto, or where a rebase step moves the old
 * backing. Signatures name a member by it: the file names are the same in every case. */
export type ChainRole = 'parent' | 'grandparent' | 'new-backing' | 'moved-backing';

/** Every chain file of a case with its role, by its name relative to the image's directory: its
 * levels below the image, the images its rebase steps build, the names they move old backings to. */
export function chainMembers(c: Case): { file: string; role: ChainRole }[] {
  const levels = chainFileNames(chainOf(c.image)).map((file, i) => ({
    file,
    role: (i === 0 ? 'parent' : 'grandparent') as ChainRole,
  }));
  const later = c.steps.flatMap((s) => {
    const r = s as { op?: string; backing?: string; newBacking?: unknown; oldBacking?: { movedTo: string | null } };
    if (r.op !== 'rebase') return [];
    const built = r.newBacking && r.backing ? [{ file: r.backing, role: 'new-backing' as const }] : [];
    const moved = r.oldBacking?.movedTo ? [{ file: r.oldBacking.movedTo, role: 'moved-backing' as const }] : [];
    return [...built, ...moved];
  });
  return [...levels, ...later];
}

/** A chain file's format, by its name (the harness names every level and new backing `.qcow2`,
 * `.raw` or `.vmdk`). */
export const chainFileFormat = (file: string): BackingSpec['format'] =>
  file.endsWith('.raw') ? 'raw' : file.endsWith('.vmdk') ? 'vmdk' : 'qcow2';

/** Every chain file of a case (chainMembers), by name. */
export const chainFiles = (c: Case): string[] => chainMembers(c).map((m) => m.file);

/** One side's directory (relative to the work directory; '.' for the work directory itself) and
 * its image in there. Every command on that side runs in its directory and names the image
 * relative to it. */
export interface SideFiles {
  dir: string;
  image: string;
}

export interface Layout {
  base: SideFiles;
  reference: SideFiles;
  subject: SideFiles;
  /** Every chain file (chainFiles), relative to each side's directory: shared by the sides (in the
   * work directory) unless `chainWritten`. */
  chain: string[];
  /** The chain files the build makes (not where a step moves one): each side gets a copy. */
  chainBuilt: string[];
  /** A step may write the chain: each side has its own, and a refused step must leave it as it was. */
  chainWritten: boolean;
  /** The data file, relative to each side's directory, or null. */
  dataFile: string | null;
  /** vmdk extent files, relative to each side's directory (vmdkExtentFiles). */
  extents: string[];
}

/** The extent files of a vmdk whose descriptor is a file of its own (monolithicFlat,
 * twoGbMaxExtentSparse), named after the base image as its descriptor names them: next to it, in
 * each side's directory. A base image stays below 2 GiB, so it has one. */
export function vmdkExtentFiles(c: Case): string[] {
  if (c.image.format !== 'vmdk') return [];
  const subformat = c.image.options?.subformat;
  if (subformat === 'monolithicFlat') return ['base-flat.vmdk'];
  if (subformat === 'twoGbMaxExtentSparse') return ['base-s001.vmdk'];
  return [];
}

/** Each side in a directory of its own: with a data file, or with vmdk extent files (whose names
 * the descriptor each side's copy holds are the base's). */
export const hasOwnDirectories = (c: Case) =>
  c.image.dataFile !== 'none' || vmdkExtentFiles(c).length > 0 || writesChain(c);

export function caseLayout(c: Case): Layout {
  const own = hasOwnDirectories(c);
  const side = (name: 'base' | 'reference' | 'subject'): SideFiles => ({
    dir: own ? name : '.',
    image: `${name}.${c.image.format}`,
  });
  return {
    base: side('base'),
    reference: side('reference'),
    subject: side('subject'),
    chain: chainFiles(c),
    chainBuilt: chainMembers(c)
      .filter((m) => m.role !== 'moved-backing')
      .map((m) => m.file),
    chainWritten: writesChain(c),
    dataFile: c.image.dataFile !== 'none' ? DATA_FILE : null,
    extents: vmdkExtentFiles(c),
  };
}

/** A side's image relative to the work directory. */
export const imagePath = (s: SideFiles) => (s.dir === '.' ? s.image : `${s.dir}/${s.image}`);

/** The files next to each side's image that a step may write, relative to its directory: its
 * data file, its vmdk extent files and, where a step may write it, its chain. */
export const sideExtras = (layout: Layout) =>
  [layout.dataFile, ...layout.extents, ...(layout.chainWritten ? layout.chain : [])].filter((f) => f !== null);

/** The files a refused step must leave as they were, relative to the work directory: the image,
 * its data file and its extent files. */
export const sideFilesOf = (layout: Layout, side: SideFiles) => [
  imagePath(side),
  ...sideExtras(layout).map((f) => `${side.dir}/${f}`),
];

/** A file below a side's directory as one file name (`chain/backing.qcow2`: `chain-backing.qcow2`). */
const flat = (file: string) => file.replace(/\//g, '-');

/** The files a report keeps, as (stored name, path relative to the work directory): the three
 * images, the chain once where no side writes it, and each side's data file, extent files and
 * chain where it does. */
export function keptFiles(layout: Layout): { name: string; path: string }[] {
  const sides = [layout.base, layout.reference, layout.subject];
  const files = sides.map((s) => ({ name: s.image, path: imagePath(s) }));
  if (!layout.chainWritten)
    for (const file of layout.chain) files.push({ name: flat(file), path: `${layout.base.dir}/${file}` });
  for (const file of sideExtras(layout))
    for (const s of sides) files.push({ name: `${s.dir}.${flat(file)}`, path: `${s.dir}/${file}` });
  return files;
}

import type { Case } from './case.ts';

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
export const RAW_BACKING = 'backing.raw';
export const DATA_FILE = 'data.raw';

/** The backing image's file name, by its format. */
export const backingFileOf = (c: Case) =>
  c.image.backing === null ? null : c.image.backing.format === 'raw' ? RAW_BACKING : BACKING;

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
  /** The backing image, relative to each side's directory, or null. */
  backing: string | null;
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
export const hasOwnDirectories = (c: Case) => c.image.dataFile !== 'none' || vmdkExtentFiles(c).length > 0;

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
    backing: backingFileOf(c),
    dataFile: c.image.dataFile !== 'none' ? DATA_FILE : null,
    extents: vmdkExtentFiles(c),
  };
}

/** A side's image relative to the work directory. */
export const imagePath = (s: SideFiles) => (s.dir === '.' ? s.image : `${s.dir}/${s.image}`);

/** The files next to each side's image that a resize may write, relative to its directory: its
 * data file and its vmdk extent files. */
export const sideExtras = (layout: Layout) => [layout.dataFile, ...layout.extents].filter((f) => f !== null);

/** The files a refused step must leave as they were, relative to the work directory: the image,
 * its data file and its extent files. */
export const sideFilesOf = (layout: Layout, side: SideFiles) => [
  imagePath(side),
  ...sideExtras(layout).map((f) => `${side.dir}/${f}`),
];

/** The files a report keeps, as (stored name, path relative to the work directory): the three
 * images, the backing image once (no side writes it) and each side's data file and extent files. */
export function keptFiles(layout: Layout): { name: string; path: string }[] {
  const sides = [layout.base, layout.reference, layout.subject];
  const files = sides.map((s) => ({ name: s.image, path: imagePath(s) }));
  if (layout.backing) files.push({ name: layout.backing, path: `${layout.base.dir}/${layout.backing}` });
  for (const file of sideExtras(layout))
    for (const s of sides) files.push({ name: `${s.dir}.${file}`, path: `${s.dir}/${file}` });
  return files;
}

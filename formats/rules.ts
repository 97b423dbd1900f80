// What a format reader makes of an image's structures: each rule of the format's specification it
// checked, and the ones the image breaks. Rules are named by the format's own terms
// (`footer-checksum`, `region-tables-equal`), so that each broken rule has a signature of its own.

export const STRUCTURED_FORMATS = ['vpc', 'vhdx', 'vmdk'] as const;
export type StructuredFormat = (typeof STRUCTURED_FORMATS)[number];

/** A byte range of the file that a structure occupies, named by the structure. */
export interface Region {
  name: string;
  offset: number;
  length: number;
}

export interface BrokenRule {
  rule: string;
  /** What was found, with the numbers, for people. */
  message: string;
}

export type FormatStructure =
  | {
      readable: true;
      format: StructuredFormat;
      /** The virtual disk size the structures give, in bytes. */
      virtualSize: number;
      fileLength: number;
      /** The rules checked, in the format's order. */
      checked: string[];
      broken: BrokenRule[];
      /** Where the metadata lies, and the allocated blocks or grains (at most MAX_REGIONS). */
      regions: Region[];
    }
  | { readable: false; format: StructuredFormat; reason: 'missing' | 'not-format' | 'error'; message: string };

/** What a picture of the file needs of a readable structure (reporting/damage-picture.ts): kept in
 * every report's step records. */
export type FormatSketch = Omit<Extract<FormatStructure, { readable: true }>, 'readable' | 'checked'>;

export function formatSketchOf(o: FormatStructure): FormatSketch | null {
  if (!o.readable) return null;
  const { format, virtualSize, fileLength, broken, regions } = o;
  return { format, virtualSize, fileLength, broken, regions };
}

/** Lists kept in an observation are capped, so that a badly broken image still gives a small report. */
export const MAX_REGIONS = 200;
export const MAX_LISTED_BROKEN = 50;

/** Collects the rules a reader checks, in order, and those broken (a rule broken twice is listed
 * once, with its first message). */
export class RuleBook {
  readonly checked: string[] = [];
  readonly broken: BrokenRule[] = [];

  /** Records that `rule` was checked; when `ok` is false it is broken, for the reason `why()` gives. */
  check(rule: string, ok: boolean, why: () => string): boolean {
    if (!this.checked.includes(rule)) this.checked.push(rule);
    if (!ok && !this.broken.some((b) => b.rule === rule) && this.broken.length < MAX_LISTED_BROKEN)
      this.broken.push({ rule, message: why() });
    return ok;
  }
}

/** Pairs of regions that overlap, named `a/b`: sorted by offset, each against those after it that
 * start before it ends. */
export function overlaps(regions: Region[]): { a: Region; b: Region }[] {
  const sorted = regions.filter((r) => r.length > 0).sort((x, y) => x.offset - y.offset);
  const out: { a: Region; b: Region }[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const a = sorted[i]!;
    for (let j = i + 1; j < sorted.length && sorted[j]!.offset < a.offset + a.length; j++) {
      out.push({ a, b: sorted[j]! });
      if (out.length >= MAX_LISTED_BROKEN) return out;
    }
  }
  return out;
}

export const describeRegion = (r: Region) => `${r.name} at ${r.offset} (+${r.length})`;

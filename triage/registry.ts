import { DAMAGE_KINDS } from '../operations/repair/step.ts';
import { readFile } from 'node:fs/promises';
import {
  DATA_FILE_KINDS,
  FORMAT_OPTIONS,
  IMAGE_FORMATS,
  OPERATION_NAMES,
  isIoOp,
  hasBitmaps,
  isResize,
  opOf,
  type OperationName,
  PREALLOCATION_MODES,
  REFCOUNT_WIDTHS,
  l2Coverage,
  liveSnapshots,
  type Case,
  type DataFileKind,
  type IoOp,
  type ImageFormat,
} from '../model/case.ts';
import { FatalError } from '../model/errors.ts';
import type { StepRecord } from '../exec/run-case.ts';
import type { Side, StepFinding } from '../oracles/finding.ts';
import { sizeRelation } from '../oracles/outcome.ts';
import { ALL_STEP_KINDS, operationOf } from '../operations/table.ts';
import { ORACLE_NAMES, type OracleName } from '../oracles/table.ts';

// The known-divergence registry: expected refusals and differences that are not filed as new.
// Entries match the kind of failure (oracle, kind, side, detail, stderr), not only the input, so
// a case that starts failing differently is new again. The file is validated before any work.

/** Facts about a case and the step a finding came from, that entries can test. */
export interface CaseFacts {
  /** The image format. */
  format: ImageFormat;
  /** A vhdx, vmdk or vpc image's subformat (`-o subformat=`); 'none' for qcow2 and raw. */
  subformat: string;
  /** The step's operation (operations/table.ts). */
  operation: OperationName;
  /** An amend step's -o keys (none for other operations). */
  amendKeys: string[];
  refcountBits: number;
  clusterSize: number;
  compat: string;
  lazyRefcounts: boolean;
  extendedL2: boolean;
  /** The step's kind by its operation's rules (a resize's grow, an amend's downgrade...). */
  stepKind: string;
  /** 'none' when the step has no --preallocation option. */
  preallocation: string;
  shrinkFlag: boolean;
  /** How many L2 tables the range a shrink discards touches (0 for other steps). */
  shrinkL2Tables: number;
  /** A shrink to a positive size below one cluster. */
  shrinkBelowOneCluster: boolean;
  compressionType: string;
  /** The image has persistent bitmaps when the step runs (as read before it; as built in steps
   * recorded before that). */
  bitmaps: boolean;
  /** The base image holds compressed clusters: a compressed write no later data operation overlaps
   * (a write, zero or discard there leaves the cluster uncompressed or gone; qemu's rules). */
  compressed: boolean;
  /** The base image was left with the dirty bit set. */
  dirty: boolean;
  /** Internal snapshots exist when the steps run. */
  snapshots: boolean;
  /** qemu-img grew the image's refcount table in this step (read from its result). */
  refcountTableGrew: boolean;
  /** The backing image, compared with the image's virtual size before the step: 'longer' when it
   * is larger (qemu zero-fills a grow then), 'shorter' when not, 'none' without one. */
  backingFile: BackingFact;
  /** The external data file: 'none', 'data_file', or 'data_file_raw' (data_file_raw=on). */
  dataFile: DataFileKind;
  /** The image is encrypted (LUKS). */
  encrypted: boolean;
  /** qemu-img was given the key for this step's resize (only ever on an encrypted image). */
  keyGiven: boolean;
  /** Where the subject's size landed when it accepted a step qemu-img refused (oracles/outcome.ts
   * sizeRelation); 'none' for other steps. */
  sizeLanded: string;
  /** The kinds of damage the case writes after its build (a repair's input; empty: none). */
  damage: string[];
}

/** Every subformat a case may name, and 'none'. */
const SUBFORMATS = ['none', ...new Set(Object.values(FORMAT_OPTIONS).flatMap((o) => o.subformat as readonly string[]))];

export const BACKING_FACTS = ['none', 'shorter', 'longer'] as const;
export const SIZE_LANDINGS = ['none', 'as-asked', 'below-asked', 'above-asked', 'unchanged', 'changed', 'unreadable'];
export type BackingFact = (typeof BACKING_FACTS)[number];

interface CasePredicates {
  format?: ImageFormat[];
  subformat?: string[];
  operation?: OperationName[];
  /** The amend step uses one of these -o keys. */
  amendKeys?: string[];
  refcountBits?: number[];
  clusterSize?: number[];
  compat?: string[];
  lazyRefcounts?: boolean;
  extendedL2?: boolean;
  stepKind?: string[];
  preallocation?: string[];
  shrinkFlag?: boolean;
  /** At least this many L2 tables in the discarded range. */
  shrinkL2TablesAtLeast?: number;
  shrinkBelowOneCluster?: boolean;
  compressionType?: string[];
  bitmaps?: boolean;
  compressed?: boolean;
  dirty?: boolean;
  snapshots?: boolean;
  refcountTableGrew?: boolean;
  backingFile?: BackingFact[];
  dataFile?: DataFileKind[];
  encrypted?: boolean;
  keyGiven?: boolean;
  sizeLanded?: string[];
  /** The case writes one of these kinds of damage. */
  damage?: string[];
}

export interface KnownDivergence {
  id: string;
  description: string;
  link: string;
  /** YYYY-MM-DD: from this day on the entry no longer suppresses anything, and runs list it. */
  expires?: string;
  /** The issue that tracks the divergence (a URL). */
  issue?: string;
  /** The reference qemu-img versions the entry holds for: from `from` (inclusive) up to `below`
   * (exclusive), each `MAJOR[.MINOR[.MICRO]]`; absent, every version. */
  qemuVersions?: { from?: string; below?: string };
  match: {
    oracle?: OracleName;
    /** The finding's kind, or the kinds one behaviour shows as in several oracles (a repair that
     * leaves damage: check's corruptions, structure's refcount-mismatch, repair's exit-differs). */
    kind: string | string[];
    side?: Side;
    /** A regular expression that the finding's normalised detail must match. */
    detail?: string;
    /** A regular expression that the subject's stderr of that step must match. */
    subjectStderr?: string;
    case?: CasePredicates;
  };
}

export class RegistryError extends FatalError {}

type Check = (value: unknown) => string | null;
const isString: Check = (v) => (typeof v === 'string' && v.trim() !== '' ? null : 'must be a non-empty string');
const isBoolean: Check = (v) => (typeof v === 'boolean' ? null : 'must be true or false');
const oneOf =
  (allowed: readonly (string | number)[]): Check =>
  (v) =>
    allowed.includes(v as string | number) ? null : `must be one of ${allowed.join(', ')}`;
const listOf =
  (item: Check): Check =>
  (v) => {
    if (!Array.isArray(v) || v.length === 0) return 'must be a non-empty array';
    const bad = v.map(item).find((e) => e !== null);
    return bad ? `has an element that ${bad}` : null;
  };
const isRegex: Check = (v) => {
  const e = isString(v);
  if (e) return e;
  try {
    new RegExp(v as string);
    return null;
  } catch (err) {
    return `is not a valid regular expression (${(err as Error).message})`;
  }
};
const isDay: Check = (v) =>
  typeof v === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(v) && !Number.isNaN(Date.parse(`${v}T00:00:00Z`))
    ? null
    : 'must be a date written YYYY-MM-DD';
const isUrl: Check = (v) => (typeof v === 'string' && /^https?:\/\/\S+$/.test(v) ? null : 'must be an http(s) URL');
const isPositiveInteger: Check = (v) =>
  Number.isInteger(v) && (v as number) > 0 ? null : 'must be a positive integer';
const isClusterSize: Check = (v) =>
  Number.isInteger(v) && (v as number) >= 512 && (v as number) <= 2 ** 21 && Number.isInteger(Math.log2(v as number))
    ? null
    : 'must be a power of two from 512 to 2097152';

const VERSION = /^\d+(\.\d+){0,2}$/;
const isVersionRange: Check = (v) => {
  if (!isObject(v) || Object.keys(v).length === 0) return 'must be an object with "from" and/or "below"';
  const bad = Object.entries(v).find(
    ([k, x]) => !['from', 'below'].includes(k) || typeof x !== 'string' || !VERSION.test(x),
  );
  return bad ? `has ${bad[0]}: it takes "from" and "below", each a version such as "8.2" or "10.0.2"` : null;
};

/** The fields the registry accepts at each level; known-divergences.schema.json says the same. */
export const ENTRY_FIELDS: Record<string, Check> = {
  id: isString,
  description: isString,
  link: isString,
  expires: isDay,
  issue: isUrl,
  qemuVersions: isVersionRange,
};
export const MATCH_FIELDS: Record<string, Check> = {
  oracle: oneOf(ORACLE_NAMES),
  kind: (v) => (Array.isArray(v) ? listOf(isString)(v) : isString(v)),
  side: oneOf(['subject', 'reference']),
  detail: isRegex,
  subjectStderr: isRegex,
};
export const CASE_FIELDS: Record<keyof CasePredicates, Check> = {
  format: listOf(oneOf(IMAGE_FORMATS)),
  subformat: listOf(oneOf(SUBFORMATS)),
  operation: listOf(oneOf(OPERATION_NAMES)),
  amendKeys: listOf(isString),
  refcountBits: listOf(oneOf(REFCOUNT_WIDTHS)),
  clusterSize: listOf(isClusterSize),
  compat: listOf(oneOf(['1.1', '0.10'])),
  lazyRefcounts: isBoolean,
  extendedL2: isBoolean,
  stepKind: listOf(oneOf(ALL_STEP_KINDS)),
  preallocation: listOf(oneOf(['none', ...PREALLOCATION_MODES])),
  shrinkFlag: isBoolean,
  shrinkL2TablesAtLeast: isPositiveInteger,
  shrinkBelowOneCluster: isBoolean,
  compressionType: listOf(oneOf(['zlib', 'zstd'])),
  bitmaps: isBoolean,
  compressed: isBoolean,
  dirty: isBoolean,
  snapshots: isBoolean,
  refcountTableGrew: isBoolean,
  backingFile: listOf(oneOf(BACKING_FACTS)),
  dataFile: listOf(oneOf(DATA_FILE_KINDS)),
  encrypted: isBoolean,
  keyGiven: isBoolean,
  sizeLanded: listOf(oneOf(SIZE_LANDINGS)),
  damage: listOf(oneOf(DAMAGE_KINDS)),
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Checks an object's fields against a table; names the first bad one as `where.field`. */
function checkFields(obj: Record<string, unknown>, fields: Record<string, Check>, required: string[], where: string) {
  for (const name of required) if (!(name in obj)) throw new RegistryError(`${where}.${name} is missing`);
  for (const [name, value] of Object.entries(obj)) {
    const check = fields[name];
    if (!check)
      throw new RegistryError(`${where}.${name} is not a known field (known: ${Object.keys(fields).join(', ')})`);
    const problem = check(value);
    if (problem) throw new RegistryError(`${where}.${name} ${problem}`);
  }
}

export function parseRegistry(text: string, source: string): KnownDivergence[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new RegistryError(`${source} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(json) || !Array.isArray(json.divergences))
    throw new RegistryError(`${source} must be an object {"divergences": [...]}`);
  const ids = new Set<string>();
  return json.divergences.map((entry: unknown, i: number) => {
    const named = isObject(entry) && typeof entry.id === 'string' ? ` ("${entry.id}")` : '';
    const where = `${source}: divergences[${i}]${named}`;
    if (!isObject(entry)) throw new RegistryError(`${where} must be an object`);
    const { match, $comment: _comment, ...rest } = entry;
    checkFields(rest, ENTRY_FIELDS, ['id', 'description', 'link'], where);
    if (ids.has(entry.id as string)) throw new RegistryError(`${where}.id is used by an earlier entry too`);
    ids.add(entry.id as string);
    if (!isObject(match)) throw new RegistryError(`${where}.match must be an object`);
    const { case: predicates, ...matchRest } = match;
    checkFields(matchRest, MATCH_FIELDS, ['kind'], `${where}.match`);
    if (predicates !== undefined) {
      if (!isObject(predicates)) throw new RegistryError(`${where}.match.case must be an object`);
      checkFields(predicates, CASE_FIELDS, [], `${where}.match.case`);
    }
    return entry as unknown as KnownDivergence;
  });
}

/** Splits the registry at `today` (YYYY-MM-DD, UTC): expired entries stop suppressing. */
export function byExpiry(
  entries: KnownDivergence[],
  today: string,
): { active: KnownDivergence[]; expired: KnownDivergence[] } {
  const expired = entries.filter((e) => e.expires !== undefined && e.expires <= today);
  return { active: entries.filter((e) => !expired.includes(e)), expired };
}

/** A version as numbers: "10.0.2" → [10, 0, 2]; missing parts are 0. */
const versionParts = (v: string) => [...v.split('.').map(Number), 0, 0].slice(0, 3);
const compareVersions = (a: string, b: string) => {
  const [x, y] = [versionParts(a), versionParts(b)];
  return x.map((n, i) => n - y[i]!).find((d) => d !== 0) ?? 0;
};

/** The version in qemu-img's --version line ("qemu-img version 7.2.19 (Debian ...)"). */
export function qemuVersionOf(versionLine: string): string | null {
  return /version (\d+\.\d+(?:\.\d+)?)/.exec(versionLine)?.[1] ?? null;
}

/** Splits the registry by the reference's version: entries whose qemuVersions range leaves it out
 * do not apply (and are not unused). An unknown version keeps every entry. */
export function byQemuVersion(
  entries: KnownDivergence[],
  version: string | null,
): { active: KnownDivergence[]; otherVersions: KnownDivergence[] } {
  const holds = ({ qemuVersions: r }: KnownDivergence) =>
    version === null ||
    r === undefined ||
    ((r.from === undefined || compareVersions(version, r.from) >= 0) &&
      (r.below === undefined || compareVersions(version, r.below) < 0));
  return { active: entries.filter(holds), otherVersions: entries.filter((e) => !holds(e)) };
}

export async function loadRegistry(file: string): Promise<KnownDivergence[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new RegistryError(
      `cannot read the known-divergence registry ${file}: ${(err as Error).message} (pass another with --known FILE)`,
    );
  }
  return parseRegistry(text, file);
}

export function caseFacts(c: Case, step: StepRecord): CaseFacts {
  const s = c.steps[step.index]!;
  const resize = isResize(s) ? s : null;
  const l2 = l2Coverage(c.image.clusterSize, c.image.extendedL2);
  const target = step.plan.target ?? 0;
  // the image as read before the step where it was (an earlier amend may have changed it), else as built
  const state = step.stateBefore;
  return {
    format: c.image.format,
    subformat: c.image.options?.subformat ?? 'none',
    operation: opOf(s),
    refcountBits: state?.refcountBits ?? c.image.refcountBits,
    clusterSize: c.image.clusterSize,
    compat: state?.compat ?? c.image.compat,
    lazyRefcounts: state?.lazyRefcounts ?? c.image.lazyRefcounts,
    extendedL2: c.image.extendedL2,
    stepKind: step.plan.kind,
    amendKeys: operationOf(s).facts(s).amendKeys,
    preallocation: resize?.preallocation ?? 'none',
    shrinkFlag: resize?.shrink ?? false,
    shrinkL2Tables: step.plan.kind === 'shrink' ? Math.ceil(step.sizeBefore / l2) - Math.floor(target / l2) : 0,
    shrinkBelowOneCluster: step.plan.kind === 'shrink' && target > 0 && target < c.image.clusterSize,
    compressionType: c.image.compressionType,
    bitmaps: state?.bitmaps !== undefined ? state.bitmaps > 0 : hasBitmaps(c),
    compressed: keepsCompressedClusters(c.data),
    dirty: c.image.dirty,
    snapshots: state ? state.snapshots > 0 : liveSnapshots(c) > 0,
    refcountTableGrew: step.refcountTableGrew === true,
    backingFile:
      c.image.backing === null ? 'none' : c.image.backing.virtualSize > step.sizeBefore ? 'longer' : 'shorter',
    dataFile: c.image.dataFile,
    encrypted: c.image.encrypted,
    keyGiven: resize?.key === true,
    sizeLanded:
      step.reference === 'refused' && step.subject === 'ok'
        ? sizeRelation({ before: step.sizeBefore, target: step.plan.target, after: step.subjectSizeAfter ?? null })
        : 'none',
    damage: c.data.flatMap((d) => (d.op === 'damage' ? [d.kind] : [])),
  };
}

function keepsCompressedClusters(data: Case['data']): boolean {
  const io = data.filter(isIoOp);
  const overlaps = (a: IoOp, b: IoOp) => a.offset < b.offset + b.length && b.offset < a.offset + a.length;
  return io.some((d, i) => d.op === 'compress' && !io.slice(i + 1).some((later) => overlaps(d, later)));
}

function predicatesHold(p: CasePredicates, f: CaseFacts): boolean {
  const inList = <T>(list: T[] | undefined, v: T) => list === undefined || list.includes(v);
  const equal = <T>(want: T | undefined, v: T) => want === undefined || want === v;
  return (
    inList(p.format, f.format) &&
    inList(p.subformat, f.subformat) &&
    inList(p.operation, f.operation) &&
    (p.amendKeys === undefined || p.amendKeys.some((k) => f.amendKeys.includes(k))) &&
    inList(p.refcountBits, f.refcountBits) &&
    inList(p.clusterSize, f.clusterSize) &&
    inList(p.compat, f.compat) &&
    equal(p.lazyRefcounts, f.lazyRefcounts) &&
    equal(p.extendedL2, f.extendedL2) &&
    inList(p.stepKind, f.stepKind) &&
    inList(p.preallocation, f.preallocation) &&
    equal(p.shrinkFlag, f.shrinkFlag) &&
    (p.shrinkL2TablesAtLeast === undefined || f.shrinkL2Tables >= p.shrinkL2TablesAtLeast) &&
    equal(p.shrinkBelowOneCluster, f.shrinkBelowOneCluster) &&
    inList(p.compressionType, f.compressionType) &&
    equal(p.bitmaps, f.bitmaps) &&
    equal(p.compressed, f.compressed) &&
    equal(p.dirty, f.dirty) &&
    equal(p.snapshots, f.snapshots) &&
    equal(p.refcountTableGrew, f.refcountTableGrew) &&
    inList(p.backingFile, f.backingFile) &&
    inList(p.dataFile, f.dataFile) &&
    equal(p.encrypted, f.encrypted) &&
    equal(p.keyGiven, f.keyGiven) &&
    inList(p.sizeLanded, f.sizeLanded) &&
    (p.damage === undefined || p.damage.some((k) => f.damage.includes(k)))
  );
}

/** How an entry judges a finding: it explains it, or all but its message pattern hold (a refusal
 * for a reason the entry does not name: the finding stays new, the entry is reported). */
export type Verdict = 'explains' | 'message-differs' | null;

export function verdictOf(
  { match: m }: KnownDivergence,
  finding: StepFinding,
  facts: CaseFacts,
  subjectStderr: string,
): Verdict {
  if (!(Array.isArray(m.kind) ? m.kind : [m.kind]).includes(finding.kind)) return null;
  if (m.oracle !== undefined && m.oracle !== finding.oracle) return null;
  if (m.side !== undefined && m.side !== finding.side) return null;
  if (m.detail !== undefined && !new RegExp(m.detail).test(finding.detail)) return null;
  if (m.case !== undefined && !predicatesHold(m.case, facts)) return null;
  if (m.subjectStderr !== undefined && !new RegExp(m.subjectStderr).test(subjectStderr)) return 'message-differs';
  return 'explains';
}

/** The first entry that explains this finding, or null; when none does, the entries that would
 * but for their message pattern. */
export function judge(
  entries: KnownDivergence[],
  finding: StepFinding,
  facts: CaseFacts,
  subjectStderr: string,
): { entry: KnownDivergence | null; messageDiffers: KnownDivergence[] } {
  const verdicts = entries.map((entry) => ({ entry, verdict: verdictOf(entry, finding, facts, subjectStderr) }));
  const entry = verdicts.find((v) => v.verdict === 'explains')?.entry ?? null;
  const messageDiffers = entry ? [] : verdicts.filter((v) => v.verdict === 'message-differs').map((v) => v.entry);
  return { entry, messageDiffers };
}

// A case is the one currency of the harness: plain JSON that fully describes the base image, the
// data written into it and the steps, each an operation (a resize, an amend, a snapshot step).
// Everything downstream (execution, oracles, reports, replay, repro scripts) is derived from it and
// from nothing else.
import { parseAmendStep, type AmendStep } from '../operations/amend/step.ts';
import { parseSnapshotStep, type SnapshotStep } from '../operations/snapshot/step.ts';
import { parseBitmapStep, type BitmapStep } from '../operations/bitmap/step.ts';
import { parseCommitStep, type CommitStep } from '../operations/commit/step.ts';
import { parseRebaseStep, type RebaseStep } from '../operations/rebase/step.ts';
import { DAMAGE_KINDS, hasDamage, parseRepairStep, type Damage, type RepairStep } from '../operations/repair/step.ts';

export const REFCOUNT_WIDTHS = [1, 2, 4, 8, 16, 32, 64] as const;
export type RefcountBits = (typeof REFCOUNT_WIDTHS)[number];
export const PREALLOCATION_MODES = ['off', 'metadata', 'falloc', 'full'] as const;
export type Preallocation = (typeof PREALLOCATION_MODES)[number];
export const DATA_FILE_KINDS = ['none', 'data_file', 'data_file_raw'] as const;
export type DataFileKind = (typeof DATA_FILE_KINDS)[number];

/** The image formats a case may have. A raw image is its guest disk: only its virtual size, its
 * created preallocation (off, falloc or full) and the data written into it (write, zero, discard)
 * mean anything; its qcow2 fields hold RAW_IMAGE's values. vhdx, vmdk and vpc images are the same
 * plus their `options`. */
export const IMAGE_FORMATS = ['qcow2', 'raw', 'vhdx', 'vmdk', 'vpc'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];
/** The formats qemu-img 7.2 resizes: the only ones a control run (qemu-img on both sides) has. */
export const QEMU_RESIZED_FORMATS = ['qcow2', 'raw'] as const satisfies readonly ImageFormat[];
/** The formats qemu-img 7.2 reads, converts and (but vpc) checks, but does not resize ("Image
 * format driver does not support resize"). Their reference result is qemu-img's resize of the
 * image converted to raw, converted back with the image's own options (model/commands.ts). */
export const CONVERTED_FORMATS = ['vhdx', 'vmdk', 'vpc'] as const satisfies readonly ImageFormat[];
export type ConvertedFormat = (typeof CONVERTED_FORMATS)[number];
export const isConverted = (format: ImageFormat): format is ConvertedFormat =>
  (CONVERTED_FORMATS as readonly ImageFormat[]).includes(format);

/** The `qemu-img create -o` options of a vhdx, vmdk or vpc image, by format: each option and the
 * values it may take (sizes in bytes). */
export const FORMAT_OPTIONS: Record<ConvertedFormat, Record<string, readonly string[] | 'size'>> = {
  vhdx: { subformat: ['dynamic', 'fixed'], block_size: 'size', log_size: 'size' },
  vmdk: {
    subformat: ['monolithicSparse', 'streamOptimized', 'monolithicFlat', 'twoGbMaxExtentSparse'],
    adapter_type: ['ide', 'buslogic', 'lsilogic', 'legacyESX'],
  },
  vpc: { subformat: ['dynamic', 'fixed'], force_size: ['on', 'off'] },
};

export interface ImageSpec {
  format: ImageFormat;
  /** Virtual size in bytes, a multiple of 512. */
  virtualSize: number;
  clusterSize: number;
  /** The refcount width the image has when the steps run. */
  refcountBits: RefcountBits;
  compat: '1.1' | '0.10';
  lazyRefcounts: boolean;
  extendedL2: boolean;
  compressionType: 'zlib' | 'zstd';
  /** When set, the image is created with this width and converted to refcountBits by
   * `qemu-img amend` after the data is written, which moves the refcount structures. */
  createdWithRefcountBits: RefcountBits | null;
  /** Persistent (consistent) dirty bitmaps added with `qemu-img bitmap --add`. */
  bitmaps: number;
  /** Left with the dirty bit set: lazy refcounts and a qemu-io that aborts after a write. */
  dirty: boolean;
  /** A backing image (`-b backing.qcow2 -F qcow2` or `-b backing.raw -F raw`), shorter or longer than the image, with
   * data of its own that reads through where the image has none; null: no backing file. */
  backing: BackingSpec | null;
  /** An external data file (`data_file=data.raw`), with `data_file_raw=on` or without. */
  dataFile: DataFileKind;
  /** Created with `-o preallocation=MODE` ('off': without the option). */
  createdPreallocation: Preallocation;
  /** LUKS-encrypted (`encrypt.format=luks`) with ENCRYPTION_KEY (model/commands.ts). Every qemu
   * command on it is given the key, except qemu-img's resize in a step that withholds it. */
  encrypted: boolean;
  /** vhdx, vmdk, vpc: the `qemu-img create -o` options (FORMAT_OPTIONS) the image is made with,
   * and the reference result converted back with; absent for qcow2 and raw. */
  options?: Record<string, string>;
}

/** The qcow2 fields of an image of any other format: a qcow2 image of these would have no feature
 * a raw one lacks. */
export const RAW_IMAGE = {
  clusterSize: 65536,
  refcountBits: 16,
  compat: '1.1',
  lazyRefcounts: false,
  extendedL2: false,
  compressionType: 'zlib',
  createdWithRefcountBits: null,
  bitmaps: 0,
  dirty: false,
  backing: null,
  dataFile: 'none',
  encrypted: false,
} as const satisfies Omit<ImageSpec, 'format' | 'virtualSize' | 'createdPreallocation'>;

/** A raw image created without preallocation: its sides are copied with zero blocks left as holes
 * (a plain copy writes every byte where it cannot clone, and the image would come out dense); a
 * created-preallocated image stays allocated, and a qcow2 file holds little but data. */
export const sparseRawBase = (c: Case) => c.image.format === 'raw' && c.image.createdPreallocation === 'off';

/** The data operations a raw, vhdx, vmdk or vpc image can take (no compression, no snapshots). */
export const RAW_DATA_OPS = ['write', 'zero', 'discard'] as const;

export const BACKING_FORMATS = ['qcow2', 'raw', 'vmdk'] as const;
export type BackingFormat = (typeof BACKING_FORMATS)[number];

export interface BackingSpec {
  /** `-F qcow2` (backing.qcow2), `-F raw` (backing.raw), or `-F vmdk` (backing.vmdk: a vmdk image's
   * chain is vmdk throughout). */
  format: BackingFormat;
  /** Virtual size of the backing image in bytes, a multiple of 512, different from the image's. */
  virtualSize: number;
  /** Pattern writes into the backing image before the image is created over it. */
  data: { offset: number; length: number; pattern: number }[];
  /** A qcow2 level's cluster size and refcount width (absent: qemu's defaults, 65536 and 16). */
  clusterSize?: number;
  refcountBits?: RefcountBits;
  /** The level below this one (a qcow2 or vmdk level only): the chain is then base, middle and top. */
  backing?: BackingSpec | null;
  /** The image's parent only: the directory below the image's that holds every level (`chain`),
   * which the image names its parent in (`chain/backing.qcow2`); absent: beside the image. */
  directory?: string;
  /** The level above names this one by its absolute path (each side's copy then names its own
   * chain: the harness retargets the copies); absent: by a path relative to its directory. */
  absolute?: boolean;
}

/** The levels below the image, parent first. */
export function chainOf(image: Pick<ImageSpec, 'backing'>): BackingSpec[] {
  const levels: BackingSpec[] = [];
  for (let b = image.backing; b; b = b.backing ?? null) levels.push(b);
  return levels;
}

/** The most levels below an image: a chain of base, middle and top. */
export const MAX_CHAIN_DEPTH = 2;

/** One command that fills the base image. Offsets and lengths are bytes, multiples of 512. */
export type DataOp =
  | { op: 'write'; offset: number; length: number; pattern: number }
  | { op: 'zero'; offset: number; length: number }
  | { op: 'discard'; offset: number; length: number }
  /** A compressed write: whole clusters only, cluster-aligned. */
  | { op: 'compress'; offset: number; length: number; pattern: number }
  /** Internal snapshots (`qemu-img snapshot -c/-d`): shared clusters, refcounts above 1. */
  | { op: 'snapshot-create'; name: string }
  | { op: 'snapshot-delete'; name: string }
  /** A persistent bitmap added (`qemu-img bitmap --add`) between the writes: an enabled one holds
   * the bits of the writes after it. */
  | { op: 'bitmap-add'; name: string; granularity: number | null; enabled: boolean }
  /** Damage written by the harness after the build (operations/repair/damage.ts): the input of a
   * repair step. */
  | Damage;

export type IoOp = Extract<DataOp, { offset: number }>;
export const isIoOp = (op: DataOp): op is IoOp => 'offset' in op;

/** The operations a step may be, each a row of operations/table.ts with a folder of its own. */
export const OPERATION_NAMES = ['resize', 'amend', 'snapshot', 'repair', 'bitmap', 'commit', 'rebase'] as const;
export type OperationName = (typeof OPERATION_NAMES)[number];

/** One step of a case: an operation and its arguments. A step without `op` is a resize (the only
 * operation cases had before). */
export type Step = ResizeStep | AmendStep | SnapshotStep | RepairStep | BitmapStep | CommitStep | RebaseStep;
export type { AmendStep, SnapshotStep, RepairStep, BitmapStep, CommitStep, RebaseStep };

export const opOf = (step: Step): OperationName => (step as { op?: OperationName }).op ?? 'resize';
export const isResize = (step: Step): step is ResizeStep => opOf(step) === 'resize';

export interface ResizeStep {
  op?: 'resize';
  /** SIZE exactly as both tools get it on their command lines: "8388608", "8M", "+1536K", "-512". */
  size: string;
  shrink: boolean;
  /** null: no --preallocation option at all. */
  preallocation: Preallocation | null;
  /** What the subject is asked to print: `Image resized.` (human, also when absent), its JSON
   * report (`--output json`), or nothing (`-q`). qemu-img, the reference, always prints its words. */
  output?: OutputMode;
  /** On an encrypted image: qemu-img is given the key for this resize (`--object secret` and
   * `--image-opts`). instar cannot be given it (it refuses both options); a qemu-img subject in a
   * control run gets what the reference gets. */
  key?: boolean;
}

export const OUTPUT_MODES = ['human', 'json', 'quiet'] as const;
export type OutputMode = (typeof OUTPUT_MODES)[number];

export interface Case {
  image: ImageSpec;
  data: DataOp[];
  steps: Step[];
}

/** A case whose build ends with damage and whose first step does not repair it. */
export const damageUnrepaired = (c: Case) => hasDamage(c) && (c.steps.length === 0 || opOf(c.steps[0]!) !== 'repair');

/** A case whose first step asks for guest writes before it: the build writes the base image. */
export const writesBeforeFirstStep = (c: Case) =>
  ((c.steps[0] as { writes?: unknown[] } | undefined)?.writes?.length ?? 0) > 0;

/** Whether the base image has persistent bitmaps: the image's own, or added among its data. */
export const hasBitmaps = (c: Case) => c.image.bitmaps > 0 || c.data.some((d) => d.op === 'bitmap-add');

/** How many internal snapshots the base image ends up with. */
export const liveSnapshots = (c: Case) =>
  c.data.reduce((n, op) => n + (op.op === 'snapshot-create' ? 1 : op.op === 'snapshot-delete' ? -1 : 0), 0);

/** Entries per L2 table times the cluster size: the guest range one L2 table maps. */
export function l2Coverage(clusterSize: number, extendedL2: boolean): number {
  return clusterSize * (clusterSize / (extendedL2 ? 16 : 8));
}

/** Weight of a case for "smallest": steps first, then data operations, then virtual size. */
export const caseWeight = (c: Case) => [c.steps.length, c.data.length, c.image.virtualSize] as const;

/** Whether `a` is a smaller case than `b` (see caseWeight). */
export function smaller(a: Case, b: Case): boolean {
  const [x, y] = [caseWeight(a), caseWeight(b)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! < y[i]!;
  return false;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** "1 step, 2 data operations": the size of a case, as reports and the index say it. */
export const caseSizeText = (c: { steps: number; dataOps: number }) =>
  `${plural(c.steps, 'step')}, ${plural(c.dataOps, 'data operation')}`;

/** Thrown for a case that is not well-formed, e.g. from a damaged report. */
export class CaseFormatError extends Error {}

type Fail = (field: string, why: string) => never;

/** Checks a backing level (and the levels below it) where `field` names it; `depth` counts from
 * the image's parent (1). */
export function parseBacking(json: unknown, field: string, fail: Fail, depth: number): BackingSpec {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail(field, 'must be an object');
  const backing = json as Record<string, unknown>;
  const int = (v: unknown, f: string, min: number) =>
    Number.isSafeInteger(v) && (v as number) >= min ? (v as number) : fail(f, `must be an integer >= ${min}`);
  backing.format ??= 'qcow2';
  if (!BACKING_FORMATS.includes(backing.format as BackingFormat))
    fail(`${field}.format`, `must be one of ${BACKING_FORMATS.join(', ')}`);
  if (int(backing.virtualSize, `${field}.virtualSize`, 512) % 512 !== 0)
    fail(`${field}.virtualSize`, 'must be a multiple of 512');
  if (!Array.isArray(backing.data)) fail(`${field}.data`, 'must be an array');
  (backing.data as unknown[]).forEach((d, i) => {
    if (typeof d !== 'object' || d === null) fail(`${field}.data[${i}]`, 'must be an object');
    const w = d as Record<string, unknown>;
    int(w.offset, `${field}.data[${i}].offset`, 0);
    int(w.length, `${field}.data[${i}].length`, 1);
    int(w.pattern, `${field}.data[${i}].pattern`, 0);
  });
  const qcow2Only = ['clusterSize', 'refcountBits'].filter((k) => backing[k] !== undefined && backing[k] !== null);
  if (backing.format !== 'qcow2' && qcow2Only.length > 0) fail(`${field}.${qcow2Only[0]}`, 'is for a qcow2 level only');
  if (backing.format === 'raw' && backing.backing !== undefined && backing.backing !== null)
    fail(`${field}.backing`, 'must be absent: a raw level has no backing file');
  // qemu-img rebase, which retargets an absolute name to each side's files, refuses vmdk
  if (backing.format === 'vmdk' && backing.absolute === true)
    fail(`${field}.absolute`, 'must be absent: a vmdk level is named by a relative path');
  if (backing.clusterSize !== undefined) {
    const cs = int(backing.clusterSize, `${field}.clusterSize`, 512);
    if (!Number.isInteger(Math.log2(cs)) || cs > 2 * 1024 * 1024)
      fail(`${field}.clusterSize`, 'must be a power of two up to 2 MiB');
  }
  if (backing.refcountBits !== undefined && !REFCOUNT_WIDTHS.includes(backing.refcountBits as RefcountBits))
    fail(`${field}.refcountBits`, `must be one of ${REFCOUNT_WIDTHS.join(', ')}`);
  if (backing.directory !== undefined) {
    if (depth !== 1) fail(`${field}.directory`, "must be absent: only the image's parent names the chain's directory");
    if (typeof backing.directory !== 'string' || !/^[\w-]+$/.test(backing.directory))
      fail(`${field}.directory`, 'must be one directory name of letters, digits, _ and -');
  }
  if (backing.absolute !== undefined && typeof backing.absolute !== 'boolean')
    fail(`${field}.absolute`, 'must be true (named by its absolute path) or false');
  if (backing.backing !== undefined && backing.backing !== null) {
    if (depth >= MAX_CHAIN_DEPTH)
      fail(`${field}.backing`, `must be absent: a chain has at most ${MAX_CHAIN_DEPTH + 1} levels`);
    parseBacking(backing.backing, `${field}.backing`, fail, depth + 1);
  }
  return backing as unknown as BackingSpec;
}

/** The formats of images with a backing chain that commit and rebase steps run on. */
export const CHAIN_IMAGE_FORMATS: readonly ImageFormat[] = ['qcow2', 'vmdk'];

/** A qcow2 image's levels are qcow2 or raw; a vmdk image's are vmdk, below a monolithicSparse top
 * (qemu-img create -b makes no other subformat). */
function checkChainFormats(image: Record<string, unknown>, fail: Fail) {
  const levels = chainOf(image as Pick<ImageSpec, 'backing'>);
  const vmdk = image.format === 'vmdk';
  if (image.format !== 'qcow2' && !vmdk) fail('image.backing', `must be null for a ${String(image.format)} image`);
  levels.forEach((level, i) => {
    const field = `image.backing${'.backing'.repeat(i)}.format`;
    if (vmdk && level.format !== 'vmdk') fail(field, 'must be vmdk: a vmdk image has a vmdk chain');
    if (!vmdk && level.format === 'vmdk') fail(field, 'must be qcow2 or raw below a qcow2 image');
  });
  const subformat = (image.options as Record<string, unknown> | undefined)?.subformat;
  if (vmdk && subformat !== 'monolithicSparse')
    fail('image.options.subformat', 'must be monolithicSparse for a vmdk image with a backing file');
}

/** Checks that JSON from a report is a well-formed case; names the first bad field. */
export function parseCase(json: unknown, where = 'case'): Case {
  const fail = (field: string, why: string): never => {
    throw new CaseFormatError(`${where}.${field} ${why}`);
  };
  const obj = (v: unknown, field: string) =>
    typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : fail(field, 'must be an object');
  const int = (v: unknown, field: string, min: number) =>
    Number.isSafeInteger(v) && (v as number) >= min ? (v as number) : fail(field, `must be an integer >= ${min}`);
  const oneOf = (v: unknown, field: string, allowed: readonly unknown[]) => {
    if (!allowed.includes(v)) fail(field, `must be one of ${allowed.join(', ')}`);
  };
  const c = obj(json, '');
  const image = obj(c.image, 'image');
  image.format ??= 'qcow2';
  oneOf(image.format, 'image.format', IMAGE_FORMATS);
  int(image.virtualSize, 'image.virtualSize', 512);
  if (!Number.isInteger(Math.log2(int(image.clusterSize, 'image.clusterSize', 512)))) {
    fail('image.clusterSize', 'must be a power of two');
  }
  oneOf(image.refcountBits, 'image.refcountBits', REFCOUNT_WIDTHS);
  oneOf(image.compat, 'image.compat', ['1.1', '0.10']);
  // fields added after the first reports were filed take their old meaning when missing
  image.compressionType ??= 'zlib';
  image.createdWithRefcountBits ??= null;
  image.bitmaps ??= 0;
  image.dirty ??= false;
  image.backing ??= null;
  image.dataFile ??= 'none';
  image.createdPreallocation ??= 'off';
  image.encrypted ??= false;
  for (const flag of ['lazyRefcounts', 'extendedL2', 'dirty', 'encrypted']) {
    if (typeof image[flag] !== 'boolean') fail(`image.${flag}`, 'must be true or false');
  }
  oneOf(image.compressionType, 'image.compressionType', ['zlib', 'zstd']);
  oneOf(image.createdWithRefcountBits, 'image.createdWithRefcountBits', [null, ...REFCOUNT_WIDTHS]);
  int(image.bitmaps, 'image.bitmaps', 0);
  oneOf(image.dataFile, 'image.dataFile', DATA_FILE_KINDS);
  if (image.dataFile !== 'none' && image.compat !== '1.1') fail('image.dataFile', 'needs compat "1.1"');
  oneOf(image.createdPreallocation, 'image.createdPreallocation', PREALLOCATION_MODES);
  if (image.backing !== null) {
    parseBacking(image.backing, 'image.backing', fail, 1);
    if (image.dataFile === 'data_file_raw') fail('image.dataFile', 'data_file_raw cannot have a backing file');
  }
  if (image.backing !== null) checkChainFormats(image, fail);
  if (image.format !== 'qcow2') {
    for (const [field, value] of Object.entries(RAW_IMAGE)) {
      // a vmdk image may be the top of a vmdk chain (checkChainFormats)
      if (field === 'backing' && image.format === 'vmdk') continue;
      if (image[field] !== value)
        fail(`image.${field}`, `must be ${JSON.stringify(value)} for a ${image.format} image`);
    }
    if (image.format === 'raw' && image.createdPreallocation === 'metadata')
      fail('image.createdPreallocation', 'cannot be metadata for raw');
  }
  const format = image.format as ImageFormat;
  if (isConverted(format)) {
    const options = obj(image.options, 'image.options');
    const allowed = FORMAT_OPTIONS[format];
    for (const [name, value] of Object.entries(options)) {
      const values = allowed[name] ?? fail(`image.options.${name}`, `is not an option of ${format} images`);
      if (values === 'size') int(Number(value), `image.options.${name}`, 1);
      else oneOf(value, `image.options.${name}`, values);
    }
    if (typeof options.subformat !== 'string') fail('image.options.subformat', `must be given for ${format}`);
    if (image.createdPreallocation !== 'off') fail('image.createdPreallocation', `must be off for ${format}`);
  } else if (image.options !== undefined) fail('image.options', `must be absent for ${format}`);
  if (!Array.isArray(c.data)) fail('data', 'must be an array');
  (c.data as unknown[]).forEach((d, i) => {
    const op = obj(d, `data[${i}]`);
    if (format !== 'qcow2') oneOf(op.op, `data[${i}].op of a ${format} image`, RAW_DATA_OPS);
    if (op.op === 'damage') {
      if (format !== 'qcow2') fail(`data[${i}].op`, 'damage is written into qcow2 images only');
      oneOf(op.kind, `data[${i}].kind`, DAMAGE_KINDS);
      int(op.pick, `data[${i}].pick`, 0);
      return;
    }
    if (op.op === 'bitmap-add') {
      if (typeof op.name !== 'string' || !/^\w+$/.test(op.name))
        fail(`data[${i}].name`, 'must be a bitmap name of letters, digits and _');
      if (op.granularity !== null) int(op.granularity, `data[${i}].granularity`, 512);
      oneOf(op.enabled, `data[${i}].enabled`, [true, false]);
      return;
    }
    if (op.op === 'snapshot-create' || op.op === 'snapshot-delete') {
      if (typeof op.name !== 'string' || !/^\w+$/.test(op.name)) {
        fail(`data[${i}].name`, 'must be a snapshot name of letters, digits and _');
      }
      return;
    }
    oneOf(op.op, `data[${i}].op`, ['write', 'zero', 'discard', 'compress', 'snapshot-create', 'snapshot-delete']);
    int(op.offset, `data[${i}].offset`, 0);
    int(op.length, `data[${i}].length`, 1);
    if (op.op === 'write' || op.op === 'compress') int(op.pattern, `data[${i}].pattern`, 0);
  });
  if (!Array.isArray(c.steps) || c.steps.length === 0) fail('steps', 'must be a non-empty array');
  (c.steps as unknown[]).forEach((s, i) => {
    const step = obj(s, `steps[${i}]`);
    const stepFail = (field: string, why: string): never => fail(`steps[${i}].${field}`, why);
    oneOf(step.op ?? 'resize', `steps[${i}].op`, OPERATION_NAMES);
    if (step.output !== undefined) oneOf(step.output, `steps[${i}].output`, OUTPUT_MODES);
    if (step.op === 'commit' || step.op === 'rebase') {
      if (!CHAIN_IMAGE_FORMATS.includes(format))
        fail(
          `steps[${i}].op`,
          `${step.op} is run on ${CHAIN_IMAGE_FORMATS.join(' and ')} images, not on ${format} ones`,
        );
      if (step.op === 'commit') parseCommitStep(step, stepFail);
      else parseRebaseStep(step, stepFail, (b, field) => parseBacking(b, `steps[${i}].${field}`, fail, 1));
      return;
    }
    if (step.op === 'amend' || step.op === 'snapshot' || step.op === 'repair' || step.op === 'bitmap') {
      if (format !== 'qcow2') fail(`steps[${i}].op`, `${step.op} is a qcow2 operation, not one of ${format} images`);
      if (step.op === 'amend') parseAmendStep(step, stepFail);
      else if (step.op === 'snapshot') parseSnapshotStep(step, stepFail);
      else if (step.op === 'bitmap') {
        parseBitmapStep(step, stepFail);
      } else parseRepairStep(step, stepFail);
      return;
    }
    if (typeof step.size !== 'string' || step.size === '') fail(`steps[${i}].size`, 'must be a non-empty string');
    if (typeof step.shrink !== 'boolean') fail(`steps[${i}].shrink`, 'must be true or false');
    oneOf(step.preallocation, `steps[${i}].preallocation`, [null, ...PREALLOCATION_MODES]);
    if (step.output !== undefined) oneOf(step.output, `steps[${i}].output`, OUTPUT_MODES);
    if (step.key !== undefined) oneOf(step.key, `steps[${i}].key`, [true, false]);
    if (step.key === true && image.encrypted !== true) fail(`steps[${i}].key`, 'needs an encrypted image');
  });
  if (damageUnrepaired(json as Case)) fail('steps[0]', 'must be a repair: the data ends with damage');
  if (writesBeforeFirstStep(json as Case))
    fail('steps[0].writes', 'must be empty: write into the base image with data operations');
  return json as Case;
}

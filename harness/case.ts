// A case is the one currency of the harness: plain JSON that fully describes the base image, the
// data written into it and the resize steps. Everything downstream (execution, oracles, reports,
// replay, repro scripts) is derived from it and from nothing else.

export const REFCOUNT_WIDTHS = [1, 2, 4, 8, 16, 32, 64] as const;
export type RefcountBits = (typeof REFCOUNT_WIDTHS)[number];
export const PREALLOCATION_MODES = ['off', 'metadata', 'falloc', 'full'] as const;
export type Preallocation = (typeof PREALLOCATION_MODES)[number];

export interface ImageSpec {
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
  /** A qcow2 backing image (`-b backing.qcow2 -F qcow2`), shorter or longer than the image, with
   * data of its own that reads through where the image has none; null: no backing file. */
  backing: BackingSpec | null;
  /** An external data file (`data_file=data.raw`), with `data_file_raw=on` or without. */
  dataFile: DataFileKind;
}

export const DATA_FILE_KINDS = ['none', 'data_file', 'data_file_raw'] as const;
export type DataFileKind = (typeof DATA_FILE_KINDS)[number];

export interface BackingSpec {
  /** Virtual size of the backing image in bytes, a multiple of 512, different from the image's. */
  virtualSize: number;
  /** Pattern writes into the backing image before the image is created over it. */
  data: { offset: number; length: number; pattern: number }[];
}

/** One command that fills the base image. Offsets and lengths are bytes, multiples of 512. */
export type DataOp =
  | { op: 'write'; offset: number; length: number; pattern: number }
  | { op: 'zero'; offset: number; length: number }
  | { op: 'discard'; offset: number; length: number }
  /** A compressed write: whole clusters only, cluster-aligned. */
  | { op: 'compress'; offset: number; length: number; pattern: number }
  /** Internal snapshots (`qemu-img snapshot -c/-d`): shared clusters, refcounts above 1. */
  | { op: 'snapshot-create'; name: string }
  | { op: 'snapshot-delete'; name: string };

export type IoOp = Extract<DataOp, { offset: number }>;
const isIoOp = (op: DataOp): op is IoOp => 'offset' in op;

export interface ResizeStep {
  /** SIZE exactly as both tools get it on their command lines: "8388608", "8M", "+1536K", "-512". */
  size: string;
  shrink: boolean;
  /** null: no --preallocation option at all. */
  preallocation: Preallocation | null;
}

export interface Case {
  image: ImageSpec;
  data: DataOp[];
  steps: ResizeStep[];
}

/** Guest ranges where qemu shows old bytes again after the steps up to `step`: a shrink to a size
 * inside a cluster keeps that cluster whole, and a later grow makes the rest of it readable
 * (a qemu quirk, see the reference notes). One range per such shrink, to the end of its cluster. */
export function regrowWindows(c: Case, step: number): { start: number; end: number }[] {
  const plans = plannedSizes(c).slice(0, step + 1).map((p) => p.plan);
  const cs = c.image.clusterSize;
  return plans.flatMap((p, j) => {
    const s = p.target;
    if (p.kind !== 'shrink' || !p.accepted || s === null || s % cs === 0) return [];
    const regrown = plans.slice(j + 1).some((q) => q.accepted && q.target !== null && q.target > s);
    return regrown ? [{ start: s, end: Math.ceil(s / cs) * cs }] : [];
  });
}

/** How many internal snapshots the base image ends up with. */
export const liveSnapshots = (c: Case) => c.data.reduce((n, op) => n + (op.op === 'snapshot-create' ? 1 : op.op === 'snapshot-delete' ? -1 : 0), 0);

/** Entries per L2 table times the cluster size: the guest range one L2 table maps. */
export function l2Coverage(clusterSize: number, extendedL2: boolean): number {
  return clusterSize * (clusterSize / (extendedL2 ? 16 : 8));
}

/** What qemu's rules say a step is, given the size before it. Used for registry predicates and
 * coverage; never as an oracle (the oracle is what qemu-img actually does). */
export type StepKind = 'grow' | 'shrink' | 'same' | 'invalid';

export interface StepPlan {
  kind: StepKind;
  /** The requested new size in bytes, or null when SIZE does not parse. */
  target: number | null;
  /** Whether qemu-img is expected to accept it. */
  accepted: boolean;
}

const SUFFIXES: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50, E: 2 ** 60 };

/** Parses SIZE the way qemu-img does: optional sign, a number (fractions need a suffix), a suffix. */
export function parseSize(size: string, current: number): number | null {
  const m = /^([+-]?)(\d+(?:\.\d+)?)([bBkKmMgGtTpPeE]?)$/.exec(size);
  if (!m) return null;
  const [, sign, num, suffix] = m as unknown as [string, string, string, string];
  if (num.includes('.') && (suffix === '' || suffix.toUpperCase() === 'B')) return null;
  const bytes = Number(num) * SUFFIXES[suffix.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes)) return null;
  if (sign === '+') return current + bytes;
  if (sign === '-') return current - bytes;
  return bytes;
}

export function planStep(step: ResizeStep, current: number): StepPlan {
  const target = parseSize(step.size, current);
  if (target === null || target <= 0 || target % 512 !== 0) return { kind: 'invalid', target, accepted: false };
  const prealloc = step.preallocation !== null && step.preallocation !== 'off';
  if (target === current) return { kind: 'same', target, accepted: !prealloc };
  if (target > current) return { kind: 'grow', target, accepted: true };
  return { kind: 'shrink', target, accepted: step.shrink && !prealloc };
}

/** The virtual size before each step, assuming qemu's rules decide acceptance. */
export function plannedSizes(c: Case): { before: number; plan: StepPlan }[] {
  let current = c.image.virtualSize;
  return c.steps.map((step) => {
    const plan = planStep(step, current);
    const before = current;
    if (plan.accepted && plan.target !== null) current = plan.target;
    return { before, plan };
  });
}

export function createOptions(image: ImageSpec): string {
  const opts = [`cluster_size=${image.clusterSize}`, `refcount_bits=${image.createdWithRefcountBits ?? image.refcountBits}`, `compat=${image.compat}`];
  if (image.lazyRefcounts) opts.push('lazy_refcounts=on');
  if (image.extendedL2) opts.push('extended_l2=on');
  if (image.compressionType === 'zstd') opts.push('compression_type=zstd');
  if (image.dataFile !== 'none') opts.push(`data_file=${DATA_FILE}`);
  if (image.dataFile === 'data_file_raw') opts.push('data_file_raw=on');
  return opts.join(',');
}

/** The backing image and the external data file, as the image names them: next to the image. */
export const BACKING = 'backing.qcow2';
export const DATA_FILE = 'data.raw';

/** Where one side's files live: its directory (relative to the case's work directory; '.' for the
 * work directory itself) and its image in there. Every command on that side runs with its
 * directory as the working directory and names the image relative to it. */
export interface SideFiles {
  dir: string;
  image: string;
}

/** The files of a case, relative to its work directory.
 *
 * qemu-img 7.2 resolves a relative backing file name against the image's directory, but a relative
 * `data_file` name against the working directory of the process (verified: from another directory
 * `qemu-img check DIR/img.qcow2` fails with "Could not open 'data.raw'"). Each side needs its own
 * data file (a resize truncates or extends it), and the name stored in the header is the same in
 * each copy of the image. So with a data file each side gets a directory of its own (base/,
 * reference/, subject/) holding its image, its data file and its copy of the backing image, and
 * every command on a side runs in that side's directory, where both resolutions agree; the one
 * command on both sides at once, `qemu-img compare`, names each data file explicitly
 * (compareArgs). Without a data file all files stay in the work directory, as before: the backing
 * image is only ever opened read-only by qemu-img resize, check, compare and qemu-io (verified),
 * so both sides share it. */
export interface Layout {
  base: SideFiles;
  reference: SideFiles;
  subject: SideFiles;
  /** The backing image, relative to each side's directory, or null. */
  backing: string | null;
  /** The data file, relative to each side's directory, or null. */
  dataFile: string | null;
}

export const hasOwnDirectories = (c: Case) => c.image.dataFile !== 'none';

export function layoutOf(c: Case): Layout {
  const own = hasOwnDirectories(c);
  const side = (name: 'base' | 'reference' | 'subject'): SideFiles => ({ dir: own ? name : '.', image: `${name}.qcow2` });
  return { base: side('base'), reference: side('reference'), subject: side('subject'), backing: c.image.backing ? BACKING : null, dataFile: own ? DATA_FILE : null };
}

/** A side's image relative to the work directory. */
export const imagePath = (s: SideFiles) => (s.dir === '.' ? s.image : `${s.dir}/${s.image}`);

/** `qemu-img compare` of the two results, run in the work directory. With a data file each image
 * names its own through --image-opts; the backing file resolves against the image either way. */
export function compareArgs(layout: Layout): string[] {
  const { reference: r, subject: s, dataFile } = layout;
  if (dataFile === null) return ['compare', '-f', 'qcow2', '-F', 'qcow2', imagePath(r), imagePath(s)];
  const opts = (side: SideFiles) => `driver=qcow2,file.filename=${imagePath(side)},data-file.filename=${side.dir}/${dataFile}`;
  return ['compare', '--image-opts', opts(r), opts(s)];
}

/** One command of the base image's build. */
export interface BuildCommand {
  program: 'qemu-img' | 'qemu-io';
  args: string[];
  /** 'abort': the command is meant to die by SIGABRT (it leaves the image dirty). */
  expect: 'ok' | 'abort';
  what: string;
}

const io = (commands: string[], file: string): string[] => ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file];

/** Every command that builds the base image, in order: the single source for execution, repro
 * scripts and tests. They run in the base image's directory (layoutOf(c).base.dir), where they
 * also make the backing image (BACKING) and the data file (DATA_FILE) when the case has them.
 * Consecutive qemu-io operations share one qemu-io run. */
export function buildCommands(c: Case, file: string): BuildCommand[] {
  const { image } = c;
  const out: BuildCommand[] = [];
  const backing: string[] = [];
  if (image.backing) {
    const { virtualSize, data } = image.backing;
    out.push({ program: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', BACKING, String(virtualSize)], expect: 'ok', what: 'qemu-img create (backing image)' });
    if (data.length > 0) out.push({ program: 'qemu-io', args: io(data.map((d) => qemuIoCommand({ op: 'write', ...d })), BACKING), expect: 'ok', what: 'qemu-io (backing image)' });
    backing.push('-b', BACKING, '-F', 'qcow2');
  }
  out.push({ program: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', '-o', createOptions(image), ...backing, file, String(image.virtualSize)], expect: 'ok', what: 'qemu-img create' });
  let pending: string[] = [];
  const flush = () => {
    if (pending.length) out.push({ program: 'qemu-io', args: io(pending, file), expect: 'ok', what: 'qemu-io' });
    pending = [];
  };
  for (const op of c.data) {
    if (isIoOp(op)) {
      pending.push(qemuIoCommand(op));
      continue;
    }
    flush();
    const flag = op.op === 'snapshot-create' ? '-c' : '-d';
    out.push({ program: 'qemu-img', args: ['snapshot', flag, op.name, file], expect: 'ok', what: `qemu-img snapshot ${flag}` });
  }
  flush();
  for (let i = 0; i < image.bitmaps; i++) out.push({ program: 'qemu-img', args: ['bitmap', '-f', 'qcow2', '--add', file, `bitmap${i}`], expect: 'ok', what: 'qemu-img bitmap --add' });
  if (image.createdWithRefcountBits !== null) {
    out.push({ program: 'qemu-img', args: ['amend', '-f', 'qcow2', '-o', `refcount_bits=${image.refcountBits}`, file], expect: 'ok', what: 'qemu-img amend' });
  }
  if (image.dirty) out.push({ program: 'qemu-io', args: io(['write -q -P 17 0 512', 'abort'], file), expect: 'abort', what: 'qemu-io (aborted, leaving the dirty bit)' });
  return out;
}

/** A qemu-io command for a data operation. -q leaves out qemu-io's I/O statistics (bytes per
 * second), which differ from run to run and would make reports of the same case differ. */
export function qemuIoCommand(op: IoOp): string {
  switch (op.op) {
    case 'write':
      return `write -q -P ${op.pattern} ${op.offset} ${op.length}`;
    case 'zero':
      return `write -q -z ${op.offset} ${op.length}`;
    case 'discard':
      return `discard -q ${op.offset} ${op.length}`;
    case 'compress':
      return `write -q -c -P ${op.pattern} ${op.offset} ${op.length}`;
  }
}

export function referenceResizeArgs(step: ResizeStep, file: string): string[] {
  const args = ['resize', '-f', 'qcow2'];
  if (step.shrink) args.push('--shrink');
  if (step.preallocation !== null) args.push(`--preallocation=${step.preallocation}`);
  return [...args, file, step.size];
}

export function instarResizeArgs(step: ResizeStep, file: string): string[] {
  const args = ['resize', '-f', 'qcow2'];
  if (step.shrink) args.push('--shrink');
  if (step.preallocation !== null) args.push('--preallocation', step.preallocation);
  return [...args, file, step.size];
}

/** Thrown for a case that is not well-formed, e.g. from a damaged report. */
export class CaseFormatError extends Error {}

/** Checks that JSON from a report is a well-formed case; names the first bad field. */
export function parseCase(json: unknown, where = 'case'): Case {
  const fail = (field: string, why: string): never => {
    throw new CaseFormatError(`${where}.${field} ${why}`);
  };
  const obj = (v: unknown, field: string) => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : fail(field, 'must be an object'));
  const int = (v: unknown, field: string, min: number) => (Number.isSafeInteger(v) && (v as number) >= min ? (v as number) : fail(field, `must be an integer >= ${min}`));
  const c = obj(json, '');
  const image = obj(c.image, 'image');
  int(image.virtualSize, 'image.virtualSize', 512);
  if (!Number.isInteger(Math.log2(int(image.clusterSize, 'image.clusterSize', 512)))) fail('image.clusterSize', 'must be a power of two');
  if (!REFCOUNT_WIDTHS.includes(image.refcountBits as RefcountBits)) fail('image.refcountBits', `must be one of ${REFCOUNT_WIDTHS.join(', ')}`);
  if (image.compat !== '1.1' && image.compat !== '0.10') fail('image.compat', 'must be "1.1" or "0.10"');
  // fields added after the first reports were filed take their old meaning when missing
  image.compressionType ??= 'zlib';
  image.createdWithRefcountBits ??= null;
  image.bitmaps ??= 0;
  image.dirty ??= false;
  image.backing ??= null;
  image.dataFile ??= 'none';
  for (const flag of ['lazyRefcounts', 'extendedL2', 'dirty']) if (typeof image[flag] !== 'boolean') fail(`image.${flag}`, 'must be true or false');
  if (image.compressionType !== 'zlib' && image.compressionType !== 'zstd') fail('image.compressionType', 'must be "zlib" or "zstd"');
  if (image.createdWithRefcountBits !== null && !REFCOUNT_WIDTHS.includes(image.createdWithRefcountBits as RefcountBits)) fail('image.createdWithRefcountBits', `must be null or one of ${REFCOUNT_WIDTHS.join(', ')}`);
  int(image.bitmaps, 'image.bitmaps', 0);
  if (!DATA_FILE_KINDS.includes(image.dataFile as DataFileKind)) fail('image.dataFile', `must be one of ${DATA_FILE_KINDS.join(', ')}`);
  if (image.dataFile !== 'none' && image.compat !== '1.1') fail('image.dataFile', 'needs compat "1.1"');
  if (image.backing !== null) {
    const backing = obj(image.backing, 'image.backing');
    if (int(backing.virtualSize, 'image.backing.virtualSize', 512) % 512 !== 0) fail('image.backing.virtualSize', 'must be a multiple of 512');
    if (!Array.isArray(backing.data)) fail('image.backing.data', 'must be an array');
    (backing.data as unknown[]).forEach((d, i) => {
      const w = obj(d, `image.backing.data[${i}]`);
      int(w.offset, `image.backing.data[${i}].offset`, 0);
      int(w.length, `image.backing.data[${i}].length`, 1);
      int(w.pattern, `image.backing.data[${i}].pattern`, 0);
    });
    if (image.dataFile === 'data_file_raw') fail('image.dataFile', 'data_file_raw cannot have a backing file');
  }
  if (!Array.isArray(c.data)) fail('data', 'must be an array');
  (c.data as unknown[]).forEach((d, i) => {
    const op = obj(d, `data[${i}]`);
    if (op.op === 'snapshot-create' || op.op === 'snapshot-delete') {
      if (typeof op.name !== 'string' || !/^\w+$/.test(op.name)) fail(`data[${i}].name`, 'must be a snapshot name of letters, digits and _');
      return;
    }
    if (!['write', 'zero', 'discard', 'compress'].includes(op.op as string)) fail(`data[${i}].op`, 'must be write, zero, discard, compress, snapshot-create or snapshot-delete');
    int(op.offset, `data[${i}].offset`, 0);
    int(op.length, `data[${i}].length`, 1);
    if (op.op === 'write' || op.op === 'compress') int(op.pattern, `data[${i}].pattern`, 0);
  });
  if (!Array.isArray(c.steps) || c.steps.length === 0) fail('steps', 'must be a non-empty array');
  (c.steps as unknown[]).forEach((s, i) => {
    const step = obj(s, `steps[${i}]`);
    if (typeof step.size !== 'string' || step.size === '') fail(`steps[${i}].size`, 'must be a non-empty string');
    if (typeof step.shrink !== 'boolean') fail(`steps[${i}].shrink`, 'must be true or false');
    if (step.preallocation !== null && !PREALLOCATION_MODES.includes(step.preallocation as Preallocation)) fail(`steps[${i}].preallocation`, `must be null or one of ${PREALLOCATION_MODES.join(', ')}`);
  });
  return json as Case;
}

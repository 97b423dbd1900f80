import {
  chainOf,
  isConverted,
  opOf,
  type BackingSpec,
  isIoOp,
  type Case,
  type ConvertedFormat,
  type ImageFormat,
  type ImageSpec,
  type IoOp,
  type OutputMode,
  type ResizeStep,
} from './case.ts';
import type { StepKind } from './plan.ts';
import { chainLinks, CWD, DATA_FILE, imagePath, storedLinkName, type Layout, type SideFiles } from './layout.ts';

// Every command line the harness runs for a case, derived from the case alone: the single source
// for execution, repro scripts and tests. And what running one command leaves behind.

/** One command of the base image's build. */
export interface BuildCommand {
  program: 'qemu-img' | 'qemu-io';
  args: string[];
  /** 'abort': the command is meant to die by SIGABRT (it leaves the image dirty). */
  expect: 'ok' | 'abort';
  what: string;
  /** qemu may fail it for a passing reason (TRANSIENT_FAILURE): it is tried up to BUILD_ATTEMPTS times. */
  retried?: boolean;
  /** The internal snapshot it creates, for a harness that keeps the guest content it names. */
  creates?: string;
}

/** A LUKS create measures qemu's PBKDF speed on the thread's CPU clock, and qemu 7.2 gives up when
 * that clock did not advance during the first measurement: 3 creates in 24 on a 2-core machine with
 * two at a time (qemu 10.0 no longer gives up). A new try passes. */
export const TRANSIENT_FAILURE = /Unable to get accurate CPU usage/;
export const BUILD_ATTEMPTS = 5;

interface Ran {
  exitCode?: number | null | undefined;
  signal?: string | null | undefined;
  stderr: string;
}

/** Runs one build command through `run`, again while it fails transiently, and says whether it did
 * what it is meant to (an 'abort' command must die by SIGABRT). */
export async function runBuildCommand<R extends Ran>(
  cmd: BuildCommand,
  run: () => Promise<R>,
): Promise<{ result: R; ok: boolean }> {
  for (let attempt = 1; ; attempt++) {
    const result = await run();
    const ok = cmd.expect === 'abort' ? result.signal === 'SIGABRT' : result.exitCode === 0;
    if (ok || !cmd.retried || attempt === BUILD_ATTEMPTS || !TRANSIENT_FAILURE.test(result.stderr))
      return { result, ok };
  }
}

/** The key of every encrypted image the harness makes, as a qemu secret object (`--object`). It is
 * fixed, so that repro.sh and every later command can open the image; a resizer that needs no key
 * (instar resizes the metadata only) never sees it. */
export const ENCRYPTION_KEY = 'instar-fuzz';
export const KEY_SECRET_ID = 'key0';
export const KEY_OBJECT = ['--object', `secret,id=${KEY_SECRET_ID},data=${ENCRYPTION_KEY}`];

/** How qemu-img and qemu-io are told which image to open: `-f FORMAT` and FILE, or with the key,
 * the secret object, `--image-opts` and options naming both (qemu opens an encrypted image only
 * with its key; `qemu-img info` needs none). Commas in the file name are doubled (QemuOpts quoting). */
export function openImage(
  file: string,
  image: Pick<ImageSpec, 'format'>,
  withKey: boolean,
): { options: string[]; image: string } {
  if (!withKey) return { options: ['-f', image.format], image: file };
  return { options: [...KEY_OBJECT, '--image-opts'], image: qcow2ImageOpts(file, null, true) };
}

const KEY_OPTION = `encrypt.key-secret=${KEY_SECRET_ID}`;

/** The `--image-opts` string of a qcow2 image: its file, its data file and its key where given. */
function qcow2ImageOpts(file: string, dataFile: string | null, withKey: boolean): string {
  const quote = (name: string) => name.replace(/,/g, ',,');
  return [
    `driver=qcow2,file.filename=${quote(file)}`,
    ...(dataFile === null ? [] : [`data-file.filename=${quote(dataFile)}`]),
    ...(withKey ? [KEY_OPTION] : []),
  ].join(',');
}

/** The `qemu-img create -o` options of an image ('' for a raw one created without preallocation). */
export function createOptions(image: ImageSpec): string {
  if (image.options) return optionsText(image.options);
  if (image.format === 'raw')
    return image.createdPreallocation === 'off' ? '' : `preallocation=${image.createdPreallocation}`;
  const opts = [
    `cluster_size=${image.clusterSize}`,
    `refcount_bits=${image.createdWithRefcountBits ?? image.refcountBits}`,
    `compat=${image.compat}`,
  ];
  if (image.lazyRefcounts) opts.push('lazy_refcounts=on');
  if (image.extendedL2) opts.push('extended_l2=on');
  if (image.compressionType === 'zstd') opts.push('compression_type=zstd');
  if (image.dataFile !== 'none') opts.push(`data_file=${DATA_FILE}`);
  if (image.dataFile === 'data_file_raw') opts.push('data_file_raw=on');
  if (image.createdPreallocation !== 'off') opts.push(`preallocation=${image.createdPreallocation}`);
  // iter-time: milliseconds of PBKDF per key slot open, 2 s by default; qemu still spends about
  // 1.7 s of every such create measuring its PBKDF speed
  if (image.encrypted) opts.push(`encrypt.format=luks,${KEY_OPTION},encrypt.iter-time=10`);
  return opts.join(',');
}

const optionsText = (options: Record<string, string>) =>
  Object.entries(options)
    .map(([name, value]) => `${name}=${value}`)
    .join(',');

/** The raw image a vhdx, vmdk or vpc base image is converted from (next to it): qemu-io cannot
 * write a streamOptimized vmdk out of order, and one way of building serves all three. */
export const CONVERT_SOURCE = 'build.raw';

/** qemu-io running `commands` on an image, given the key when it is encrypted. */
export function qemuIoArgs(commands: string[], file: string, spec: Pick<ImageSpec, 'format' | 'encrypted'>): string[] {
  const { options, image } = openImage(file, spec, spec.encrypted);
  return [...options, ...commands.flatMap((c) => ['-c', c]), image];
}

/** Every command that builds the base image, in order. They run in the base image's directory
 * (caseLayout(c).base.dir), where they also make the backing image (BACKING) and the data file
 * when the case has them. Consecutive qemu-io operations share one qemu-io run. */
export function buildCommands(c: Case, file: string): BuildCommand[] {
  const { image } = c;
  // a vmdk with a backing file is created over it and written by qemu-io like a qcow2 image
  if (isConverted(image.format) && image.backing === null) return convertedBuild(c, file, image.format);
  // the chain below the image, deepest level first: each level is created over the one below
  const levels = chainOf(image);
  const links = chainLinks(levels);
  const out: BuildCommand[] = [];
  for (let i = levels.length - 1; i >= 0; i--)
    out.push(
      ...levelCommands(
        levels[i]!,
        links[i]!.path,
        i + 1 < levels.length ? storedLinkName(levels, i + 1) : null,
        'backing image',
      ),
    );
  const backing = levels.length > 0 ? ['-b', storedLinkName(levels, 0), '-F', levels[0]!.format] : [];
  const key = image.encrypted ? KEY_OBJECT : [];
  const io = (commands: string[]) => qemuIoArgs(commands, file, image);
  // how qemu-img's other commands name the image: -f qcow2 (which `qemu-img snapshot` lacks) or its key
  const { options, image: name } = openImage(file, image, image.encrypted);
  const created = createOptions(image);
  out.push({
    program: 'qemu-img',
    args: [
      'create',
      '-q',
      ...key,
      '-f',
      image.format,
      ...(created === '' ? [] : ['-o', created]),
      ...backing,
      file,
      String(image.virtualSize),
    ],
    expect: 'ok',
    what: 'qemu-img create',
    retried: image.encrypted,
  });
  let pending: string[] = [];
  const flush = () => {
    if (pending.length) out.push({ program: 'qemu-io', args: io(pending), expect: 'ok', what: 'qemu-io' });
    pending = [];
  };
  for (const op of c.data) {
    if (isIoOp(op)) {
      pending.push(qemuIoCommand(op));
      continue;
    }
    // damage is written by the harness once the build is done (operations/repair/damage.ts)
    if (op.op === 'damage') continue;
    flush();
    if (op.op === 'bitmap-add') {
      const how = [
        ...(op.granularity === null ? [] : ['-g', String(op.granularity)]),
        ...(op.enabled ? [] : ['--disable']),
      ];
      const args = ['bitmap', '--add', ...how, ...options, name, op.name];
      out.push({ program: 'qemu-img', args, expect: 'ok', what: 'qemu-img bitmap --add' });
      continue;
    }
    const flag = op.op === 'snapshot-create' ? '-c' : '-d';
    out.push({
      program: 'qemu-img',
      args: ['snapshot', ...(image.encrypted ? options : []), flag, op.name, name],
      expect: 'ok',
      what: `qemu-img snapshot ${flag}`,
      ...(op.op === 'snapshot-create' ? { creates: op.name } : {}),
    });
  }
  flush();
  for (let i = 0; i < image.bitmaps; i++) {
    const args = ['bitmap', ...options, '--add', name, `bitmap${i}`];
    out.push({ program: 'qemu-img', args, expect: 'ok', what: 'qemu-img bitmap --add' });
  }
  if (image.createdWithRefcountBits !== null) {
    const args = ['amend', ...options, '-o', `refcount_bits=${image.refcountBits}`, name];
    out.push({ program: 'qemu-img', args, expect: 'ok', what: 'qemu-img amend' });
  }
  // the images rebase steps rebase onto, beside the chain
  c.steps.forEach((step) => {
    const r = step as { op?: string; backing?: string; newBacking?: BackingSpec };
    if (opOf(step) === 'rebase' && r.newBacking && r.backing)
      out.push(...levelCommands(r.newBacking, r.backing, null, 'new backing image'));
  });
  if (image.dirty) {
    out.push({
      program: 'qemu-io',
      // with lazy refcounts the dirty bit is set by the first refcount change: the discard frees
      // the first cluster if it holds data, the write allocates it if not; either changes one
      args: io([`discard -q 0 ${Math.min(image.clusterSize, image.virtualSize)}`, 'write -q -P 17 0 512', 'abort']),
      expect: 'abort',
      what: 'qemu-io (aborted, leaving the dirty bit)',
    });
  }
  return out;
}

/** The commands that make a side's copy of the chain name its own files, run in the side's
 * directory after the copy: each link named by its absolute path (the base's) rewritten to the
 * side's with qemu-img rebase -u, which touches nothing but the name. */
export function retargetCommands(c: Case, image: string): BuildCommand[] {
  const levels = chainOf(c.image);
  const links = chainLinks(levels);
  return levels.flatMap((level, i) => {
    if (!level.absolute) return [];
    const holder = i === 0 ? image : links[i - 1]!.path;
    const args = ['rebase', '-u', '-f', 'qcow2', '-b', `${CWD}/${links[i]!.path}`, '-F', level.format, holder];
    return [{ program: 'qemu-img', args, expect: 'ok', what: 'qemu-img rebase -u (the absolute backing name)' }];
  });
}

/** One level of a chain (or a rebase's new backing): created over the level below it, if any,
 * with its own cluster size and refcount width, then its data written. */
function levelCommands(level: BackingSpec, file: string, below: string | null, what: string): BuildCommand[] {
  const { format, virtualSize, data } = level;
  const options =
    format === 'qcow2' && (level.clusterSize !== undefined || level.refcountBits !== undefined)
      ? ['-o', `cluster_size=${level.clusterSize ?? 65536},refcount_bits=${level.refcountBits ?? 16}`]
      : [];
  const over = below === null ? [] : ['-b', below, '-F', level.backing!.format];
  const out: BuildCommand[] = [
    {
      program: 'qemu-img',
      args: ['create', '-q', '-f', format, ...options, ...over, file, String(virtualSize)],
      expect: 'ok',
      what: `qemu-img create (${what})`,
    },
  ];
  if (data.length > 0) {
    const writes = data.map((d) => qemuIoCommand({ op: 'write', ...d }));
    out.push({
      program: 'qemu-io',
      args: ['-f', format, ...writes.flatMap((w) => ['-c', w]), file],
      expect: 'ok',
      what: `qemu-io (${what})`,
    });
  }
  return out;
}

/** A vhdx, vmdk or vpc base image: its data written into a raw image, converted with its options. */
function convertedBuild(c: Case, file: string, format: ConvertedFormat): BuildCommand[] {
  const out: BuildCommand[] = [
    {
      program: 'qemu-img',
      args: ['create', '-q', '-f', 'raw', CONVERT_SOURCE, String(c.image.virtualSize)],
      expect: 'ok',
      what: 'qemu-img create (raw source)',
    },
  ];
  const writes = c.data.filter(isIoOp).map(qemuIoCommand);
  if (writes.length > 0) {
    const args = qemuIoArgs(writes, CONVERT_SOURCE, { format: 'raw', encrypted: false });
    out.push({ program: 'qemu-io', args, expect: 'ok', what: 'qemu-io (raw source)' });
  }
  const args = ['convert', '-q', '-f', 'raw', '-O', format, '-o', createOptions(c.image), CONVERT_SOURCE, file];
  out.push({ program: 'qemu-img', args, expect: 'ok', what: `qemu-img convert (to ${format})` });
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

/** A qcow2 (or vmdk) image opened without its backing file, as qemu-img names it (`qemu-img
 * compare` takes no option for that): what the image alone holds. */
export const withoutBacking = (file: string, format: 'qcow2' | 'vmdk' = 'qcow2') =>
  `json:${JSON.stringify({ driver: format, backing: null, file: { driver: 'file', filename: file } })}`;

/** `qemu-img compare` of the two results, run in the work directory. With a data file each image
 * names its own through --image-opts, and an encrypted image's key comes with it the same way; the
 * backing file resolves against the image either way. */
export function compareArgs(layout: Layout, image: Pick<ImageSpec, 'format' | 'encrypted'>): string[] {
  const { reference: r, subject: s, dataFile } = layout;
  const { format, encrypted } = image;
  if (dataFile === null && !encrypted) return ['compare', '-f', format, '-F', format, imagePath(r), imagePath(s)];
  const opts = (side: SideFiles) =>
    qcow2ImageOpts(imagePath(side), dataFile === null ? null : `${side.dir}/${dataFile}`, encrypted);
  return ['compare', ...(encrypted ? KEY_OBJECT : []), '--image-opts', opts(r), opts(s)];
}

/** `qemu-img compare` of two images of the case's format (each named as it is, relative to the
 * directory it runs in), with the key of an encrypted image. */
export function compareFilesArgs(a: string, b: string, image: Pick<ImageSpec, 'format' | 'encrypted'>): string[] {
  if (!image.encrypted) return ['compare', '-f', image.format, '-F', image.format, a, b];
  return ['compare', ...KEY_OBJECT, '--image-opts', qcow2ImageOpts(a, null, true), qcow2ImageOpts(b, null, true)];
}

/** A program that resizes an image in place. The reference is always qemu-img; the subject is
 * instar, or qemu-img again in a control run (where every divergence is a harness bug). */
export interface Resizer {
  /** 'instar' speaks instar's command line; 'qemu-img' speaks qemu-img's. */
  dialect: 'instar' | 'qemu-img';
  program: string;
}

export const qemuImg: Resizer = { dialect: 'qemu-img', program: 'qemu-img' };

/** The resize command line of a step on an image of `format`, in the resizer's dialect. */
export function resizeArgs(resizer: Resizer, step: ResizeStep, file: string, format: ImageFormat): string[] {
  const withKey = step.key === true && resizer.dialect === 'qemu-img';
  const { options, image } = openImage(file, { format }, withKey);
  const args = ['resize', ...options];
  if (step.shrink) args.push('--shrink');
  if (step.preallocation !== null) {
    if (resizer.dialect === 'instar') args.push('--preallocation', step.preallocation);
    else args.push(`--preallocation=${step.preallocation}`);
  }
  const output = outputModeOf(resizer, step);
  if (output === 'json') args.push('--output', 'json');
  if (output === 'quiet') args.push('-q');
  return [...args, image, step.size];
}

/** qemu-img's resize of a step, the reference: always asked for its words, which the subject's
 * human output is compared with. */
export const referenceResizeArgs = (step: ResizeStep, file: string, format: ImageFormat) =>
  resizeArgs(qemuImg, { ...step, output: 'human' }, file, format);

/** The reference of a step as qemu-img commands run one after the other in the reference's
 * directory, stopping at the first that fails; `resize` is the one whose outcome and words are the
 * reference's. One resize for qcow2 and raw. qemu-img resizes no vhdx, vmdk or vpc image, so a grow
 * (or a resize to the same size) of one is qemu-img's resize of the image converted to raw, which
 * is then converted back with the image's own options (`scratch` is the raw file in between, which
 * the caller removes); anything else goes to qemu-img as it is, which refuses it as instar
 * documents refusing a shrink of these formats. */
export function referenceCommands(
  step: ResizeStep,
  file: string,
  image: Pick<ImageSpec, 'format' | 'options'>,
  kind: StepKind,
): { commands: string[][]; resize: number; scratch: string | null } {
  const { format, options } = image;
  if (!isConverted(format) || !options || (kind !== 'grow' && kind !== 'same'))
    return { commands: [referenceResizeArgs(step, file, format)], resize: 0, scratch: null };
  const scratch = `${file}.raw`;
  return {
    commands: [
      ['convert', '-q', '-f', format, '-O', 'raw', file, scratch],
      referenceResizeArgs(step, scratch, 'raw'),
      [
        'convert',
        '-q',
        '-f',
        'raw',
        '-O',
        format,
        '-o',
        optionsText(convertedBackOptions(format, options)),
        scratch,
        file,
      ],
    ],
    resize: 1,
    scratch,
  };
}

/** The options a resized vhdx, vmdk or vpc is converted back with: its own, and for vpc
 * force_size=on, since a resize sets the size asked for (instar rewrites the footer's current
 * size, and qemu reads it as the size of an image its CHS geometry does not name). */
const convertedBackOptions = (format: ConvertedFormat, options: Record<string, string>) =>
  format === 'vpc' ? { ...options, force_size: 'on' } : options;

/** What a resizer is asked to print for a step: qemu-img has no JSON, so a control run's subject
 * prints its words where instar would print JSON. */
export function outputModeOf(resizer: Resizer, step: Pick<ResizeStep, 'output'>): OutputMode {
  const mode = step.output ?? 'human';
  return mode === 'json' && resizer.dialect !== 'instar' ? 'human' : mode;
}

/** A command for a child process. */
export interface CommandRequest {
  file: string;
  args: string[];
  timeoutMs: number;
  cwd?: string;
  env?: Record<string, string>;
}

/** What one child process did. */
export interface CommandRecord {
  argv: string[];
  /** null when the process was killed by a signal or never started. */
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  /** Set when the program could not be started at all (missing, not executable). */
  spawnError: string | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

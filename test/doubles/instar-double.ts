// Test double for `instar resize`: runs `qemu-img resize` underneath and injects the fault named
// by INSTAR_DOUBLE_FAULT (see faults.ts). Lets the harness's oracles be tested where real instar
// (KVM) cannot run. By default it reads SIZE as qemu-img does and refuses only images with a
// backing file or a data file; with INSTAR_DOUBLE_CLI=real it speaks instar's real command line
// (instar-cli.ts): its size grammar, messages, exit codes, refusals and documented behaviours.
import { copyFile, rm, stat } from 'node:fs/promises';
import { execa } from 'execa';
import { openImage } from '../../model/commands.ts';
import { rawVirtualSize } from '../../model/plan.ts';
import { EXT_FEATURE_TABLE, INCOMPAT_DATA_FILE, type Qcow2Header } from '../../qcow2/format.ts';
import { readQcow2Header } from '../../qcow2/reader.ts';
import { CONVERTED, resizeConverted } from './converted.ts';
import { runOperation, type OpContext, type OpHooks } from './ops.ts';
import { BitmapUsage, parseBitmap, runBitmap, type BitmapHooks } from './bitmap-op.ts';
import { chainCommand } from './chain-op.ts';
import { rewriteHeaderExtensions } from '../../qcow2/edit.ts';
import { FAULTS, FAULT_NAMES, type Context, type Fault, type FaultName, type JsonReport } from './faults.ts';
import {
  BACKING_FILE_REFUSAL,
  hasBitmaps,
  instarError,
  instarRefusal,
  instarSize,
  instarTarget,
  UNSUPPORTED_REFUSAL,
} from './instar-cli.ts';

const REAL = process.env.INSTAR_DOUBLE_CLI === 'real';

const USAGE =
  'usage: instar resize [-f FMT] [--shrink] [--preallocation MODE] [-q] [--output human|json] FILENAME [+|-]SIZE';

function die(msg: string, code = 1): never {
  process.stderr.write(REAL ? instarError(msg) : `instar-double: ${msg}\n`);
  process.exit(code);
}

/** A usage error: clap's words and exit 2 in instar's real command line. */
function usage(msg: string): never {
  if (!REAL) die(msg);
  process.stderr.write(`error: ${msg}\n\n${USAGE}\n`);
  process.exit(2);
}

interface ResizeArgs {
  format?: string;
  shrink: boolean;
  preallocation?: string;
  quiet: boolean;
  output: 'human' | 'json';
  filename: string;
  size: string;
}

// Hand-written parser: SIZE may look like an option ("-1M"), so once FILENAME is seen an unknown
// "-..." argument is taken as SIZE instead of being rejected. Known options may appear anywhere.
function parseResizeArgs(args: string[]): ResizeArgs {
  let format: string | undefined, preallocation: string | undefined;
  let shrink = false,
    quiet = false,
    output: 'human' | 'json' = 'human';
  const positional: string[] = [];
  const value = (i: number, name: string): string => args[i] ?? die(`${name} needs a value\n${USAGE}`);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (arg === '-f') format = value(++i, '-f');
    else if (arg === '--shrink') shrink = true;
    else if (arg === '-q') quiet = true;
    else if (arg === '--preallocation') preallocation = value(++i, arg);
    else if (arg.startsWith('--preallocation=')) preallocation = arg.slice('--preallocation='.length);
    else if (arg === '--output' || arg.startsWith('--output=')) {
      const out = arg === '--output' ? value(++i, arg) : arg.slice('--output='.length);
      if (out !== 'human' && out !== 'json') die(`bad --output ${out}\n${USAGE}`);
      output = out;
    } else if (arg === '--object' || arg === '--image-opts') {
      // instar refuses both at the host CLI: an encrypted image cannot be given its key
      die(`${arg} is not yet supported by instar resize`);
    } else if (arg.startsWith('-') && arg !== '-' && positional.length === 0)
      usage(`unexpected argument '${arg}' found`);
    else positional.push(arg);
  }
  const [filename, size] = positional;
  if (positional.length !== 2 || filename === undefined || size === undefined) {
    usage(`expected FILENAME and SIZE\n${USAGE}`);
  }
  return { format, shrink, preallocation, quiet, output, filename, size };
}

// qemu's size syntax: [+|-]N[.F][B|K|M|G|T|P|E], powers of 1024; a fraction needs a real scale.
const SCALE: Record<string, number> = {
  '': 1,
  b: 1,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
  e: 2 ** 60,
};
function requestedSize(arg: string, oldSize: number): number | undefined {
  const m = /^([+-]?)(\d+(?:\.\d+)?)([bkmgtpe]?)$/i.exec(arg);
  if (!m) return undefined;
  const [, sign, num = '', suffix = ''] = m;
  const scale = SCALE[suffix.toLowerCase()] ?? 1;
  if (scale === 1 && !Number.isInteger(Number(num))) return undefined;
  const n = Math.floor(Number(num) * scale);
  return sign === '+' ? oldSize + n : sign === '-' ? oldSize - n : n;
}

/** `instar bitmap`: its usage errors as clap prints them (exit 2), else the operation. */
async function bitmapCommand(argv: string[], hooks: BitmapHooks): Promise<number> {
  try {
    return await runBitmap(parseBitmap(argv), hooks, REAL);
  } catch (err) {
    if (!(err instanceof BitmapUsage)) throw err;
    process.stderr.write(`error: ${err.message}\n\nusage: instar bitmap ...\n`);
    return 2;
  }
}

async function isQcow2(file: string): Promise<boolean> {
  try {
    await readQcow2Header(file);
    return true;
  } catch {
    return false;
  }
}

/** Virtual size as the resize will see it, or undefined if the image cannot be read. */
async function virtualSize(file: string, format: string | undefined): Promise<number | undefined> {
  try {
    if (format === 'qcow2') return (await readQcow2Header(file)).size;
    // as qemu sees a raw file: whole sectors (model/plan.ts rawVirtualSize)
    if (format === 'raw') return rawVirtualSize((await stat(file)).size);
    const info = await execa('qemu-img', ['info', '--output=json', '-U', ...(format ? ['-f', format] : []), file]);
    return (JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'];
  } catch {
    return undefined;
  }
}

function combineFaults(faults: Fault[]): Fault {
  if (faults.length === 1) return faults[0]!;
  const first =
    <K extends 'before' | 'refused' | 'after'>(hook: K) =>
    async (...args: Parameters<NonNullable<Fault[K]>>) => {
      for (const f of faults) {
        const code = await (f[hook] as ((...a: typeof args) => Promise<number | void>) | undefined)?.(...args);
        if (typeof code === 'number') return code;
      }
    };
  const accepts = faults.flatMap((f) => f.accepts ?? []);
  return {
    what: faults.map((f) => f.what).join(' + '),
    accepts,
    before: first('before'),
    refused: first('refused'),
    after: first('after'),
    reword: (m: string, h: Qcow2Header | undefined) => faults.reduce((text, f) => f.reword?.(text, h) ?? text, m),
    json: (r: JsonReport) => faults.reduce((report, f) => f.json?.(report) ?? report, r),
    human: (t: string) => faults.reduce((text, f) => f.human?.(text) ?? text, t),
    convertBack: faults.find((f) => f.convertBack)?.convertBack,
    amend: combineHooks(faults.map((f) => f.amend)),
    snapshot: combineHooks(faults.map((f) => f.snapshot)),
    check: combineHooks(faults.map((f) => f.check)),
    bitmap: faults.find((f) => f.bitmap)?.bitmap,
    chain: faults.find((f) => f.chain)?.chain,
  } as Fault;
}

/** Several faults' hooks of one operation in turn; the first to answer wins. */
function combineHooks(hooks: (OpHooks | undefined)[]): OpHooks {
  const present = hooks.filter((h): h is OpHooks => h !== undefined);
  const first =
    (hook: 'before' | 'after') =>
    async (c: OpContext): Promise<number | void> => {
      for (const h of present) {
        const code = await h[hook]?.(c);
        if (typeof code === 'number') return code;
      }
    };
  return { before: first('before'), after: first('after') };
}

/** instar's documented refusals that the generators reach and qemu-img does not share, in its
 * words: images with a backing file and images with an external data file (see
 * known-divergences.json). A fault may accept some of them, to model an instar that supports them. */
function documentedRefusal(h: Qcow2Header | undefined, fault: Fault): string | undefined {
  if (!h) return undefined;
  if (h.backingFileOffset > 0 && !fault.accepts?.includes('backing-file')) return BACKING_FILE_REFUSAL;
  if (h.incompatibleFeatures & INCOMPAT_DATA_FILE && !fault.accepts?.includes('data-file')) return UNSUPPORTED_REFUSAL;
  return undefined;
}

async function main(): Promise<number> {
  // several faults at once: "a+b" applies each hook in turn; the first to answer wins
  const name = process.env.INSTAR_DOUBLE_FAULT ?? 'none';
  const parts = name.split('+');
  for (const part of parts)
    if (!(FAULT_NAMES as string[]).includes(part))
      die(`unknown INSTAR_DOUBLE_FAULT '${part}' (known: ${FAULT_NAMES.join(', ')}; join several with +)`, 2);
  const fault = combineFaults(parts.map((part) => FAULTS[part as FaultName] as Fault));

  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === '--version') {
    process.stdout.write(`instar-double 0.1 (fault: ${name})\n`);
    return 0;
  }
  if (cmd === 'amend' || cmd === 'snapshot' || cmd === 'check') return runOperation(cmd, rest, fault[cmd] ?? {});
  if (cmd === 'bitmap') return bitmapCommand(rest, fault.bitmap ?? {});
  if (cmd === 'commit' || cmd === 'rebase') return chainCommand(cmd, rest, fault.chain ?? {});
  if (cmd !== 'resize')
    die(
      `only 'resize', 'amend', 'snapshot', 'check', 'bitmap', 'commit', 'rebase' and '--version' ` +
        `are supported\n${USAGE}`,
    );
  const args = parseResizeArgs(rest);
  // instar probes the format when -f is absent; qcow2 is all this double needs to recognise.
  const format = args.format ?? ((await isQcow2(args.filename)) ? 'qcow2' : undefined);
  const qcow2 = format === 'qcow2';
  const before = qcow2 ? await readQcow2Header(args.filename).catch(() => undefined) : undefined;
  const oldSize = await virtualSize(args.filename, format);
  let wanted = oldSize === undefined ? undefined : requestedSize(args.size, oldSize);
  // the size qemu-img resizes to underneath: SIZE as given, or instar's reading of it in bytes
  let qemuSize = args.size;
  if (REAL && oldSize !== undefined && !before) {
    // any other format: instar's size grammar, which its host CLI applies before the format matters
    const read = instarSize(args.size, oldSize);
    if ('error' in read) return refuse(fault.reword?.(read.error, before) ?? read.error);
    wanted = read.bytes;
    qemuSize = String(wanted);
  }
  if (REAL && oldSize !== undefined && before) {
    const read = instarSize(args.size, oldSize);
    if ('error' in read) return refuse(fault.reword?.(read.error, before) ?? read.error);
    const request = {
      header: before,
      hasBitmaps: hasBitmaps(before),
      oldSize,
      newSize: read.bytes,
      shrink: args.shrink,
    };
    const refusal = instarRefusal({ ...request, preallocation: args.preallocation });
    if (refusal !== null) return refuse(fault.reword?.(refusal, before) ?? refusal);
    wanted = instarTarget(request);
    qemuSize = String(wanted);
  }
  const ctx: Context = {
    file: args.filename,
    format,
    before,
    oldSize,
    wanted,
    shrink: args.shrink,
    preallocation: args.preallocation,
  };

  const refusal = REAL ? undefined : documentedRefusal(before, fault);
  if (refusal !== undefined) return refuse(refusal);

  // a fault that resized by itself (exit 0) still reports it as instar would
  const early = await fault.before?.(ctx);
  if (early === 0) return succeeded(args, fault, format, oldSize);
  if (typeof early === 'number') return early;

  // instar resizes an encrypted image's metadata and needs no key; qemu-img underneath opens it
  // only with one: the double knows the harness's
  const encrypted = (before?.cryptMethod ?? 0) !== 0;
  const opened = encrypted
    ? openImage(args.filename, { format: 'qcow2' }, true)
    : { options: format ? ['-f', format] : [], image: args.filename };
  if (format && CONVERTED.includes(format) && oldSize !== undefined && wanted !== undefined) {
    const refusal = await resizeConverted({ ...ctx, format, oldSize, wanted }, REAL, fault.convertBack);
    if (refusal !== null) return refuse(refusal);
    const late = await fault.after?.({
      ...ctx,
      after: undefined,
      newSize: (await virtualSize(args.filename, format)) ?? 0,
    });
    if (typeof late === 'number' && late !== 0) return late;
    return succeeded(args, fault, format, oldSize);
  }
  const qemuArgs = ['resize', '-q', ...opened.options, ...(args.shrink ? ['--shrink'] : [])];
  if (args.preallocation !== undefined) qemuArgs.push(`--preallocation=${args.preallocation}`);
  // qemu-img opened with the key stores an image's bitmaps again when it closes it, refusing or
  // not; instar, which needs no key, does not: a refusal leaves such an image as it was
  const kept = encrypted && before && before.autoclearFeatures & 1n ? await keepBytes(args.filename) : null;
  const run = await execa('qemu-img', [...qemuArgs, opened.image, qemuSize], {
    stdout: 'inherit',
    stderr: REAL ? 'pipe' : 'inherit',
    reject: false,
  });
  if (kept) await (run.exitCode !== 0 ? kept.restore() : kept.drop());
  if (run.exitCode !== 0) {
    if (REAL)
      process.stderr.write(
        instarError(
          String(run.stderr)
            .split('\n')[0]!
            .replace(/^qemu-img: /, ''),
        ),
      );
    const code = await fault.refused?.(ctx, run.exitCode ?? 1);
    return typeof code === 'number' ? code : (run.exitCode ?? 1);
  }
  // instar rebuilds the header, always as version 3 (its tests list a compat=0.10 image coming
  // back 1.1 as a known divergence), with no extensions a version 2 header lacked: amend adds
  // a feature name table
  if (REAL && before?.version === 2) {
    const v2 = openImage(args.filename, { format: 'qcow2' }, encrypted);
    await execa('qemu-img', ['amend', '-q', ...v2.options, '-o', 'compat=1.1', v2.image]);
    await rewriteHeaderExtensions(args.filename, (exts) => exts.filter((e) => e.type !== EXT_FEATURE_TABLE));
  }

  const after = qcow2 ? await readQcow2Header(args.filename) : undefined;
  const newSize = (await virtualSize(args.filename, format)) ?? 0;
  const late = await fault.after?.({ ...ctx, after, newSize });
  if (typeof late === 'number' && late !== 0) return late;
  return succeeded(args, fault, format, oldSize);
}

/** What instar prints after a successful resize: `Image resized.`, its JSON report, or with -q
 * nothing (instar's code; its docs say JSON ignores -q). */
async function succeeded(args: ResizeArgs, fault: Fault, format: string | undefined, oldSize: number | undefined) {
  if (args.quiet) return 0;
  if (args.output === 'human') {
    process.stdout.write(fault.human?.('Image resized.\n') ?? 'Image resized.\n');
    return 0;
  }
  const newSize = (await virtualSize(args.filename, format)) ?? 0;
  const action = oldSize === undefined || newSize === oldSize ? 'noop' : newSize > oldSize ? 'grow' : 'shrink';
  const report: JsonReport = {
    filename: args.filename,
    format: format ?? 'raw',
    action,
    old_virtual_size: oldSize ?? null,
    new_virtual_size: newSize,
    // a fault may have removed the image
    new_file_size: (await stat(args.filename).catch(() => null))?.size ?? null,
  };
  process.stdout.write(`${JSON.stringify(fault.json?.(report) ?? report, null, 2)}\n`);
  return 0;
}

/** A refusal in the dialect spoken: instar's `Error: "..."` and exit 1. */
function refuse(message: string): number {
  process.stderr.write(instarError(message));
  return 1;
}

process.exitCode = await main();

/** A copy of a file beside it, to put back (restore) or throw away (drop). */
async function keepBytes(file: string) {
  const copy = `${file}.double-kept`;
  await copyFile(file, copy);
  const drop = () => rm(copy, { force: true });
  // copied back over the same inode, which a rename would replace
  return { restore: () => copyFile(copy, file).then(drop), drop };
}

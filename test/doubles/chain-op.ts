// The instar test double's `instar commit` and `instar rebase`, in instar's command line
// (../shared/reference/instar-ops.md), done by qemu-img underneath with the fault hooks of
// chain-faults.ts. Without INSTAR_DOUBLE_CLI=real it does what qemu-img does (a faithful instar);
// with it, it also speaks instar's refusals in its order (the words of guest refusals are the
// double's own: the reference gives their numbers only), empties the overlay of a commit even with
// an explicit -b (and never one with snapshots), takes a rebase -u without -F, and prints instar's
// success lines.
import { chainFileFormat } from '../../model/layout.ts';
import { stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { execa } from 'execa';
import { readQcow2Header, withQcow2 } from '../../qcow2/reader.ts';
import { INCOMPAT_COMPRESSION, INCOMPAT_EXTL2, type Qcow2Header } from '../../qcow2/format.ts';
import { instarError } from './instar-cli.ts';
import { formatVirtualSize } from '../../formats/structure.ts';
import { vmdkBackingName } from '../../formats/vmdk.ts';
import { setVmdkParent, vmdkCid } from './format-edit.ts';

const REAL = process.env.INSTAR_DOUBLE_CLI === 'real';

/** `instar commit [-f qcow2|vmdk] [-b BASE] [-q] [--output human|json] FILENAME`. */
export interface CommitArgs {
  kind: 'commit';
  /** -f: qcow2 (the default) or vmdk. */
  format: string;
  base: string | undefined;
  quiet: boolean;
  output: 'human' | 'json';
  filename: string;
}

/** `instar rebase -b BACKING [-F qcow2|vmdk|raw] [-u] [-f qcow2|vmdk] [-q] [--output human|json]
 * FILENAME`. */
export interface RebaseArgs {
  kind: 'rebase';
  format: string;
  backing: string;
  backingFormat: string | undefined;
  unsafe: boolean;
  quiet: boolean;
  output: 'human' | 'json';
  filename: string;
}

export class ChainUsage extends Error {}

/** What a hook sees: the arguments, the top's header before the call, and the chain member the
 * call writes into (a commit's base) or names (a rebase's new backing), resolved beside the top. */
export interface ChainContext {
  args: CommitArgs | RebaseArgs;
  file: string;
  before: Qcow2Header | undefined;
  /** The member written into (commit) or named (rebase), as a path; null where there is none. */
  member: string | null;
  /** Options a `before` hook adds to qemu-img's command (a commit's -d). */
  extraArgs: string[];
}

type Exit = number | void;
export interface ChainHooks {
  before?: (c: ChainContext) => Exit | Promise<Exit>;
  after?: (c: ChainContext) => Exit | Promise<Exit>;
}

function parse(args: string[], kind: 'commit' | 'rebase') {
  const flags: Record<string, string | boolean> = {};
  const positional: string[] = [];
  const valued = kind === 'commit' ? ['-f', '-b', '--output'] : ['-f', '-b', '-F', '--output'];
  const bare = kind === 'commit' ? ['-q'] : ['-q', '-u'];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (valued.includes(a)) {
      if (i + 1 >= args.length) throw new ChainUsage(`a value is required for '${a}'`);
      flags[a] = args[++i]!;
    } else if (bare.includes(a)) flags[a] = true;
    else if (a.startsWith('-') && a !== '-') throw new ChainUsage(`unexpected argument '${a}' found`);
    else positional.push(a);
  }
  if (positional.length !== 1) throw new ChainUsage('expected FILENAME');
  const output = flags['--output'] === 'json' ? ('json' as const) : ('human' as const);
  return { flags, filename: positional[0]!, output, quiet: flags['-q'] === true };
}

const formatOf = (flags: Record<string, string | boolean>) => (typeof flags['-f'] === 'string' ? flags['-f'] : 'qcow2');

export function parseCommit(args: string[]): CommitArgs {
  const { flags, filename, output, quiet } = parse(args, 'commit');
  const base = typeof flags['-b'] === 'string' ? flags['-b'] : undefined;
  return { kind: 'commit', format: formatOf(flags), base, quiet, output, filename };
}

export function parseRebase(args: string[]): RebaseArgs {
  const { flags, filename, output, quiet } = parse(args, 'rebase');
  if (typeof flags['-b'] !== 'string')
    throw new ChainUsage('the following required arguments were not provided: -b <BACKING>');
  const backingFormat = typeof flags['-F'] === 'string' ? flags['-F'] : undefined;
  const unsafe = flags['-u'] === true;
  return {
    kind: 'rebase',
    format: formatOf(flags),
    backing: flags['-b'],
    backingFormat,
    unsafe,
    quiet,
    output,
    filename,
  };
}

/** A backing name as the image `top` resolves it. */
const beside = (top: string, name: string) => (isAbsolute(name) ? name : join(dirname(top), name));

const backingOf = (file: string) =>
  withQcow2(file, async (r) => r.backingFile()).catch(() => vmdkBackingName(file).catch(() => null));

/** The path of the chain member `name` names from the level above it (as qemu's commit -b finds it:
 * both resolved against that level's directory), walking down from the top; beside the top where
 * no level names it. */
async function memberPath(top: string, name: string): Promise<string> {
  for (let at = top, next = await backingOf(top); next !== null; next = await backingOf(at)) {
    const above = dirname(at);
    at = resolve(above, next);
    if (resolve(above, name) === at) return at;
  }
  return join(dirname(top), name);
}

async function qemuImg(args: string[]): Promise<number> {
  const r = await execa('qemu-img', args, { reject: false });
  if (r.exitCode !== 0) process.stderr.write(`${r.stderr}\n`);
  return r.exitCode ?? 1;
}

const refuse = (text: string) => {
  process.stderr.write(instarError(text));
  return 1;
};

/** A chain member's header, or null for a raw file (or none). */
const headerOf = (file: string) => readQcow2Header(file).catch(() => null);
const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

/** instar's commit refusals, host then guest, in its order (main.rs run_commit); null when it goes
 * on. */
async function commitRefusal(a: CommitArgs, top: Qcow2Header, parent: string | null): Promise<string | null> {
  if (parent === null) return 'commit: overlay has no recorded backing file; pass -b BASE to name one';
  const path = beside(a.filename, parent);
  if (!(await exists(path))) return `commit: backing file '${path}' does not exist`;
  const below = await headerOf(path);
  if (below === null) return 'commit: cross-format commit is not yet supported (overlay is qcow2, backing is raw)';
  if (below.clusterSize !== top.clusterSize)
    return (
      `commit: cluster-size mismatch is not yet supported ` +
      `(overlay ${top.clusterSize} B, backing ${below.clusterSize} B)`
    );
  if (top.size > below.size)
    return `commit: overlay virtual size (${top.size} B) exceeds backing virtual size (${below.size} B)`;
  if (a.base !== undefined && resolve(beside(a.filename, a.base)) !== resolve(path))
    return (
      'commit: commit through an intermediate layer is not yet supported ' +
      `(the overlay's immediate parent is '${parent}')`
    );
  if (top.clusterSize > 65536)
    return `commit: guest reported error 10: scratch space too small for ${top.clusterSize}-byte clusters`;
  if (top.incompatibleFeatures & INCOMPAT_COMPRESSION)
    return 'commit: guest reported error 16: unsupported incompatible features (zstd compression)';
  return null;
}

/** instar's commit refusals of a vmdk overlay, host side, in its order (the same checks as a qcow2
 * one's, its grains all 64 KiB); null when it goes on. */
async function vmdkCommitRefusal(a: CommitArgs, parent: string | null): Promise<string | null> {
  if (parent === null) return 'commit: overlay has no recorded backing file; pass -b BASE to name one';
  const path = beside(a.filename, parent);
  if (!(await exists(path))) return `commit: backing file '${path}' does not exist`;
  const [top, below] = [await vmdkSize(a.filename), await vmdkSize(path)];
  if (top > below) return `commit: overlay virtual size (${top} B) exceeds backing virtual size (${below} B)`;
  if (a.base !== undefined && resolve(beside(a.filename, a.base)) !== resolve(path))
    return (
      'commit: commit through an intermediate layer is not yet supported ' +
      `(the overlay's immediate parent is '${parent}')`
    );
  return null;
}

const vmdkSize = (file: string) => formatVirtualSize(file, 'vmdk');

export async function runCommit(a: CommitArgs, hooks: ChainHooks): Promise<number> {
  const before = await readQcow2Header(a.filename).catch(() => undefined);
  const parent = await backingOf(a.filename);
  if (REAL) {
    const refusal = before
      ? await commitRefusal(a, before, parent)
      : a.format === 'vmdk'
        ? await vmdkCommitRefusal(a, parent)
        : null;
    if (refusal) return refuse(refusal);
  }
  const target = a.base ?? parent;
  const member = target === null ? null : await memberPath(a.filename, target);
  const ctx: ChainContext = { args: a, file: a.filename, before, member, extraArgs: [] };
  const early = await hooks.before?.(ctx);
  if (typeof early === 'number') return early;
  // instar commits into the parent and empties the overlay whatever -b says, but keeps an overlay
  // with snapshots as it is
  if (REAL && (before?.nbSnapshots ?? 0) > 0) ctx.extraArgs.push('-d');
  const base = a.base === undefined || REAL ? [] : ['-b', a.base];
  const code = await qemuImg(['commit', '-q', '-f', a.format, ...base, ...ctx.extraArgs, a.filename]);
  if (code !== 0) return code;
  const late = await hooks.after?.(ctx);
  if (typeof late === 'number') return late;
  if (a.output === 'json')
    process.stdout.write(
      `${JSON.stringify({
        overlay: a.filename,
        overlay_format: a.format,
        backing: target,
        backing_format: chainFileFormat(target ?? ''),
        clusters_committed: 0,
        bytes_committed: 0,
        overlay_clusters_cleared: 0,
      })}\n`,
    );
  else if (!a.quiet) process.stdout.write('Image committed.\n');
  return 0;
}

/** instar's rebase refusals in its order (main.rs run_rebase, then the guest's errors by number);
 * null when it goes on. */
async function rebaseRefusal(a: RebaseArgs, top: Qcow2Header, member: string | null): Promise<string | null> {
  if (member !== null && !a.unsafe && !(await exists(member)))
    return `rebase: new backing file '${member}' does not exist; pass -u to skip this check`;
  if (Buffer.byteLength(a.backing) > 1024)
    return `rebase: backing path is ${Buffer.byteLength(a.backing)} bytes; maximum is 1024`;
  // the old chain is discovered even with -u (the reference suspects it; the words are the double's)
  const old = await backingOf(a.filename);
  if (old !== null && !(await exists(beside(a.filename, old))))
    return `rebase: backing file '${beside(a.filename, old)}' does not exist`;
  const guest = (n: number, text: string) => `rebase: guest reported error ${n}: ${text}`;
  const below = member === null ? null : await headerOf(member);
  if (!a.unsafe && member !== null) {
    const size: number = below ? below.size : (await stat(member)).size;
    if (size < top.size) return guest(2, `new backing file is too small (${size} B, the overlay is ${top.size} B)`);
    if (below && below.clusterSize !== top.clusterSize)
      return guest(2, `new backing file has ${below.clusterSize}-byte clusters, the overlay ${top.clusterSize}-byte`);
  }
  const length = Buffer.byteLength(a.backing);
  if (length > top.backingFileSize)
    return guest(8, `new backing path (${length} B) is longer than the existing slot (${top.backingFileSize} B)`);
  if (!a.unsafe && top.clusterSize > 1024 * 1024)
    return guest(9, `scratch space too small for ${top.clusterSize}-byte clusters`);
  if (!a.unsafe && top.incompatibleFeatures & (INCOMPAT_EXTL2 | INCOMPAT_COMPRESSION))
    return guest(15, 'extended L2 entries and zstd compression are not supported in safe mode');
  return null;
}

export async function runRebase(a: RebaseArgs, hooks: ChainHooks): Promise<number> {
  const before = await readQcow2Header(a.filename).catch(() => undefined);
  const member = a.backing === '' ? null : join(dirname(a.filename), a.backing);
  // instar rebases a vmdk with -u only, rewriting its descriptor (qemu-img refuses every vmdk rebase)
  if (REAL && a.format === 'vmdk') return rebaseVmdk(a, hooks, member);
  if (REAL && before) {
    const refusal = await rebaseRefusal(a, before, member);
    if (refusal) return refuse(refusal);
    // instar takes a new backing without -F (qemu-img 6.1 and later refuse it): it probes it
    if (a.backingFormat === undefined && member !== null)
      a = { ...a, backingFormat: (await headerOf(member)) ? 'qcow2' : 'raw' };
  }
  const ctx: ChainContext = { args: a, file: a.filename, before, member, extraArgs: [] };
  const early = await hooks.before?.(ctx);
  if (typeof early === 'number') return early;
  const format = a.backingFormat === undefined ? [] : ['-F', a.backingFormat];
  const code = await qemuImg([
    'rebase',
    '-q',
    '-f',
    a.format,
    ...(a.unsafe ? ['-u'] : []),
    '-b',
    a.backing,
    ...format,
    a.filename,
  ]);
  if (code !== 0) return code;
  return rebaseDone(a, ctx, hooks);
}

/** instar's rebase of a vmdk: safe mode refused (guest error 1), else the descriptor's parent
 * name and parentCID rewritten in place (the new parent's CID, so that it reads through it; none
 * for a detach). The words are the double's: the reference gives the error's number only. */
async function rebaseVmdk(a: RebaseArgs, hooks: ChainHooks, member: string | null): Promise<number> {
  if (!a.unsafe) return refuse('rebase: guest reported error 1: vmdk is supported with -u only');
  const old = await backingOf(a.filename);
  if (old !== null && !(await exists(beside(a.filename, old))))
    return refuse(`rebase: backing file '${beside(a.filename, old)}' does not exist`);
  const ctx: ChainContext = { args: a, file: a.filename, before: undefined, member, extraArgs: [] };
  const early = await hooks.before?.(ctx);
  if (typeof early === 'number') return early;
  const parentCid = member === null ? null : await vmdkCid(member);
  if (!(await setVmdkParent(a.filename, a.backing === '' ? null : a.backing, parentCid)))
    return refuse('rebase: guest reported error 11: vmdk descriptor too small');
  return rebaseDone(a, ctx, hooks);
}

async function rebaseDone(a: RebaseArgs, ctx: ChainContext, hooks: ChainHooks): Promise<number> {
  const late = await hooks.after?.(ctx);
  if (typeof late === 'number') return late;
  if (REAL && a.output === 'human' && !a.quiet)
    process.stdout.write(a.backing === '' ? 'Image detached.\n' : 'Image rebased.\n');
  if (a.output === 'json') {
    const target = a.backing === '' ? { detached: true } : { new_backing: a.backing };
    const report = {
      overlay: a.filename,
      overlay_format: a.format,
      mode: a.unsafe ? 'unsafe' : 'safe',
      clusters_copied: 0,
      bytes_copied: 0,
    };
    process.stdout.write(`${JSON.stringify({ ...report, ...target })}\n`);
  }
  return 0;
}

/** `instar commit` or `instar rebase`: its usage errors as clap prints them (exit 2), else the
 * operation. */
export async function chainCommand(cmd: 'commit' | 'rebase', argv: string[], hooks: ChainHooks): Promise<number> {
  try {
    return cmd === 'commit' ? await runCommit(parseCommit(argv), hooks) : await runRebase(parseRebase(argv), hooks);
  } catch (err) {
    if (!(err instanceof ChainUsage)) throw err;
    process.stderr.write(`error: ${err.message}\n\nusage: instar ${cmd} ...\n`);
    return 2;
  }
}

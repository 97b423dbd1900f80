// The instar test double's operations besides resize: `instar amend` and `instar snapshot`, in
// instar's command line (../shared/reference/instar-ops.md), done by qemu-img underneath, with
// the fault hooks of faults.ts. With INSTAR_DOUBLE_CLI=real the double also speaks instar's
// refusals, in its order and words, and prints its success lines; without, it refuses nothing and
// prints what qemu-img prints.
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { openImage } from '../../model/commands.ts';
import {
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  type Qcow2Header,
} from '../../qcow2/format.ts';
import { readQcow2Header, withQcow2 } from '../../qcow2/reader.ts';
import { structuralCheck } from '../../qcow2/structure.ts';
import { setRefcount } from '../../qcow2/edit.ts';
import { instarError } from './instar-cli.ts';

export type OpName = 'amend' | 'snapshot' | 'check';

/** What one operation's hooks see: the file, the parsed arguments, the header before the
 * operation (and after it, for `after`). */
export interface OpContext {
  file: string;
  op: OpName;
  args: AmendArgs | SnapshotArgs | CheckArgs;
  before: Qcow2Header | undefined;
  after?: Qcow2Header | undefined;
}

type Exit = number | void;
export interface OpHooks {
  /** Before qemu-img runs; a number ends the double with that exit code (0: it did the operation
   * itself, and prints as instar would). */
  before?: (c: OpContext) => Exit | Promise<Exit>;
  after?: (c: OpContext) => Exit | Promise<Exit>;
}

export interface AmendArgs {
  kind: 'amend';
  format: string | undefined;
  options: string[];
  quiet: boolean;
  output: 'human' | 'json';
  filename: string;
}

export interface SnapshotArgs {
  kind: 'snapshot';
  mode: 'list' | 'create' | 'apply' | 'delete';
  name: string;
  format: string | undefined;
  quiet: boolean;
  output: 'human' | 'json';
  filename: string;
}

/** `instar check [--repair[=leaks|all]] [--output human|json] [-q] FILENAME`. */
export interface CheckArgs {
  kind: 'check';
  /** null: a check without repair; a bare --repair is leaks. */
  repair: 'leaks' | 'all' | null;
  quiet: boolean;
  output: 'human' | 'json';
  filename: string;
}

const REAL = process.env.INSTAR_DOUBLE_CLI === 'real';

class Usage extends Error {}

/** `instar amend [-f qcow2] -o K=V[,K=V]... [-q] [--output human|json] FILENAME`. */
function parseAmend(args: string[]): AmendArgs {
  const out: AmendArgs = { kind: 'amend', format: undefined, options: [], quiet: false, output: 'human', filename: '' };
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-f') out.format = args[++i];
    else if (a === '-o') out.options.push(args[++i] ?? '');
    else if (a === '-q') out.quiet = true;
    else if (a === '--output') out.output = args[++i] === 'json' ? 'json' : 'human';
    else if (a.startsWith('-')) throw new Usage(`unexpected argument '${a}' found`);
    else positional.push(a);
  }
  if (positional.length !== 1 || out.options.length === 0) throw new Usage('expected -o OPTIONS and FILENAME');
  out.filename = positional[0]!;
  return out;
}

function parseCheck(args: string[]): CheckArgs {
  const out: CheckArgs = { kind: 'check', repair: null, quiet: false, output: 'human', filename: '' };
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--repair') out.repair = 'leaks';
    else if (a.startsWith('--repair=')) {
      const mode = a.slice('--repair='.length);
      if (mode !== 'leaks' && mode !== 'all') throw new Usage(`invalid value '${mode}' for '--repair'`);
      out.repair = mode;
    } else if (a === '-q') out.quiet = true;
    else if (a === '--output') out.output = args[++i] === 'json' ? 'json' : 'human';
    else if (a.startsWith('-')) throw new Usage(`unexpected argument '${a}' found`);
    else positional.push(a);
  }
  if (positional.length !== 1) throw new Usage('expected FILENAME');
  out.filename = positional[0]!;
  return out;
}

/** What `instar check --output json` prints, from qemu-img's report after its repair: what remains,
 * and what was repaired where non-zero. */
export function checkJson(qemu: Record<string, unknown>, h: Qcow2Header | undefined): Record<string, unknown> {
  const n = (k: string) => (typeof qemu[k] === 'number' ? (qemu[k] as number) : 0);
  const report: Record<string, unknown> = {
    corruptions: n('corruptions'),
    leaks: n('leaks'),
    'refcount-errors': 0,
    'chain-errors': 0,
    'subcluster-errors': 0,
    dirty: h ? (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n : false,
    corrupt: h ? (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n : false,
    'repair-incomplete': false,
  };
  if (n('leaks-fixed')) report['repaired-leaks'] = n('leaks-fixed');
  if (n('corruptions-fixed')) report['repaired-corruptions'] = n('corruptions-fixed');
  return report;
}

/** qemu-img check's JSON report of a file, or null where it printed none. */
async function qemuCheck(file: string, h: Qcow2Header, repair: 'leaks' | 'all' | null) {
  const r = await qemuImg(['check', ...(repair ? ['-r', repair] : []), '--output=json', '-f', 'qcow2'], file, h);
  try {
    return { r, report: JSON.parse(String(r.stdout)) as Record<string, unknown> };
  } catch {
    return { r, report: null };
  }
}

const count = (report: Record<string, unknown> | null, key: string) =>
  typeof report?.[key] === 'number' ? (report[key] as number) : 0;

/** What instar's repair does otherwise than qemu-img's (INSTAR_DOUBLE_CLI=real;
 * ../shared/reference/instar-ops.md, "check --repair"): the tier it runs (`all` is skipped, leaving
 * its leaks part, on compressed, zstd, external-data, corrupt and overlapping images), what it found
 * before (its exit code subtracts only the leaks it reclaimed), and the live over-counted clusters
 * its leaks tier leaves as they are. */
interface InstarRepair {
  tier: 'leaks' | 'all';
  incomplete: boolean;
  corruptionsBefore: number;
  leaksBefore: number;
  overcounted: { cluster: number; stored: number }[];
}

const METADATA_ROLES = ['header', 'l1', 'refcount-table', 'refcount-block'];

async function instarRepair(file: string, h: Qcow2Header, tier: 'leaks' | 'all'): Promise<InstarRepair> {
  const s = await structuralCheck(file);
  const { report } = await qemuCheck(file, h, null);
  const compressed = s.readable && s.compressedClusters > 0;
  const overlap = s.readable && s.clusterRoles.some((run) => run.shared && METADATA_ROLES.includes(run.role));
  const unsupported = h.incompatibleFeatures & (INCOMPAT_COMPRESSION | INCOMPAT_DATA_FILE | INCOMPAT_CORRUPT);
  const incomplete = tier === 'all' && (compressed || overlap || unsupported !== 0n);
  const overcounted = s.readable
    ? s.refcountMismatches
        .filter((m) => m.class === 'overcounted')
        .map((m) => ({ cluster: m.cluster, stored: m.stored }))
    : [];
  return {
    tier: incomplete ? 'leaks' : tier,
    incomplete,
    corruptionsBefore: count(report, 'corruptions'),
    leaksBefore: count(report, 'leaks'),
    overcounted,
  };
}

/** The double's `check`: qemu-img check underneath (`-r TIER` for a repair), its exit code, and
 * instar's report of it. With INSTAR_DOUBLE_CLI=real, instar's repair as its reference describes it:
 * snapshotted images refused (the words are this double's: the reference gives none), the warning
 * of `all`, the tiers above, and the exit code from what it found minus the leaks it reclaimed. */
async function runCheck(args: CheckArgs, hooks: OpHooks): Promise<number> {
  const file = args.filename;
  const before = await readQcow2Header(file).catch(() => undefined);
  if (!before) {
    process.stderr.write(instarError('check: not a qcow2 image (only qcow2 images can be checked)'));
    return 63;
  }
  const real = REAL && args.repair !== null;
  if (real && before.nbSnapshots > 0) {
    process.stderr.write(instarError('check: --repair does not support images with internal snapshots'));
    return 1;
  }
  if (real && args.repair === 'all')
    process.stderr.write('warning: --repair=all rewrites image metadata in place; back up valuable images first\n');
  const ctx: OpContext = { file, op: 'check', args, before };
  const early = await hooks.before?.(ctx);
  if (typeof early === 'number') return early;
  const instar = real ? await instarRepair(file, before, args.repair!) : null;
  // qemu's failed leaks repair may still have rewritten bitmaps and set the corrupt bit on opening
  const original = instar ? await readFile(file) : null;
  const { r, report } = await qemuCheck(file, before, instar?.tier ?? args.repair);
  let qemu = report;
  if (qemu === null || ![0, 2, 3].includes(r.exitCode ?? -1)) {
    // qemu's leaks repair gives up where the refcounts need a rebuild; instar's reclaims the leaks
    // it can and leaves the corruptions, as it found them
    if (instar && r.exitCode === 1) {
      await writeFile(file, original!);
      qemu = { corruptions: instar.corruptionsBefore, leaks: instar.leaksBefore };
    } else {
      const said = String(r.stderr)
        .trim()
        .split('\n')
        .at(-1)!
        .replace(/^qemu-img: /, '');
      process.stderr.write(instarError(`check: ${said}`));
      return r.exitCode === 0 ? 1 : (r.exitCode ?? 1);
    }
  }
  if (instar) qemu = await asInstarRepairs(file, before, args.repair!, instar, qemu);
  const after = await readQcow2Header(file).catch(() => undefined);
  // a fault's number is the exit code; the report is printed all the same
  const late = await hooks.after?.({ ...ctx, after });
  const json = checkJson(qemu, after);
  if (instar?.incomplete) json['repair-incomplete'] = true;
  const own = count(json, 'corruptions') > 0 ? 2 : count(json, 'leaks') > 0 ? 3 : 0;
  const code = typeof late === 'number' ? late : instar ? own : r.exitCode!;
  if (args.quiet) return code;
  if (args.output === 'json') process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  else if (args.repair) {
    const fixed =
      `Repaired ${json['repaired-leaks'] ?? 0} leaked cluster(s), 0 refcount correction(s), ` +
      `${json['repaired-corruptions'] ?? 0} corruption(s).`;
    const incomplete = instar?.incomplete
      ? '\nRepair did not complete; some issues remain (re-run or use qemu-img).'
      : '';
    process.stdout.write(`${fixed}${incomplete}\n${json.corruptions} corruption(s), ${json.leaks} leak(s) remain.\n`);
  } else process.stdout.write(`${json.corruptions} corruption(s), ${json.leaks} leak(s).\n`);
  return code;
}

/** What instar's repair leaves and reports after qemu-img's repair of the tier it runs: its leaks
 * tier puts back the live over-counted clusters qemu lowered; what remains is read again, and the
 * all tier counts the corruptions it found as remaining (instar's test_check_repair.py). */
async function asInstarRepairs(
  file: string,
  h: Qcow2Header,
  asked: 'leaks' | 'all',
  instar: InstarRepair,
  qemu: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  if (instar.tier === 'leaks') for (const o of instar.overcounted) await setRefcount(file, o.cluster, o.stored);
  const { report: left } = await qemuCheck(file, h, null);
  const corruptions = asked === 'all' && !instar.incomplete ? instar.corruptionsBefore : count(left, 'corruptions');
  return { ...qemu, corruptions, leaks: count(left, 'leaks') };
}

const MODES: Record<string, SnapshotArgs['mode']> = { '-l': 'list', '-c': 'create', '-a': 'apply', '-d': 'delete' };

/** `instar snapshot [-l | -c NAME | -a SNAP | -d SNAP] [-f qcow2] [-q] [--output human|json] FILENAME`. */
function parseSnapshot(args: string[]): SnapshotArgs {
  const out: SnapshotArgs = {
    kind: 'snapshot',
    mode: 'list',
    name: '',
    format: undefined,
    quiet: false,
    output: 'human',
    filename: '',
  };
  const positional: string[] = [];
  let modes = 0;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a in MODES) {
      modes++;
      out.mode = MODES[a]!;
      if (a !== '-l') out.name = args[++i] ?? '';
    } else if (a === '-f') out.format = args[++i];
    else if (a === '-q') out.quiet = true;
    else if (a === '--output') out.output = args[++i] === 'json' ? 'json' : 'human';
    else if (a.startsWith('-')) throw new Usage(`unexpected argument '${a}' found`);
    else positional.push(a);
  }
  // clap's group error: one mode at most
  if (modes > 1) throw new Usage('the argument cannot be used with one or more of the other specified arguments');
  if (positional.length !== 1) throw new Usage('expected FILENAME');
  out.filename = positional[0]!;
  return out;
}

// ---- instar's refusals (INSTAR_DOUBLE_CLI=real) -------------------------------------------------

const TRUTHY = ['on', 'true', 'yes'];
const FALSY = ['off', 'false', 'no'];

/** instar's amend refusals in its order: the -o list first (before the file is opened), then the
 * format, then the guest planner's checks; null when it amends. */
function amendRefusal(a: AmendArgs, h: Qcow2Header | undefined): string | null {
  const wanted: { compat?: string; lazy?: boolean } = {};
  for (const piece of a.options.flatMap((o) => o.split(',')).filter((p) => p !== '')) {
    const at = piece.indexOf('=');
    if (at < 0) return `amend: -o option '${piece}' is missing a value (expected KEY=VALUE)`;
    const [key, value] = [piece.slice(0, at), piece.slice(at + 1)];
    if (key === 'compat') {
      if (value !== '0.10' && value !== '1.1')
        return `amend: bad value '${value}' for -o key 'compat' (expected 0.10 or 1.1)`;
      wanted.compat = value;
    } else if (key === 'lazy_refcounts') {
      const v = value.toLowerCase();
      if (!TRUTHY.includes(v) && !FALSY.includes(v))
        return `amend: bad value '${value}' for -o key 'lazy_refcounts' (expected on/off)`;
      wanted.lazy = TRUTHY.includes(v);
    } else return `amend: -o key '${key}' is not supported (amend changes compat and lazy_refcounts only)`;
  }
  if (wanted.compat === undefined && wanted.lazy === undefined)
    return 'amend: no supported -o options given (expected compat= and/or lazy_refcounts=)';
  if ((a.format !== undefined && a.format !== 'qcow2') || !h) return 'amend: only qcow2 images can be amended';
  if (h.incompatibleFeatures & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT))
    return 'amend: the image is marked dirty (another writer may hold it open); run `instar check` first';
  const toV2 = wanted.compat === '0.10' || (wanted.compat === undefined && h.version === 2);
  if (wanted.lazy === true && toV2) return 'amend: lazy_refcounts=on requires compat=1.1 (qcow2 v3)';
  if (wanted.compat === '0.10' && h.version >= 3) {
    const v3Only = INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
    if (h.incompatibleFeatures & v3Only)
      return 'amend: cannot downgrade to compat=0.10: image uses a v3-only incompatible feature';
    if (h.refcountBits !== 16) return 'amend: cannot downgrade to compat=0.10: refcount_bits != 16';
  }
  return null;
}

/** The -o lists as instar reads them, for qemu-img underneath: lazy_refcounts in any case and as
 * true/false/yes/no is qemu's on or off. */
const asInstarReadsThem = (options: string[]) =>
  options.map((o) =>
    o
      .split(',')
      .map((piece) => {
        const [key, value = ''] = piece.split('=', 2);
        if (key !== 'lazy_refcounts') return piece;
        return `${key}=${TRUTHY.includes(value.toLowerCase()) ? 'on' : 'off'}`;
      })
      .join(','),
  );

const guestError = (code: number, text: string) =>
  `${text}\n${instarError(`snapshot: guest reported error code ${code}`)}`;

/** instar's snapshot refusals in its order (host, then guest); null when it goes ahead. A guest
 * refusal is a line of text and `Error: "snapshot: guest reported error code N"`. */
async function snapshotRefusal(a: SnapshotArgs, h: Qcow2Header | undefined): Promise<string | null> {
  if (a.format !== undefined && a.format !== 'qcow2')
    return instarError(`snapshot: format driver '${a.format}' does not support image snapshots (qcow2 only)`);
  if (a.mode === 'create' && a.name === '') return instarError('snapshot: -c requires a non-empty snapshot name');
  if (a.mode === 'create' && Buffer.byteLength(a.name) > 255)
    return instarError(`snapshot: snapshot name is ${Buffer.byteLength(a.name)} bytes; the qcow2 on-disk limit is 255`);
  if (!h) return instarError('snapshot: invalid qcow2 header');
  if (a.mode === 'list') return null;
  if (a.mode !== 'create' && Buffer.byteLength(a.name) > 256)
    return guestError(3, `snapshot '${a.name.slice(0, 16)}...' not found`);
  const incompat = h.incompatibleFeatures;
  const structure = await structuralCheck(a.filename);
  const compressed = structure.readable && structure.compressedClusters > 0;
  const unsupported =
    h.refcountBits !== 16
      ? `unsupported image: refcount_bits=${h.refcountBits} (only 16-bit refcounts are supported)`
      : compressed || incompat & INCOMPAT_COMPRESSION
        ? 'unsupported image: compressed clusters'
        : h.cryptMethod !== 0
          ? 'unsupported image: encryption'
          : incompat & INCOMPAT_DATA_FILE
            ? 'unsupported image: external data file'
            : h.autoclearFeatures & 1n
              ? 'unsupported image: persistent dirty bitmaps'
              : incompat & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT)
                ? 'unsupported image: the image is marked dirty or corrupt'
                : null;
  if (unsupported) return guestError(2, unsupported);
  const names = await withQcow2(a.filename, async (r) =>
    h.nbSnapshots > 0 ? (await r.readSnapshots()).entries.map((e) => ({ name: e.name, size: e.diskSize })) : [],
  );
  const found = names.find((s) => s.name === a.name);
  if (a.mode !== 'create' && !found) return guestError(3, `snapshot '${a.name}' not found`);
  if (a.mode === 'create' && found) return guestError(4, `a snapshot named '${a.name}' already exists`);
  if (a.mode === 'create' && names.length >= 16)
    return guestError(7, 'too many snapshots (instar v1 keeps at most 16)');
  if (a.mode === 'apply' && found && found.size !== null && found.size !== h.size)
    return guestError(9, 'the image was resized since the snapshot was taken');
  if (a.mode === 'create' && (await createGrowsRefcountTable(a.filename, h)))
    return guestError(6, 'no free clusters available \u2014 the refcount table is full and instar v1 does not grow it');
  return null;
}

/** Whether qemu-img's creation of a snapshot grows the image's refcount table: tried on a copy.
 * instar v1 never grows it (guest error 6); the reference names no finer rule, so the double takes
 * "qemu had to grow it" for "instar's table is full". */
async function createGrowsRefcountTable(file: string, h: Qcow2Header): Promise<boolean> {
  const dir = await mkdtemp(join(tmpdir(), 'instar-double-'));
  try {
    const copy = join(dir, 'probe.qcow2');
    await copyFile(file, copy);
    const r = await execa('qemu-img', ['snapshot', '-c', 'probe', copy], { reject: false });
    return r.exitCode === 0 && (await readQcow2Header(copy)).refcountTableClusters > h.refcountTableClusters;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- doing it -------------------------------------------------------------------------------------

/** Runs qemu-img underneath with the image opened as instar would have it (the harness's key for
 * an encrypted one, which instar needs not). */
async function qemuImg(args: string[], file: string, h: Qcow2Header | undefined) {
  const opened = openImage(file, { format: 'qcow2' }, (h?.cryptMethod ?? 0) !== 0);
  const named = h && h.cryptMethod !== 0 ? [...opened.options, opened.image] : [file];
  return execa('qemu-img', [...args, ...named], { reject: false });
}

const lazyOf = (h: Qcow2Header) => ((h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n ? 'on' : 'off');

/** instar's JSON listing: an array of {id, name, vm-state-size, date, vm-clock, icount}. */
async function listingJson(file: string): Promise<string> {
  const entries = await withQcow2(file, async (r) =>
    r.header.nbSnapshots > 0 ? (await r.readSnapshots()).entries : [],
  );
  const rows = entries.map((e) => ({
    id: e.id,
    name: e.name,
    'vm-state-size': e.vmStateSize,
    date: new Date(e.dateSec * 1000).toISOString(),
    'vm-clock': e.vmClockNsec,
    icount: 0,
  }));
  return `${JSON.stringify(rows, null, 2)}\n`;
}

/** The double's `amend` or `snapshot`; its exit code. `hooks`: the faults' for this operation. */
export async function runOperation(op: OpName, argv: string[], hooks: OpHooks): Promise<number> {
  let args: AmendArgs | SnapshotArgs;
  try {
    if (op === 'check') return await runCheck(parseCheck(argv), hooks);
    args = op === 'amend' ? parseAmend(argv) : parseSnapshot(argv);
  } catch (err) {
    if (!(err instanceof Usage)) throw err;
    process.stderr.write(`error: ${err.message}\n\nusage: instar ${op} ...\n`);
    return 2;
  }
  const file = args.filename;
  const before = await readQcow2Header(file).catch(() => undefined);
  if (REAL) {
    const refusal = args.kind === 'amend' ? amendRefusal(args, before) : await snapshotRefusal(args, before);
    if (refusal !== null) {
      process.stderr.write(args.kind === 'amend' ? instarError(refusal) : refusal);
      return 1;
    }
  }
  const ctx: OpContext = { file, op, args, before };
  const early = await hooks.before?.(ctx);
  if (typeof early === 'number' && early !== 0) return early;
  let stdout = '';
  if (early !== 0) {
    const qemuArgs =
      args.kind === 'amend'
        ? ['amend', ...(REAL ? asInstarReadsThem(args.options) : args.options).flatMap((o) => ['-o', o])]
        : [
            'snapshot',
            ...(args.mode === 'list' ? ['-l'] : [{ create: '-c', apply: '-a', delete: '-d' }[args.mode], args.name]),
          ];
    const r = await qemuImg(qemuArgs, file, before);
    if (r.exitCode !== 0) {
      const said = String(r.stderr)
        .split('\n')[0]!
        .replace(/^qemu-img: /, '');
      process.stderr.write(REAL ? instarError(`${op}: ${said}`) : `${r.stderr}\n`);
      return r.exitCode ?? 1;
    }
    stdout = String(r.stdout);
  }
  const after = await readQcow2Header(file).catch(() => undefined);
  const late = await hooks.after?.({ ...ctx, after });
  if (typeof late === 'number' && late !== 0) return late;
  if (args.quiet && args.kind === 'amend') return 0;
  if (args.kind === 'snapshot') {
    // the mutating modes print nothing, in instar as in qemu-img; a listing is qemu-img's, or JSON
    const listing = stdout === '' ? '' : `${stdout}\n`;
    if (args.mode === 'list') process.stdout.write(args.output === 'json' ? await listingJson(file) : listing);
    return 0;
  }
  const changed =
    !before ||
    !after ||
    before.version !== after.version ||
    lazyOf(before) !== lazyOf(after) ||
    before.refcountBits !== after.refcountBits ||
    before.size !== after.size;
  if (args.output === 'json') {
    const report = {
      filename: file,
      format: 'qcow2',
      action: changed ? 'amended' : 'noop',
      compat: after && after.version >= 3 ? '1.1' : '0.10',
      lazy_refcounts: after ? lazyOf(after) : 'off',
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else if (REAL) process.stdout.write(changed ? 'Image amended.\n' : 'No change.\n');
  return 0;
}

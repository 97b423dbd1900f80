// The instar test double's `instar bitmap`, in instar's command line
// (../shared/reference/instar-ops.md), done by qemu-img underneath with the fault hooks of
// faults.ts. With INSTAR_DOUBLE_CLI=real it also speaks instar's refusals in its order and words,
// runs a repeated flag's actions at that flag's first place (instar's documented "BUG #3"), and
// leaves the empty bitmaps extension instar leaves when it removes the last bitmap.
import { execa } from 'execa';
import { openImage } from '../../model/commands.ts';
import { instarOrder, MAX_ACTIONS, type BitmapAction } from '../../operations/bitmap/step.ts';
import { defaultGranularity } from '../../model/state.ts';
import { AUTOCLEAR_BITMAPS, EXT_BITMAPS, type Qcow2Header } from '../../qcow2/format.ts';
import { readQcow2Header, withQcow2 } from '../../qcow2/reader.ts';
import { rewriteHeaderExtensions, writeBytes } from '../../qcow2/edit.ts';
import { instarError } from './instar-cli.ts';

/** `instar bitmap (--add|--remove|--clear|--enable|--disable|--merge SRC)... [-g BYTES] [-f FMT]
 * [--output human|json] FILENAME BITMAP`. */
export interface BitmapArgs {
  kind: 'bitmap';
  actions: BitmapAction[];
  granularity: string | undefined;
  output: 'human' | 'json';
  /** Options instar parses only to refuse them. */
  unsupported: ('--object' | '--image-opts' | '-b')[];
  filename: string;
  name: string;
}

export class BitmapUsage extends Error {}

const ACTION_FLAGS = ['--add', '--remove', '--clear', '--enable', '--disable'];

export function parseBitmap(args: string[]): BitmapArgs {
  const out: BitmapArgs = {
    kind: 'bitmap',
    actions: [],
    granularity: undefined,
    output: 'human',
    unsupported: [],
    filename: '',
    name: '',
  };
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (ACTION_FLAGS.includes(a)) out.actions.push({ action: a.slice(2) as BitmapAction['action'] });
    else if (a === '--merge') out.actions.push({ action: 'merge', source: args[++i] ?? '' });
    else if (a === '-g') out.granularity = args[++i];
    else if (a === '-f')
      i++; // parsed, never read: the file is probed as qcow2
    else if (a === '--output') out.output = args[++i] === 'json' ? 'json' : 'human';
    else if (a === '--object') {
      out.unsupported.push('--object');
      i++;
    } else if (a === '--image-opts') out.unsupported.push('--image-opts');
    else if (a === '-b' || a === '-F') {
      out.unsupported.push('-b');
      i++;
    } else if (a.startsWith('-')) throw new BitmapUsage(`unexpected argument '${a}' found`);
    else positional.push(a);
  }
  if (positional.length !== 2) throw new BitmapUsage('expected FILENAME BITMAP');
  [out.filename, out.name] = positional as [string, string];
  return out;
}

/** `-g` in instar's size grammar: bytes, or a number with a K/M/G suffix. */
function granularityBytes(text: string): number | null {
  const m = /^(\d+)([kKmMgG]?)$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * { '': 1, k: 1024, m: 2 ** 20, g: 2 ** 30 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
}

/** instar's host refusals, in its order (main.rs run_bitmap); null when it goes on. */
function hostRefusal(a: BitmapArgs): string | null {
  if (a.unsupported.includes('--object')) return 'bitmap: --object is not yet supported';
  if (a.unsupported.includes('--image-opts')) return 'bitmap: --image-opts is not yet supported';
  if (a.unsupported.includes('-b')) return 'bitmap: cross-file merge (-b/-F) is not yet supported';
  if (a.actions.length === 0)
    return 'bitmap: Need at least one of --add, --remove, --clear, --enable, --disable, or --merge';
  if (a.granularity !== undefined && !a.actions.some((x) => x.action === 'add'))
    return 'bitmap: granularity only supported with --add';
  if (a.actions.length > MAX_ACTIONS) return `bitmap: too many actions (max ${MAX_ACTIONS})`;
  const merges = a.actions.filter((x) => x.action === 'merge');
  if (merges.length > 0 && merges.length < a.actions.length)
    return 'bitmap: mixing --merge with other actions in one invocation is not supported';
  if (merges.length > MAX_ACTIONS) return `bitmap: too many --merge sources (max ${MAX_ACTIONS})`;
  if (a.granularity !== undefined) {
    const g = granularityBytes(a.granularity);
    if (g === null) return `bitmap: invalid size: '${a.granularity}'`;
    if (g < 512 || g > 2 ** 31 || (g & (g - 1)) !== 0)
      return 'bitmap: granularity must be a power of two between 512 and 2G';
  }
  const length = Buffer.byteLength(a.name);
  if (length === 0 || length > 1023) return 'bitmap: invalid bitmap name length';
  if (merges.some((m) => m.source!.length === 0 || Buffer.byteLength(m.source!) > 1023))
    return 'bitmap: invalid merge source name length';
  return null;
}

/** instar's guest refusals for the actions in instar's order, simulated on the image's bitmaps
 * before anything is written; null when every action can run. */
async function guestRefusal(a: BitmapArgs, h: Qcow2Header): Promise<string | null> {
  if (h.version < 3) return 'bitmap: cannot store dirty bitmaps in a qcow2 v2 image';
  if (h.refcountBits !== 16) return 'bitmap: unsupported refcount width (only 16-bit refcounts are supported)';
  const directory = await withQcow2(a.filename, async (r) => (await r.readBitmaps())?.directory ?? []);
  const granularity = new Map(directory.map((b) => [b.name, 2 ** b.granularityBits]));
  const added = granularityBytes(a.granularity ?? '') ?? defaultGranularity(2 ** h.clusterBits);
  for (const x of instarOrder(a.actions)) {
    const has = granularity.has(a.name);
    if (x.action === 'add') {
      if (has) return 'bitmap: bitmap already exists';
      granularity.set(a.name, added);
    } else if (!has) return 'bitmap: bitmap not found';
    else if (x.action === 'remove') granularity.delete(a.name);
    else if (x.action === 'merge') {
      if (!granularity.has(x.source!)) return 'bitmap: merge source bitmap not found';
      if (granularity.get(x.source!) !== granularity.get(a.name))
        return 'bitmap: bitmaps have incompatible granularity for merge';
    }
  }
  return null;
}

/** What instar leaves where it removes the last bitmap: a bitmaps extension of no bitmaps (nb=0,
 * size=0, offset=0) and the autoclear bit clear, where qemu deletes the extension. `autoclear`:
 * the bit set as well (a fault). */
export async function leaveEmptyBitmapsExtension(file: string, autoclear: boolean): Promise<void> {
  // no room beside a backing file name in a small first cluster: the image stays as qemu left it
  const fits = await rewriteHeaderExtensions(file, (exts) =>
    exts.some((e) => e.type === EXT_BITMAPS)
      ? exts
      : [...exts, { type: EXT_BITMAPS, name: 'bitmaps', offset: 0, length: 24, data: Buffer.alloc(24) }],
  ).catch(() => false);
  if (!fits || !autoclear) return;
  const h = await readQcow2Header(file);
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(h.autoclearFeatures | AUTOCLEAR_BITMAPS);
  await writeBytes(file, 88, b);
}

/** How many bitmaps the image holds (0 where it cannot be read). */
export const bitmapCount = (file: string) =>
  withQcow2(file, async (r) => (await r.readBitmaps())?.directory.length ?? 0).catch(() => 0);

/** The hooks a fault gives `bitmap` (faults.ts). */
export interface BitmapHooks {
  before?: (c: BitmapContext) => number | void | Promise<number | void>;
  after?: (c: BitmapContext) => number | void | Promise<number | void>;
  /** The order the actions run in (a fault's own; the default: the command line's, instar's with
   * INSTAR_DOUBLE_CLI=real). */
  order?: (actions: BitmapAction[]) => BitmapAction[];
}

export interface BitmapContext {
  file: string;
  args: BitmapArgs;
  before: Qcow2Header | undefined;
  /** The actions in the order they ran. */
  ran: BitmapAction[];
}

/** The double's `bitmap`; its exit code. */
export async function runBitmap(a: BitmapArgs, hooks: BitmapHooks, real: boolean): Promise<number> {
  const refuse = (text: string) => {
    process.stderr.write(instarError(text));
    return 1;
  };
  if (real) {
    const host = hostRefusal(a);
    if (host) return refuse(host);
  }
  const before = await readQcow2Header(a.filename).catch(() => undefined);
  if (real) {
    if (!before) return refuse('bitmap: not a qcow2 image');
    const guest = await guestRefusal(a, before);
    if (guest) return refuse(guest);
  }
  const ran = hooks.order?.(a.actions) ?? (real ? instarOrder(a.actions) : a.actions);
  const ctx: BitmapContext = { file: a.filename, args: a, before, ran };
  const early = await hooks.before?.(ctx);
  if (typeof early === 'number') return early;
  const flags = ran.flatMap((x) => (x.action === 'merge' ? ['--merge', x.source!] : [`--${x.action}`]));
  const g = a.granularity === undefined ? [] : ['-g', a.granularity];
  // an encrypted image's bitmaps need no key, but qemu-img opens the image with it
  const opened = openImage(a.filename, { format: 'qcow2' }, (before?.cryptMethod ?? 0) !== 0);
  const args = ['bitmap', ...flags, ...g, ...opened.options, opened.image, a.name];
  const r = await execa('qemu-img', args, { reject: false });
  if (r.exitCode !== 0) {
    const said = String(r.stderr)
      .split('\n')[0]!
      .replace(/^qemu-img: /, '');
    process.stderr.write(real ? instarError(`bitmap: ${said}`) : `${r.stderr}\n`);
    return r.exitCode ?? 1;
  }
  const left = await bitmapCount(a.filename);
  if (real && left === 0 && ran.some((x) => x.action === 'remove')) await leaveEmptyBitmapsExtension(a.filename, false);
  const late = await hooks.after?.(ctx);
  if (typeof late === 'number') return late;
  if (a.output === 'json')
    process.stdout.write(`${JSON.stringify({ 'actions-applied': ran.length, 'resulting-bitmaps': left })}\n`);
  return 0;
}

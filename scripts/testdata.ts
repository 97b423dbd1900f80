// npm run testdata [-- --update | --record]: the testdata/ corpus (testdata/README.md).
//   (no flag)  computes every expectation and golden file from the stored inputs and lists the
//              files that differ (exit 1 if any): what the unit tests would find, file by file
//   --update   rewrites every expectation and golden file from the stored inputs (no qemu)
//   --record   records the inputs again with qemu-img, qemu-io and the test doubles (images,
//              check/info/compare outputs, commands, fuzz runs for the reports), then updates;
//              --record=format-images records only the vpc, vhdx and vmdk images
// Expectations are computed by test/unit/testdata.ts, the module the unit tests compare with.
import { chmod, copyFile, cp, mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import type { Case, DataOp, ImageSpec, ResizeStep } from '../model/case.ts';
import {
  buildCommands,
  qemuImg,
  runBuildCommand,
  resizeArgs,
  type CommandRecord,
  type Resizer,
} from '../model/commands.ts';
import { planStep } from '../model/plan.ts';
import { EXT_BITMAPS, EXT_FEATURE_TABLE, HEADER_OFFSET } from '../qcow2/format.ts';
import { readQcow2Header, withQcow2 } from '../qcow2/reader.ts';
import { decodeL1Entry } from '../qcow2/tables.ts';
import { afterUseWorkload, withoutTimings } from '../oracles/after-use.ts';
import { isClean, parseCheck } from '../oracles/check.ts';
import { firstMismatch, regrowWindows, type CompareObservation, type ObservedStep } from '../oracles/content.ts';
import { classifyOutcome } from '../oracles/outcome.ts';
import {
  differences,
  exists,
  INDEX_CASE,
  ROOT,
  TESTDATA,
  wantedFiles,
  type AfterUseInput,
  type CompareInput,
  type ImagesInput,
  type OutcomeInput,
  type Recorded,
  type StepInput,
  type TestCase,
  type UnchangedInput,
} from '../test/unit/testdata.ts';
import { contentHash } from '../exec/files.ts';
import { killAllChildren, runCommand } from '../exec/process.ts';
import { leakOneCluster } from '../test/doubles/faults.ts';
import { recordFormatScenes } from './testdata-formats.ts';
import { rewriteHeaderExtensions, setRefcount, writeBytes } from '../qcow2/edit.ts';

const double = (fault: string) => join(ROOT, 'test', 'doubles', `instar-${fault}`);
/** The directories --record writes whole (and in reports/, the folders it records); registry/ and
 * registry-invalid/ hold hand-written inputs and are left alone. */
const RECORDED_DIRS = [
  'check',
  'info',
  'compare',
  'outcome',
  'unchanged',
  'after-use',
  'size-grammar',
  'images',
  'format-images',
  'steps',
  'index',
];

// ---- a bench: one directory per recorded case, commands run inside it on relative names ----------

class Bench {
  constructor(readonly dir: string) {}

  path = (name: string) => join(this.dir, name);

  async run(program: string, args: string[]): Promise<Recorded> {
    const r = await execa(program, args, { cwd: this.dir, reject: false });
    return { exitCode: r.exitCode ?? null, stdout: r.stdout, stderr: r.stderr };
  }

  /** A build command, with the signal that ended it (an aborting qemu-io is meant to die). */
  async build(program: string, args: string[]): Promise<Recorded & { signal: string | null }> {
    const r = await execa(program, args, { cwd: this.dir, reject: false });
    return { exitCode: r.exitCode ?? null, stdout: r.stdout, stderr: r.stderr, signal: r.signal ?? null };
  }

  /** A qcow2 image made by qemu-img create and filled by one qemu-io run. */
  async create(name: string, opts: string, size: string, io: string[] = []) {
    await this.must('qemu-img', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), name, size]);
    if (io.length > 0) await this.io(name, io);
  }

  io = (name: string, commands: string[]) =>
    this.must('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), name]);

  copy = (from: string, to: string) => copyFile(this.path(from), this.path(to));

  /** `qemu-img resize` (program null) or a test double's `instar resize`. */
  resize = (program: string | null, name: string, size: string, shrink = false) =>
    this.run(program ?? 'qemu-img', ['resize', '-f', 'qcow2', ...(shrink ? ['--shrink'] : []), name, size]);

  check = (name: string) => this.run('qemu-img', ['check', '-f', 'qcow2', '--output=json', name]);
  info = (name: string) => this.run('qemu-img', ['info', '-f', 'qcow2', '--output=json', name]);
  compare = (reference: string, subject: string) =>
    this.run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', reference, subject]);

  async must(program: string, args: string[]) {
    const r = await this.run(program, args);
    if (r.exitCode !== 0) throw new Error(`${program} ${args.join(' ')} failed in ${this.dir}: ${r.stderr}`);
    return r;
  }

  /** The virtual size qemu-img info reports, or null where info fails (as the harness takes it). */
  async size(name: string): Promise<number | null> {
    const r = await this.info(name);
    return r.exitCode === 0 ? (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'] : null;
  }
}

let benches = 0;
let work = '';
async function bench(): Promise<Bench> {
  const dir = join(work, `bench-${benches++}`);
  await mkdir(dir);
  return new Bench(dir);
}

// ---- image surgery ------------------------------------------------------------------------------

const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const COPIED = 1n << 63n;
const HOST_OFFSET = ((1n << 56n) - 1n) & ~0x1ffn;

/** Host offsets of the L1 table, of the first L2 table, and of the cluster guest offset 0 maps to. */
const firstMapping = (path: string) =>
  withQcow2(path, async (r) => {
    const l2 = decodeL1Entry((await r.readL1Table())[0]!).offset;
    const entry = (await r.read(l2, 8)).readBigUInt64BE();
    const data = Number(entry & HOST_OFFSET);
    return { l1: r.header.l1TableOffset, l2, data, clusterSize: r.header.clusterSize };
  });

async function flipBit(path: string, at: number, bit: bigint) {
  const raw = await withQcow2(path, async (r) => (await r.read(at, 8)).readBigUInt64BE());
  await writeBytes(path, at, u64(raw ^ bit));
}

async function refcountOfFirstData(path: string, value: number) {
  const { data, clusterSize } = await firstMapping(path);
  if (!(await setRefcount(path, data / clusterSize, value))) throw new Error(`no refcount block for ${path}`);
}

// ---- running a case on both sides, as exec/run-case.ts does ---------------------------------------

const MiB = 2 ** 20;
const DATA_OPS: DataOp[] = [
  { op: 'write', offset: 0, length: 131072, pattern: 7 },
  { op: 'write', offset: 3 * MiB, length: 65536, pattern: 9 },
];
const IMAGE: ImageSpec = {
  format: 'qcow2',
  virtualSize: 4 * MiB,
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
  createdPreallocation: 'off',
  encrypted: false,
};

/** A case: 4 MiB, 64 KiB clusters, 16-bit refcounts and two writes unless `image` and `data` say
 * otherwise. */
const caseOf = (steps: ResizeStep[], image: Partial<ImageSpec> = {}, data: DataOp[] = DATA_OPS): Case => ({
  image: { ...IMAGE, ...image },
  data,
  steps,
});
const resize = (size: string, shrink = false): ResizeStep => ({ size, shrink, preallocation: null });
const instar = (program: string): Resizer => ({ dialect: 'instar', program });

/** One step as the harness saw it: its commands, and the refusing sides' hashes. */
interface Run {
  case: Case;
  index: number;
  /** qemu's result's sizes before and after each step up to this one, read from it. */
  history: ObservedStep[];
  step: OutcomeInput;
  refusal: UnchangedInput | null;
}

/** A resize through the harness's own runCommand (timeouts, signals, spawn errors) with the
 * harness's arguments, paths in argv made relative so that recordings do not name the machine. */
async function command(b: Bench, resizer: Resizer, step: ResizeStep, file: string, timeoutMs: number) {
  const r = await runCommand(resizer.program, resizeArgs(resizer, step, file, 'qcow2'), { timeoutMs, cwd: b.dir });
  const local = (s: string) => s.split(`${b.dir}/`).join('').split(`${ROOT}/`).join('');
  return { ...r, argv: r.argv.map(local), spawnError: r.spawnError && local(r.spawnError) };
}

const headerSize = (b: Bench, name: string) =>
  readQcow2Header(b.path(name)).then(
    (h) => h.size,
    () => null,
  );

/** Builds the case's base image and runs its steps, qemu-img (or `reference`) on reference.qcow2
 * and `subject` on subject.qcow2, up to the first step that either side does not accept. */
async function runCase(
  b: Bench,
  c: Case,
  subject: string,
  o: { reference?: Resizer; timeoutMs?: number } = {},
): Promise<Run> {
  for (const cmd of buildCommands(c, 'base.qcow2')) {
    const { result: r, ok } = await runBuildCommand(cmd, () => b.build(cmd.program, cmd.args));
    if (!ok) throw new Error(`${cmd.what} failed in ${b.dir}: ${r.stderr}`);
  }
  await b.copy('base.qcow2', 'reference.qcow2');
  await b.copy('base.qcow2', 'subject.qcow2');
  const history: ObservedStep[] = [];
  // the recorded scenes are resizes
  for (const [index, step] of (c.steps as ResizeStep[]).entries()) {
    const before = (await headerSize(b, 'reference.qcow2'))!;
    const plan = planStep(step, before, 'qcow2');
    const hashes = {
      reference: await contentHash(b.path('reference.qcow2')),
      subject: await contentHash(b.path('subject.qcow2')),
    };
    const timeoutMs = o.timeoutMs ?? 30_000;
    const reference = await command(b, o.reference ?? qemuImg, step, 'reference.qcow2', timeoutMs);
    // what the subject's clusters were before this step names what it leaks (refcount-damage.ts)
    await b.copy('subject.qcow2', 'before.qcow2');
    const sub = await command(b, instar(subject), step, 'subject.qcow2', timeoutMs);
    const [ref, subj] = [classifyOutcome(reference), classifyOutcome(sub)];
    history.push({ before, after: ref === 'ok' ? await headerSize(b, 'reference.qcow2') : null });
    const accepted =
      ref === 'refused' && subj === 'ok'
        ? { before, target: plan.target, after: await headerSize(b, 'subject.qcow2') }
        : null;
    const hashed = async (side: 'reference' | 'subject', refused: boolean) =>
      refused ? { before: hashes[side], after: await contentHash(b.path(`${side}.qcow2`)) } : null;
    const refusal =
      ref === 'refused' || subj === 'refused'
        ? {
            reference: await hashed('reference', ref === 'refused'),
            subject: await hashed('subject', subj === 'refused'),
          }
        : null;
    const run = { case: c, index, history, step: { stepKind: plan.kind, reference, subject: sub, accepted }, refusal };
    if (ref !== 'ok' || subj !== 'ok' || index === c.steps.length - 1) return run;
  }
  throw new Error('a case has at least one step');
}

/** Whether an image reads zeros over [start, end). */
const readsZero = async (b: Bench, name: string, start: number, end: number) =>
  (await b.run('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -q -P 0 ${start} ${end - start}`, name])).exitCode === 0;

/** What both results read in the sector where they first differ. */
async function probeSector(b: Bench, at: number) {
  const start = Math.floor(at / 512) * 512;
  return {
    referenceReadsZero: await readsZero(b, 'reference.qcow2', start, start + 512),
    subjectReadsZero: await readsZero(b, 'subject.qcow2', start, start + 512),
  };
}

/** qemu-img compare of the two results with their virtual sizes (null where info fails), and the
 * probes the harness makes where they first differ: the regrow window it lies in, else its sector. */
async function compareOf(b: Bench, run: Run | null): Promise<CompareInput> {
  const r = await b.compare('reference.qcow2', 'subject.qcow2');
  const compare: CompareObservation = {
    ...r,
    referenceSize: await b.size('reference.qcow2'),
    subjectSize: await b.size('subject.qcow2'),
  };
  const at = firstMismatch(compare);
  const window =
    at === null || run === null
      ? undefined
      : regrowWindows(run.history, run.case.image.clusterSize).find((w) => at >= w.start && at < w.end);
  const regrow = window
    ? {
        window,
        referenceReadsZero: await readsZero(b, 'reference.qcow2', window.start, window.end),
        subjectReadsZero: await readsZero(b, 'subject.qcow2', window.start, window.end),
      }
    : null;
  if (at !== null && !(regrow && !regrow.referenceReadsZero && regrow.subjectReadsZero))
    compare.sector = await probeSector(b, at);
  return { compare, regrow, where: run && whereOf(run) };
}

/** Where a run's results stand: qemu's result's sizes before and after its last step. */
const whereOf = (run: Run) => {
  const { before, after } = run.history[run.index]!;
  return { clusterSize: run.case.image.clusterSize, before, after: after ?? before };
};

/** The check of the subject (or `subjectCheck`'s) and, as the harness does, of qemu's result when
 * the subject's is not clean. */
async function checks(b: Bench, subjectCheck?: (b: Bench) => Promise<Recorded>) {
  const subject = subjectCheck ? await subjectCheck(b) : await b.check('subject.qcow2');
  const clean = isClean(parseCheck(subject.exitCode, subject.stdout, subject.stderr));
  return { subject, reference: clean ? null : await b.check('reference.qcow2') };
}

/** qemu-img check through blkdebug, failing every read of the sector `offsetOf` names once the
 * refcount table is loaded: check errors for a refcount block, a failed check for an L2 table. */
const checkWithReadError = (offsetOf: (subject: string) => Promise<number>) => async (b: Bench) =>
  b.run('qemu-img', [
    'check',
    '--output=json',
    '--image-opts',
    'driver=qcow2,file.driver=blkdebug,file.image.driver=file,file.image.filename=subject.qcow2,' +
      'file.inject-error.0.event=reftable_load,' +
      `file.inject-error.0.sector=${(await offsetOf(b.path('subject.qcow2'))) / 512}`,
  ]);
const firstRefcountBlock = (path: string) => withQcow2(path, async (r) => (await r.refcountBlocks())[0]!.offset);
const firstL2Table = async (path: string) => (await firstMapping(path)).l2;

/** The same qemu-io workload on both results after the run (oracles/after-use.ts), for qemu's
 * result of `size`, then check and compare as exec/run-case.ts useBothResults does. */
async function useBoth(b: Bench, run: Run, size: number, subjectCheck?: (b: Bench) => Promise<Recorded>) {
  const largest = Math.max(...run.history.flatMap((h) => [h.before, h.after ?? 0]));
  const workload = afterUseWorkload(run.case, size, largest);
  const io = (name: string) => b.run('qemu-io', ['-f', 'qcow2', ...workload.flatMap((w) => ['-c', w.command]), name]);
  const refIo = await io('reference.qcow2');
  const subIo = await io('subject.qcow2');
  const referenceSize = await headerSize(b, 'reference.qcow2');
  const subjectSize = await headerSize(b, 'subject.qcow2');
  const checked = await checks(b, subjectCheck);
  const compare: CompareObservation = {
    ...(await b.compare('reference.qcow2', 'subject.qcow2')),
    referenceSize,
    subjectSize,
  };
  const at = firstMismatch(compare);
  if (at !== null) compare.sector = await probeSector(b, at);
  const parse = (r: Recorded) => parseCheck(r.exitCode, r.stdout, r.stderr);
  return {
    workload,
    io: {
      reference: { ...refIo, stdout: withoutTimings(refIo.stdout) },
      subject: { ...subIo, stdout: withoutTimings(subIo.stdout) },
    },
    subjectCheck: parse(checked.subject),
    referenceCheck: checked.reference && parse(checked.reference),
    compare,
    context: { where: { ...whereOf(run), after: size, workloadSize: referenceSize } },
  };
}

// ---- scenes: what one bench builds, recorded in several directories under one name ---------------

type Directory =
  'images' | 'check' | 'info' | 'compare' | 'outcome' | 'unchanged' | 'steps' | 'after-use' | 'size-grammar';

interface Built {
  /** The step the results come from, when a case ran. */
  run: Run | null;
  afterUse?: Omit<AfterUseInput, 'context'> & { context: Omit<AfterUseInput['context'], 'images'> };
}

interface Scene {
  name: string;
  description: string;
  /** Leaves subject.qcow2 and, where the oracle compares two results, reference.qcow2 in the bench. */
  build: (b: Bench) => Promise<Built>;
  /** The directories it is recorded in. */
  into: Directory[];
  /** The subject's check, when it is made another way (blkdebug). */
  check?: (b: Bench) => Promise<Recorded>;
}

/** A case run with a test double (or another subject) as the subject. */
const ran =
  (c: Case, subject: string | ((b: Bench) => Promise<string>), o: { reference?: Resizer; timeoutMs?: number } = {}) =>
  async (b: Bench): Promise<Built> => ({
    run: await runCase(b, c, typeof subject === 'string' ? subject : await subject(b), o),
  });

/** A case run, then used on both sides (after `damage`, if any). */
const used =
  (
    c: Case,
    subject: string,
    o: { damage?: (b: Bench) => Promise<void>; check?: (b: Bench) => Promise<Recorded> } = {},
  ) =>
  async (b: Bench): Promise<Built> => {
    const run = await runCase(b, c, subject);
    // the harness uses only results whose reference it could read: its size is taken before damage
    const size = (await headerSize(b, 'reference.qcow2'))!;
    await o.damage?.(b);
    return { run, afterUse: await useBoth(b, run, size, o.check) };
  };

/** Images built without a case: subject.qcow2 and maybe reference.qcow2. */
const built =
  (make: (b: Bench) => Promise<unknown>) =>
  async (b: Bench): Promise<Built> => {
    await make(b);
    return { run: null };
  };

/** reference.qcow2 as qemu built it, subject.qcow2 a copy damaged by `damage`. */
const damaged = (opts: string, damage: (subject: string) => Promise<unknown>, io = DATA) =>
  built(async (b) => {
    await b.create('reference.qcow2', opts, '4M', io);
    await b.copy('reference.qcow2', 'subject.qcow2');
    await damage(b.path('subject.qcow2'));
  });

/** reference.qcow2 and subject.qcow2 each created with its own options and data. */
async function twoImages(b: Bench, reference: string, subject: string, io = DATA) {
  await b.create('reference.qcow2', reference, '4M', io);
  await b.create('subject.qcow2', subject, '4M', io);
}

/** A stand-in subject: a shell script in the bench, called as `instar resize ... IMAGE SIZE`; the
 * script's body finds those two in $image and $size. */
async function script(b: Bench, name: string, body: string): Promise<string> {
  await writeFile(b.path(name), `#!/bin/sh\nfor arg; do image=$size; size=$arg; done\n${body}\n`);
  await chmod(b.path(name), 0o755);
  return b.path(name);
}

const emptied =
  (...names: string[]) =>
  async (b: Bench) => {
    for (const name of names) await writeFile(b.path(name), '');
  };

const DATA = ['write -q -P 7 0 128k', 'write -q -P 9 3M 64k'];

/** reference.qcow2 and subject.qcow2, each with bitmap b0 (4 KiB granularity) added before its
 * writes; the subject's with `subjectFlags` too. */
async function withBitmap(b: Bench, io: { reference: string[]; subject: string[] }, subjectFlags: string[] = []) {
  for (const side of ['reference', 'subject'] as const) {
    const name = `${side}.qcow2`;
    await b.create(name, '', '4M');
    const flags = side === 'subject' ? subjectFlags : [];
    await b.must('qemu-img', ['bitmap', '--add', ...flags, '-g', '4096', '-f', 'qcow2', name, 'b0']);
    await b.io(name, io[side]);
  }
}
/** Data that leaves the first cluster free: an aborted write there allocates it, which is what sets
 * a lazy-refcounts image's dirty bit (a write into an allocated cluster leaves it clear). */
const LATE = DATA.slice(1);
const MIXED = ['write -q -P 7 0 192k', 'write -q -c -P 3 1M 128k', 'write -q -z 64k 64k', 'discard -q 0 64k'];
const ALL: Directory[] = ['images', 'check', 'info', 'compare', 'outcome', 'steps'];
const REFUSED: Directory[] = ['outcome', 'unchanged', 'steps'];
const DAMAGED: Directory[] = ['images', 'check'];
const shrink2M = [resize('2M', true)];
const abortAfterWrite = (name: string) => ['-f', 'qcow2', '-c', 'write -q -P 17 0 512', '-c', 'abort', name];

const SCENES: Scene[] = [
  // results of a resize step, each recorded in every directory that can judge it
  // two images whose bitmap b0 differs: the bitmaps oracle (its bits, its flags)
  {
    name: 'bitmap-bits-differ',
    description:
      'bitmap b0 (4 KiB granularity) enabled before the writes, which differ: 16 bits set in each, not the same',
    build: built((b) => withBitmap(b, { reference: ['write -q -P 7 0 64k'], subject: ['write -q -P 7 64k 64k'] })),
    into: ['images'],
  },
  {
    name: 'bitmap-disabled',
    description: "the same writes, but the subject's b0 was added disabled: no bits, no auto flag",
    build: built((b) => withBitmap(b, { reference: DATA, subject: DATA }, ['--disable'])),
    into: ['images'],
  },
  {
    name: 'faithful-shrink',
    description: "qemu-img's and the faithful double's (instar-none) shrink of a 1-bit image: no finding",
    build: ran(caseOf(shrink2M, { refcountBits: 1 }), double('none')),
    into: ALL,
  },
  {
    name: 'v2-grow',
    description: 'a compat=0.10 image grown by qemu-img and instar-none: no extensions, no v3 info fields',
    build: ran(caseOf([resize('+1M')], { compat: '0.10' }), double('none')),
    into: ALL,
  },
  ...([1, 2, 4] as const).map((bits): Scene => ({
    name: `365-stride-${bits}bit`,
    description:
      `bug #365: a ${bits}-bit image shrunk by instar-365-stride (refcount blocks rewritten at a ` +
      "16-bit stride) against qemu-img's shrink",
    build: ran(caseOf(shrink2M, { refcountBits: bits }), double('365-stride')),
    into: ALL,
  })),
  {
    name: 'zero-flag-header-1bit',
    description:
      "a 1-bit image's shrink discarding a zero-flag L2 entry, by a double that then zeroes the header " +
      "cluster's refcount: one cluster undercounted, named by its structure, not as garbled blocks",
    build: ran(
      caseOf(shrink2M, { refcountBits: 1 }, [...DATA_OPS, { op: 'zero', offset: 3 * MiB + 65536, length: 65536 }]),
      double('zero-flag-header-refcount'),
    ),
    into: ALL,
  },
  {
    name: 'snapshot-table-dropped',
    description:
      'a shrink of an image with a snapshot by a double that rebuilds the header without its snapshot table: ' +
      'the lost table names it, before the clusters it leaks',
    build: ran(
      caseOf(shrink2M, {}, [DATA_OPS[0]!, { op: 'snapshot-create', name: 's1' }, DATA_OPS[1]!]),
      double('drop-snapshot-table'),
    ),
    into: ALL,
  },
  {
    name: 'leak-on-shrink',
    description: 'instar-leak-on-shrink: a free cluster marked used after the shrink (leaked)',
    build: ran(caseOf(shrink2M, { refcountBits: 2 }), double('leak-on-shrink')),
    into: ALL,
  },
  {
    name: 'header-only-shrink',
    description: 'instar-header-only-shrink: only the size field rewritten, L2 entries past the new end kept',
    build: ran(caseOf(shrink2M, { refcountBits: 1 }), double('header-only-shrink')),
    into: ALL,
  },
  {
    name: 'header-only-shrink-l1',
    description: 'instar-header-only-shrink with 512-byte clusters: L1 and L2 entries past the new end kept',
    build: ran(caseOf([resize('64K', true)], { clusterSize: 512 }), double('header-only-shrink')),
    into: ALL,
  },
  {
    name: 'feature-table-dropped',
    description: "instar-drop-feature-table: the feature name table removed after the shrink, against qemu's",
    build: ran(caseOf(shrink2M), double('drop-feature-table')),
    into: ALL,
  },
  {
    name: 'lazy-refcounts-dropped',
    description: "instar-drop-lazy-refcounts: the lazy_refcounts bit cleared after a grow, against qemu's grow",
    build: ran(caseOf([resize('+1M')], { lazyRefcounts: true }), double('drop-lazy-refcounts')),
    into: ALL,
  },
  {
    name: 'stale-grow-tail',
    description: 'instar-stale-grow-tail: 512 bytes of 0xa5 written at the old end after a grow',
    build: ran(caseOf([resize('+1536K')]), double('stale-grow-tail')),
    into: ALL,
  },
  {
    name: 'truncated-to-zero',
    description: 'instar-truncate-zero: the image file emptied after the shrink (not qcow2)',
    build: ran(caseOf(shrink2M), double('truncate-zero')),
    into: ALL,
  },
  {
    name: 'deleted',
    description: 'instar-delete-image: the image file deleted after the shrink (missing)',
    build: ran(caseOf(shrink2M), double('delete-image')),
    into: ALL,
  },
  ...(
    [
      [
        'regrow-quirk',
        'zero-regrow-tail',
        65536,
        'qemu shows the old bytes of the kept cluster, instar-zero-regrow-tail zeros',
      ],
      ['regrow-both-data', 'stale-grow-tail', 65536, 'instar-stale-grow-tail writes 0xa5 at 1536: data on both sides'],
      [
        'regrow-subject-data',
        'stale-grow-tail',
        1024,
        'over zeros: qemu reads zeros there, instar-stale-grow-tail 0xa5',
      ],
    ] as const
  ).map(([name, fault, written, what]): Scene => ({
    name,
    description: `a shrink to 1536 bytes (inside the first cluster), then a grow to 128 KiB: ${what}`,
    build: ran(
      caseOf([resize('1536', true), resize('128K')], { virtualSize: MiB }, [
        { op: 'write', offset: 0, length: written, pattern: 7 },
      ]),
      double(fault),
    ),
    into: ALL,
  })),
  {
    name: 'check-errors',
    description: "instar-none's shrink checked with failing reads of its refcount block (blkdebug): check errors",
    build: ran(caseOf(shrink2M), double('none')),
    into: ['images', 'check'],
    check: checkWithReadError(firstRefcountBlock),
  },
  {
    name: 'check-failed-io-error',
    description: "instar-none's shrink checked with failing reads of its L2 table (blkdebug): the check fails",
    build: ran(caseOf(shrink2M), double('none')),
    into: ['images', 'check'],
    check: checkWithReadError(firstL2Table),
  },

  // steps one side refuses or does not finish
  {
    name: 'both-refused',
    description: 'a shrink without --shrink: both refuse with their own messages and leave the image',
    build: ran(caseOf([resize('2M')]), double('none')),
    into: REFUSED,
  },
  {
    name: 'both-refused-other-code',
    description: 'a shrink without --shrink refused by a stand-in subject with exit 3: any two refusals agree',
    build: ran(caseOf([resize('2M')]), (b) =>
      script(b, 'refuse-3', "echo 'instar: shrinking needs --shrink' >&2; exit 3"),
    ),
    into: REFUSED,
  },
  {
    name: 'invalid-size',
    description: 'a size that is not a multiple of 512: both refuse',
    build: ran(caseOf([resize('1000')]), double('none')),
    into: REFUSED,
  },
  {
    name: 'subject-refused',
    description: 'instar-refuse-unaligned-shrink refuses a shrink off the cluster grid that qemu-img accepts',
    build: ran(caseOf([resize('1568K', true)]), double('refuse-unaligned-shrink')),
    into: REFUSED,
  },
  {
    name: 'subject-accepted-unchanged',
    description: 'instar-exit0-untouched accepts a shrink without --shrink that qemu-img refuses, and changes nothing',
    build: ran(caseOf([resize('2M')]), double('exit0-untouched')),
    into: REFUSED,
  },
  {
    name: 'subject-accepted-shrunk',
    description: 'a stand-in subject shrinks without being given --shrink, as asked',
    build: ran(caseOf([resize('2M')]), (b) =>
      script(b, 'shrink-anyway', 'exec qemu-img resize -q -f qcow2 --shrink "$image" "$size"'),
    ),
    into: REFUSED,
  },
  {
    name: 'crashed',
    description: 'instar-crash-on-shrink dies by SIGSEGV on a shrink qemu-img accepts',
    build: ran(caseOf(shrink2M), double('crash-on-shrink')),
    into: ['outcome', 'steps'],
  },
  {
    name: 'crashed-reference-refused',
    description: 'instar-crash-on-shrink dies on a shrink qemu-img refuses: the crash alone is reported',
    build: ran(caseOf([resize('2M')]), double('crash-on-shrink')),
    into: REFUSED,
  },
  {
    name: 'killed',
    description: 'instar-sigkill-self kills itself with SIGKILL on a grow',
    build: ran(caseOf([resize('5M')]), double('sigkill-self')),
    into: ['outcome', 'steps'],
  },
  {
    name: 'timed-out',
    description: 'instar-hang-on-grow hangs on a grow and is killed at the (2 s) timeout',
    build: ran(caseOf([resize('5M')]), double('hang-on-grow'), { timeoutMs: 2000 }),
    into: ['outcome', 'steps'],
  },
  {
    name: 'timed-out-both',
    description: 'both sides hang (instar-hang-on-grow on both): each is reported',
    build: ran(caseOf([resize('5M')]), double('hang-on-grow'), {
      reference: instar(double('hang-on-grow')),
      timeoutMs: 2000,
    }),
    into: ['outcome'],
  },
  {
    name: 'spawn-error',
    description: 'a subject that does not exist cannot be started, which counts as a refusal',
    build: ran(caseOf([resize('5M')]), async (b) => b.path('no-such-instar')),
    into: REFUSED,
  },
  {
    name: 'touched-on-refusal',
    description: 'instar-touch-on-refusal appends 512 bytes to the image it refuses to shrink',
    build: ran(caseOf([resize('2M')]), double('touch-on-refusal')),
    into: REFUSED,
  },
  {
    name: 'touched-reference-accepted',
    description: 'qemu-img accepts; a stand-in subject appends to the image and refuses',
    build: ran(caseOf(shrink2M), (b) => script(b, 'touch-and-refuse', 'head -c 512 /dev/zero >>"$image"; exit 1')),
    into: REFUSED,
  },
  {
    name: 'dirty-repaired',
    description:
      'a dirty lazy-refcounts image: qemu-img repairs it before it refuses a shrink without --shrink, ' +
      'and so does the double that runs it; reported on the reference side only',
    build: ran(caseOf([resize('2M')], { lazyRefcounts: true, dirty: true }, DATA_OPS.slice(1)), double('none')),
    into: REFUSED,
  },

  // how SIZE is read, by stand-in subjects with a size grammar of their own
  {
    name: 'grammar-refused',
    description: 'a stand-in subject refuses a fractional SIZE (1.5M) that qemu-img reads and grows to',
    build: ran(caseOf([resize('1.5M')], { virtualSize: MiB }, DATA_OPS.slice(0, 1)), (b) =>
      script(
        b,
        'no-fractions',
        `case "$size" in *.*) echo "instar: invalid size $size" >&2; exit 1;; esac\nexec ${double('none')} "$@"`,
      ),
    ),
    into: ['size-grammar', 'outcome'],
  },
  {
    name: 'grammar-accepted',
    description: 'a stand-in subject grows to 2 MiB for SIZE 1.5, which qemu-img cannot parse',
    build: ran(caseOf([resize('1.5')], { virtualSize: MiB }, DATA_OPS.slice(0, 1)), (b) =>
      script(b, 'lenient', 'exec qemu-img resize -q -f qcow2 "$image" 2M'),
    ),
    into: ['size-grammar', 'outcome'],
  },
  {
    name: 'grammar-read-differently',
    description: 'a stand-in subject reads SIZE 8192b as 8192 sectors (4 MiB), qemu-img as 8192 bytes',
    build: ran(caseOf([resize('8192b', true)], { virtualSize: MiB }, []), (b) =>
      script(b, 'sectors', 'exec qemu-img resize -q -f qcow2 --shrink "$image" $(( ${size%b} * 512 ))'),
    ),
    into: ['size-grammar', 'outcome'],
  },
  {
    name: 'grammar-read-differently-qemu-refused',
    description:
      'SIZE 8192b without --shrink: qemu-img reads 8192 bytes and refuses the shrink, ' +
      'a stand-in subject reads 8192 sectors and grows to 4 MiB',
    build: ran(caseOf([resize('8192b')], { virtualSize: MiB }, []), (b) =>
      script(b, 'sectors-grow', 'exec qemu-img resize -q -f qcow2 "$image" $(( ${size%b} * 512 ))'),
    ),
    into: ['size-grammar', 'outcome'],
  },
  {
    name: 'grammar-plain',
    description: 'SIZE in plain bytes, refused by a stand-in subject that quotes it: not a grammar difference',
    build: ran(caseOf([resize('2097152', true)]), (b) =>
      script(b, 'refuse-quoting', 'echo "instar: will not resize to $size" >&2; exit 1'),
    ),
    into: ['size-grammar'],
  },

  // guest content
  {
    name: 'differs-at-512',
    description: 'a grow by both, then different bytes in the second sector of the subject',
    build: async (b) => {
      const run = await runCase(b, caseOf([resize('+1M')]), double('none'));
      await b.io('subject.qcow2', ['write -q -P 1 512 512']);
      return { run };
    },
    into: ['compare'],
  },
  {
    name: 'differs-at-3m',
    description: 'a grow by both, then different bytes at 3 MiB: the same signature as the same difference elsewhere',
    build: async (b) => {
      const run = await runCase(b, caseOf([resize('+1M')]), double('none'));
      await b.io('subject.qcow2', ['write -q -P 1 3M 4k']);
      return { run };
    },
    into: ['compare'],
  },
  {
    name: 'size-differs',
    description: 'a grow by both, then the subject 1 MiB larger and zero there: compare only warns',
    build: async (b) => {
      const run = await runCase(b, caseOf([resize('+1M')]), double('none'));
      await b.resize(null, 'subject.qcow2', '+1M');
      return { run };
    },
    into: ['compare'],
  },

  // qemu-img info
  {
    name: 'same-fields',
    description: 'the same fields, only the host layout (actual-size) differs: no finding',
    build: built(async (b) => {
      await b.create('reference.qcow2', '', '4M');
      await b.create('subject.qcow2', '', '4M', DATA);
    }),
    into: ['info'],
  },
  {
    name: 'virtual-size',
    description: 'the subject grown to 5 MiB',
    build: built(async (b) => {
      await twoImages(b, '', '');
      await b.resize(null, 'subject.qcow2', '5M');
    }),
    into: ['info'],
  },
  {
    name: 'dirty-flag',
    description: 'the subject left dirty (lazy refcounts, qemu-io aborted after a write)',
    build: built(async (b) => {
      await twoImages(b, 'lazy_refcounts=on', 'lazy_refcounts=on', LATE);
      await b.run('qemu-io', abortAfterWrite('subject.qcow2'));
    }),
    into: ['info'],
  },
  {
    name: 'compat',
    description: 'the subject a version 2 image: compat, and the v3-only fields it lacks',
    build: built((b) => twoImages(b, '', 'compat=0.10')),
    into: ['info'],
  },
  {
    name: 'refcount-bits',
    description: 'the subject amended to 1-bit refcounts',
    build: built(async (b) => {
      await twoImages(b, '', '');
      await b.must('qemu-img', ['amend', '-f', 'qcow2', '-o', 'refcount_bits=1', 'subject.qcow2']);
    }),
    into: ['info'],
  },
  {
    name: 'extended-l2',
    description: 'the subject with extended L2 entries',
    build: built((b) => twoImages(b, '', 'extended_l2=on')),
    into: ['info'],
  },
  {
    name: 'compression-type',
    description: 'the subject with zstd compression',
    build: built((b) => twoImages(b, '', 'compression_type=zstd')),
    into: ['info'],
  },
  {
    name: 'corrupt',
    description: 'the corrupt bit set in the subject',
    build: built(async (b) => {
      await twoImages(b, '', '');
      await writeBytes(b.path('subject.qcow2'), HEADER_OFFSET.incompatibleFeatures, u64(2n));
    }),
    into: ['info'],
  },
  {
    name: 'two-fields',
    description: 'refcount bits and virtual size both differ: every differing field, sorted, in the detail',
    build: built(async (b) => {
      await twoImages(b, '', 'refcount_bits=1');
      await b.resize(null, 'subject.qcow2', '5M');
    }),
    into: ['info'],
  },
  {
    name: 'reference-failed',
    description: "qemu's result missing, the subject's fine",
    build: built((b) => b.create('subject.qcow2', '', '4M', DATA)),
    into: ['info'],
  },
  {
    name: 'both-failed',
    description: 'neither result can be opened: the subject is reported',
    build: built(emptied('subject.qcow2')),
    into: ['info'],
  },

  // images built and damaged without a resize
  {
    name: 'qemu-built',
    description: 'qemu-img and qemu-io: plain, compressed, zero and discarded clusters, 16-bit refcounts; silent',
    build: built((b) => b.create('subject.qcow2', 'refcount_bits=16', '4M', MIXED)),
    into: ['images'],
  },
  {
    name: 'snapshots',
    description: 'an internal snapshot and copy-on-write after it: snapshot table, L1, L2 and data clusters; silent',
    build: built(async (b) => {
      await b.create('subject.qcow2', 'refcount_bits=4', '4M', DATA);
      await b.must('qemu-img', ['snapshot', '-c', 's0', 'subject.qcow2']);
      await b.io('subject.qcow2', ['write -q -P 11 0 64k']);
    }),
    into: ['images'],
  },
  {
    name: 'bitmaps',
    description: 'a persistent dirty bitmap over written data: directory, table and data clusters; silent',
    build: built(async (b) => {
      await b.create('subject.qcow2', '', '4M');
      await b.must('qemu-img', ['bitmap', '--add', 'subject.qcow2', 'b0']);
      await b.io('subject.qcow2', DATA);
    }),
    into: ['images'],
  },
  {
    name: 'extended-l2-subclusters',
    description: 'extended L2 entries with 16 KiB clusters, subclusters written, zeroed and discarded; silent',
    build: built((b) =>
      b.create('subject.qcow2', 'extended_l2=on,cluster_size=16384,refcount_bits=2', '4M', [
        'write -q -P 1 4k 4k',
        'write -q -P 2 1M 68k',
        'write -q -z 2M 32k',
        'discard -q 1M 16k',
      ]),
    ),
    into: ['images'],
  },
  {
    name: 'zstd-lazy-refcounts',
    description: 'zstd compression and lazy refcounts, a compressed cluster; silent',
    build: built((b) =>
      b.create('subject.qcow2', 'compression_type=zstd,lazy_refcounts=on', '4M', [
        'write -q -c -P 5 0 64k',
        'write -q -P 6 1M 64k',
      ]),
    ),
    into: ['images'],
  },
  {
    name: 'dirty',
    description:
      'lazy refcounts and qemu-io aborted after a write (dirty bit set), then a refcount zeroed: ' +
      'refcounts are not judged on a dirty image',
    build: built(async (b) => {
      await b.create('subject.qcow2', 'lazy_refcounts=on', '4M', LATE);
      await b.run('qemu-io', abortAfterWrite('subject.qcow2'));
      await refcountOfFirstData(b.path('subject.qcow2'), 0);
    }),
    into: ['images'],
  },
  {
    name: 'undercounted',
    description: 'refcount 0 stored for a referenced data cluster: undercounted, and its COPIED flag disagrees',
    build: damaged('refcount_bits=8', (p) => refcountOfFirstData(p, 0)),
    into: DAMAGED,
  },
  {
    name: 'undercounted-both',
    description: "a data cluster's refcount zeroed in both results: qemu's own corruption is reported too",
    build: built(async (b) => {
      await b.create('reference.qcow2', '', '4M', DATA);
      await refcountOfFirstData(b.path('reference.qcow2'), 0);
      await b.copy('reference.qcow2', 'subject.qcow2');
    }),
    into: DAMAGED,
  },
  {
    name: 'overcounted',
    description: 'refcount 2 stored for a data cluster referenced once: overcounted, and COPIED disagrees',
    build: damaged('refcount_bits=8', (p) => refcountOfFirstData(p, 2)),
    into: DAMAGED,
  },
  {
    name: 'leaks-both',
    description: 'one leaked cluster in both results: leaks count only where qemu has none',
    build: built(async (b) => {
      await b.create('reference.qcow2', '', '4M', DATA);
      await leakOneCluster(b.path('reference.qcow2'));
      await b.copy('reference.qcow2', 'subject.qcow2');
    }),
    into: DAMAGED,
  },
  {
    name: 'leak-past-eof',
    description: 'refcount 1 for a cluster past the end of the file: leaked (qemu-img check does not look there)',
    build: damaged('refcount_bits=16', async (p) => {
      const { fileLength } = await withQcow2(p, async (r) => ({ fileLength: r.fileLength }));
      await setRefcount(p, Math.ceil(fileLength / 65536) + 3, 1);
    }),
    into: DAMAGED,
  },
  {
    name: 'copied-l1',
    description: 'the COPIED flag cleared on the active L1 entry',
    build: damaged('', async (p) => flipBit(p, (await firstMapping(p)).l1, COPIED)),
    into: DAMAGED,
  },
  {
    name: 'copied-compressed',
    description: 'the COPIED flag set on a compressed L2 entry',
    build: damaged('', async (p) => flipBit(p, await firstL2Table(p), COPIED), ['write -q -c -P 1 0 64k']),
    into: DAMAGED,
  },
  {
    name: 'beyond-eof',
    description: 'the file cut one cluster short: a referenced data cluster past its end',
    build: damaged('', async (p) => {
      const { fileLength } = await withQcow2(p, async (r) => ({ fileLength: r.fileLength }));
      await truncate(p, fileLength - 65536);
    }),
    into: DAMAGED,
  },
  {
    name: 'l2-offset-unaligned',
    description: 'the L1 entry pointed 512 bytes into its L2 table: invalid metadata, the real table leaked',
    build: damaged('', async (p) => flipBit(p, (await firstMapping(p)).l1, 512n)),
    into: DAMAGED,
  },
  {
    name: 'data-file-offset',
    description: 'an external data file image whose guest cluster 0 maps to another data file offset',
    build: damaged(
      'data_file=data.raw,refcount_bits=2',
      async (p) => writeBytes(p, await firstL2Table(p), u64(COPIED | (1n << 20n))),
      ['write -q -P 7 0 64k', 'write -q -P 9 1M 64k'],
    ),
    into: DAMAGED,
  },
  {
    name: 'l1-size-too-small',
    description: 'l1_size of 2 entries for a 4 MiB disk of 512-byte clusters',
    build: damaged('cluster_size=512', (p) => writeBytes(p, HEADER_OFFSET.l1Size, u32(2))),
    into: DAMAGED,
  },
  {
    name: 'compression-type-without-bit',
    description: 'compression_type 1 (zstd) without its incompatible feature bit',
    build: damaged('', (p) => writeBytes(p, HEADER_OFFSET.compressionType, Buffer.from([1]))),
    into: DAMAGED,
  },
  {
    name: 'refcount-table-too-large',
    description: "refcount_table_clusters of 2^20: above qemu's limit and past the end of the file",
    build: damaged('', (p) => writeBytes(p, HEADER_OFFSET.refcountTableClusters, u32(2 ** 20))),
    into: DAMAGED,
  },
  {
    name: 'refcount-order-changed',
    description: "the subject's result amended to 4-bit refcounts, qemu's kept at 16",
    build: damaged('refcount_bits=16', (p) => execa('qemu-img', ['amend', '-f', 'qcow2', '-o', 'refcount_bits=4', p])),
    into: DAMAGED,
  },
  {
    name: 'cluster-bits-changed',
    description: "the same data in 32 KiB clusters against qemu's 64 KiB",
    build: built((b) => twoImages(b, '', 'cluster_size=32768')),
    into: DAMAGED,
  },
  {
    name: 'autoclear-cleared',
    description: 'the bitmaps autoclear bit cleared while the bitmaps extension stays',
    build: built(async (b) => {
      await b.create('reference.qcow2', '', '4M');
      await b.must('qemu-img', ['bitmap', '--add', 'reference.qcow2', 'b0']);
      await b.copy('reference.qcow2', 'subject.qcow2');
      await writeBytes(b.path('subject.qcow2'), HEADER_OFFSET.autoclearFeatures, u64(0n));
    }),
    into: DAMAGED,
  },
  {
    name: 'feature-table-changed',
    description: 'the feature name table cut by its first 48 bytes',
    build: damaged('', (p) =>
      rewriteHeaderExtensions(p, (xs) =>
        xs.map((x) => (x.type === EXT_FEATURE_TABLE ? { ...x, data: x.data.subarray(48) } : x)),
      ),
    ),
    into: DAMAGED,
  },
  {
    name: 'extension-added',
    description: 'an unknown header extension (0x12345678) added',
    build: damaged('', (p) =>
      rewriteHeaderExtensions(p, (xs) => [...xs, { ...xs[0]!, type: 0x12345678, data: Buffer.from('hello') }]),
    ),
    into: DAMAGED,
  },
  {
    name: 'extensions-twice',
    description: 'every header extension written twice: a singleton repeated, the multiset changed',
    build: damaged('', (p) => rewriteHeaderExtensions(p, (xs) => [...xs, ...xs])),
    into: DAMAGED,
  },
  {
    name: 'bitmaps-extension-dropped',
    description: 'the bitmaps extension removed while the autoclear bit stays: its clusters leak',
    build: built(async (b) => {
      await b.create('reference.qcow2', '', '4M');
      await b.must('qemu-img', ['bitmap', '--add', 'reference.qcow2', 'b0']);
      await b.copy('reference.qcow2', 'subject.qcow2');
      await rewriteHeaderExtensions(b.path('subject.qcow2'), (xs) => xs.filter((x) => x.type !== EXT_BITMAPS));
    }),
    into: DAMAGED,
  },
  {
    name: 'reference-not-qcow2',
    description: "qemu's result a raw file, the subject's a clean qcow2 image: reported on the reference side",
    build: built(async (b) => {
      await b.create('subject.qcow2', '', '4M', DATA);
      await b.must('qemu-img', ['create', '-q', '-f', 'raw', 'reference.qcow2', '1M']);
    }),
    into: ['images'],
  },
  {
    name: 'reference-undercounted',
    description: "damage in qemu's result (a data cluster's refcount 0): reported on the reference side",
    build: built(async (b) => {
      await b.create('reference.qcow2', 'refcount_bits=16', '4M', DATA);
      await b.copy('reference.qcow2', 'subject.qcow2');
      await refcountOfFirstData(b.path('reference.qcow2'), 0);
    }),
    into: DAMAGED,
  },

  // the results used after the last step (images after use)
  {
    name: 'used-clean',
    description: "instar-none's shrink, used: no finding",
    build: used(caseOf(shrink2M), double('none')),
    into: ['after-use', 'images'],
  },
  {
    name: 'used-leaks',
    description: 'instar-leak-on-shrink, used: the leak is still there',
    build: used(caseOf(shrink2M), double('leak-on-shrink')),
    into: ['after-use', 'images'],
  },
  {
    name: 'used-corruptions',
    description:
      "a grow by both, then the subject's data cluster at 3 MiB given refcount 0: " +
      'the workload allocates it again over the data, corruptions',
    build: used(caseOf([resize('+1M')]), double('none'), {
      damage: async (b) => {
        const { l2, clusterSize } = await firstMapping(b.path('subject.qcow2'));
        const entry = await withQcow2(b.path('subject.qcow2'), async (r) =>
          (await r.read(l2 + 8 * ((3 * MiB) / clusterSize), 8)).readBigUInt64BE(),
        );
        await setRefcount(b.path('subject.qcow2'), Number((entry & HOST_OFFSET) / BigInt(clusterSize)), 0);
      },
    }),
    into: ['after-use', 'images'],
  },
  {
    name: 'used-check-errors',
    description: "instar-none's shrink, used, checked with failing reads of its refcount block (blkdebug)",
    build: used(caseOf(shrink2M), double('none'), { check: checkWithReadError(firstRefcountBlock) }),
    into: ['after-use', 'images'],
  },
  {
    name: 'used-content-differs',
    description: 'instar-stale-grow-tail: 0xa5 left at the old end of a grow, still there after use',
    build: used(caseOf([resize('+1536K')]), double('stale-grow-tail')),
    into: ['after-use', 'images'],
  },
  {
    name: 'used-size-differs',
    description: "instar-exit0-untouched: the subject's result keeps its size, qemu's shrank off the cluster grid",
    build: used(caseOf([resize('2098176', true)]), double('exit0-untouched')),
    into: ['after-use', 'images'],
  },
  {
    name: 'used-unreadable-both',
    description: 'both results emptied: the workload fails on both alike, check and compare fail',
    build: used(caseOf(shrink2M), double('none'), { damage: emptied('reference.qcow2', 'subject.qcow2') }),
    into: ['after-use', 'images'],
  },
  {
    name: 'used-workload-failed',
    description: "instar-truncate-zero: the workload fails on the subject's emptied result only",
    build: used(caseOf(shrink2M), double('truncate-zero')),
    into: ['after-use', 'images'],
  },
  {
    name: 'used-workload-failed-reference',
    description: "qemu's result marked corrupt: the workload fails on the reference only",
    build: used(caseOf(shrink2M), double('none'), {
      damage: (b) => writeBytes(b.path('reference.qcow2'), HEADER_OFFSET.incompatibleFeatures, u64(2n)),
    }),
    into: ['after-use', 'images'],
  },
];

/** Records a scene in each of its directories; file (relative to testdata/) -> content. */
async function recordScene(s: Scene, files: Map<string, Buffer | string>) {
  const b = await bench();
  const { run, afterUse } = await s.build(b);
  const into = new Set(s.into);
  const at = (dir: Directory) => `${dir}/${s.name}.json`;
  const put = (dir: Directory, input: unknown) =>
    files.set(at(dir), `${JSON.stringify({ description: s.description, input, expected: null }, null, 2)}\n`);
  const need = <T>(what: T | null | undefined, dir: Directory): T => {
    if (what === null || what === undefined) throw new Error(`scene ${s.name} has nothing to record in ${dir}/`);
    return what;
  };
  const images = into.has('images') ? at('images') : null;
  if (into.has('images')) {
    const present = {
      subject: await exists(b.path('subject.qcow2')),
      reference: await exists(b.path('reference.qcow2')),
    };
    const before = await exists(b.path('before.qcow2'));
    const input: ImagesInput = {
      subject: present.subject ? `${s.name}.qcow2.gz` : null,
      reference: present.reference ? `${s.name}.reference.qcow2.gz` : null,
      before: before ? `${s.name}.before.qcow2.gz` : null,
      info: present.subject ? await b.info('subject.qcow2') : null,
    };
    if (present.subject) files.set(`images/${input.subject}`, await readFile(b.path('subject.qcow2')));
    if (present.reference) files.set(`images/${input.reference}`, await readFile(b.path('reference.qcow2')));
    if (before) files.set(`images/${input.before}`, await readFile(b.path('before.qcow2')));
    put('images', input);
  }
  if (into.has('info'))
    put('info', { reference: await b.info('reference.qcow2'), subject: await b.info('subject.qcow2') });
  if (into.has('check')) put('check', { ...(await checks(b, s.check)), images });
  if (into.has('compare')) put('compare', await compareOf(b, run));
  if (into.has('outcome')) put('outcome', need(run, 'outcome').step);
  if (into.has('unchanged')) put('unchanged', need(run?.refusal, 'unchanged'));
  if (into.has('size-grammar')) {
    const r = need(run, 'size-grammar');
    // as the pipeline has them: both sizes when both accepted, the subject's when only it did
    const ok = (side: CommandRecord) => classifyOutcome(side) === 'ok';
    const sizes = !ok(r.step.subject)
      ? null
      : {
          reference: ok(r.step.reference) ? await headerSize(b, 'reference.qcow2') : null,
          subject: await headerSize(b, 'subject.qcow2'),
        };
    put('size-grammar', {
      case: r.case,
      index: r.index,
      sizeBefore: r.history[r.index]!.before,
      reference: r.step.reference,
      subject: r.step.subject,
      sizes,
    });
  }
  if (into.has('after-use')) {
    const observed = need(afterUse, 'after-use');
    put('after-use', { ...observed, context: { ...observed.context, images } });
  }
  if (into.has('steps')) {
    const r = need(run, 'steps');
    const accepted =
      r.refusal === null && classifyOutcome(r.step.reference) === 'ok' && classifyOutcome(r.step.subject) === 'ok';
    if (accepted && !['check', 'images', 'info', 'compare'].every((d) => into.has(d as Directory)))
      throw new Error(`scene ${s.name}: an accepted step is judged from its check, images, info and compare`);
    const input: StepInput = {
      case: r.case,
      index: r.index,
      sizeBefore: r.history[r.index]!.before,
      history: r.history,
      outcome: at('outcome'),
      refusal: into.has('unchanged') ? at('unchanged') : null,
      results: accepted ? { check: at('check'), images: at('images'), info: at('info'), compare: at('compare') } : null,
    };
    put('steps', input);
  }
}

// ---- reports/ and index/ ------------------------------------------------------------------------

const fuzz = (args: string[]) =>
  execa(process.execPath, ['--import', 'tsx', join(ROOT, 'cli', 'fuzz.ts'), ...args], { cwd: ROOT, reject: false });

/** The folder of the report of a run whose signature starts with `prefix`. */
async function folderOf(reports: string, prefix: string): Promise<string> {
  const summary = JSON.parse(await readFile(join(reports, 'summary.json'), 'utf8')) as {
    signatures: { signature: string; folder: string }[];
    flaky: { signature: string; folder: string }[];
  };
  const seen = [...summary.signatures, ...summary.flaky].find((s) => s.signature.startsWith(prefix));
  if (!seen) throw new Error(`no ${prefix} report in ${reports}: ${JSON.stringify(summary.signatures)}`);
  return join(reports, seen.folder);
}

/** Reports of earlier formats, as older harnesses wrote them: kept by --record, which cannot make
 * them again; the index shows the first of them beside the new ones. */
const LEGACY_REPORTS = [
  'format-1-check-corruptions',
  'format-2-content-differs',
  'format-2-control',
  'format-2-flaky',
  'format-3-corruptions',
];

/** The fuzz runs behind testdata/reports and testdata/index: report.json files and one summary. */
async function recordReports(files: Map<string, Buffer | string>): Promise<string[]> {
  const b = await bench();
  const run = async (name: string, args: string[]) => {
    const reports = b.path(name);
    const r = await fuzz([...args, '--reports', reports]);
    if (r.exitCode === 2) throw new Error(`fuzz ${args.join(' ')} failed: ${r.stderr}`);
    return reports;
  };
  const noKnown = b.path('no-known.json');
  await writeFile(noKnown, '{"divergences": []}\n');
  // the operations of the runs these reports were first recorded with: more operations draw other cases
  const ops = ['--ops', 'resize,amend,snapshot'];
  const twoFaults = await run('two-faults', [
    '--instar',
    double('two-faults'),
    ...ops,
    '--iterations',
    '40',
    '--seed',
    '3',
  ]);
  // without the registry, qemu-img's own change of a dirty image it refuses to resize is filed
  const control = await run('control', ['--control', ...ops, '--known', noKnown, '--iterations', '60', '--seed', '5']);
  // refuses the first resize it is asked for only, so that confirmation never reproduces it
  const once = await script(
    b,
    'flaky-instar',
    `if [ "$1" = resize ] && [ ! -e ${b.path('refused-once')} ]; then : >${b.path('refused-once')}; ` +
      `echo 'flaky-instar: refusing once' >&2; exit 1; fi\nexec ${double('none')} "$@"`,
  );
  // case 0 of seed 24 is a plain image and a shrink: no registry entry explains a refusal
  const flaky = await run('flaky', ['--instar', once, ...ops, '--iterations', '1', '--seed', '24', '--jobs', '1']);
  // a repair whose exit code counts the corruptions it fixed (case 36 of seed 1): damage written, a
  // repair oracle finding
  const repairArgs = ['--ops', 'resize,amend,snapshot,repair', '--iterations', '40', '--seed', '1', '--known', noKnown];
  const repair = await run('repair', ['--instar', double('repair-exit-counts-fixed'), ...repairArgs]);
  // a commit that writes the base's data and leaves its refcounts (case 0 of seed 1): a chain's levels
  const chainArgs = ['--ops', 'commit,rebase', '--iterations', '10', '--seed', '1'];
  const chain = await run('chain', ['--instar', double('commit-leaves-base-refcounts'), ...chainArgs]);
  // the quick start's find (seed 1): #365's garbled refcount blocks, with its picture of the damage
  const stride = await run('365-stride', ['--instar', double('365-stride'), '--iterations', '50', '--seed', '1']);
  const picked: Record<string, string> = {
    'two-faults-corruptions': await folderOf(twoFaults, 'check/corruptions/'),
    'two-faults-content-differs': await folderOf(twoFaults, 'content/content-differs/'),
    'control-image-modified': await folderOf(control, 'unchanged-on-refusal/image-modified-on-refusal/'),
    'flaky-refused': await folderOf(flaky, 'outcome/refused/'),
    'repair-exit-differs': await folderOf(repair, 'repair:repair/exit-differs/'),
    'chain-member-check-failed': await folderOf(chain, 'commit:chain/member-check-failed/'),
    '365-stride-corruptions': await folderOf(stride, 'check/corruptions/'),
  };
  for (const [name, folder] of Object.entries(picked))
    files.set(join('reports', name, 'report.json'), await readFile(join(folder, 'report.json')));

  // the index: those reports and a legacy one in one directory, rechecked against qemu-img (the
  // instar reports are fixed there, the control one reproduces), a folder that is not a report,
  // and the two-fault run's summary
  const index = b.path('index');
  const placed: Record<string, string> = {};
  for (const [name, folder] of Object.entries(picked)) {
    const rel = name.startsWith('flaky') ? join('flaky', name) : name;
    await cp(folder, join(index, rel), { recursive: true, filter: (f) => !f.endsWith('.gz') });
    placed[rel] = rel;
  }
  await cp(join(TESTDATA, 'reports', LEGACY_REPORTS[1]!), join(index, LEGACY_REPORTS[1]!), { recursive: true });
  placed[LEGACY_REPORTS[1]!] = LEGACY_REPORTS[1]!;
  await copyFile(join(twoFaults, 'summary.json'), join(index, 'summary.json'));
  const recheck = await fuzz(['--recheck', '--control', '--reports', index]);
  if (recheck.exitCode === 2) throw new Error(`recheck failed: ${recheck.stderr}`);
  files.set(join(INDEX_CASE, 'reports', 'summary.json'), await readFile(join(index, 'summary.json')));
  for (const rel of Object.keys(placed))
    files.set(join(INDEX_CASE, 'reports', rel, 'report.json'), await readFile(join(index, rel, 'report.json')));
  files.set(join(INDEX_CASE, 'reports', 'damaged', 'report.json'), '{"signature": ');
  return Object.keys(picked);
}

// ---- recording ----------------------------------------------------------------------------------

/** Records every input of the recorded directories: file (relative to testdata/) -> content, images
 * raw (gzipped when written); and the report folders recorded. */
async function recordCorpus(): Promise<{ files: Map<string, Buffer | string>; reports: string[] }> {
  const files = new Map<string, Buffer | string>();
  for (const s of SCENES) await recordScene(s, files);
  await recordFormatScenes((await bench()).dir, files);
  // sizes unknown: what the content oracle leaves to the info oracle (not a recording of its own)
  const identical = JSON.parse(files.get('compare/faithful-shrink.json') as string) as TestCase<CompareInput>;
  const unknownSize = { ...identical.input, compare: { ...identical.input.compare, subjectSize: null } };
  const description = "faithful-shrink's identical results with the subject's size unknown (info failed): no finding";
  files.set(
    'compare/size-unknown.json',
    `${JSON.stringify({ description, input: unknownSize, expected: null }, null, 2)}\n`,
  );
  return { files, reports: await recordReports(files) };
}

async function recordFormatsAlone(): Promise<{ files: Map<string, Buffer | string>; reports: string[] }> {
  const files = new Map<string, Buffer | string>();
  await recordFormatScenes((await bench()).dir, files);
  return { files, reports: [] };
}

// ---- the command --------------------------------------------------------------------------------

const flags = new Set(process.argv.slice(2));
// --record=format-images: record that directory alone (its scenes need no others)
const recordFormatsOnly = flags.delete('--record=format-images');
if (recordFormatsOnly) flags.add('--record');
const unknown = [...flags].filter((f) => f !== '--update' && f !== '--record');
if (unknown.length > 0) {
  console.error(`unknown option ${unknown.join(' ')}; use --update or --record (testdata/README.md)`);
  process.exit(2);
}

if (flags.has('--record')) {
  work = await mkdtemp(join(tmpdir(), 'testdata-record-'));
  try {
    const { files, reports } = recordFormatsOnly ? await recordFormatsAlone() : await recordCorpus();
    const dirs = recordFormatsOnly ? ['format-images'] : RECORDED_DIRS;
    for (const dir of dirs) await rm(join(TESTDATA, dir), { recursive: true, force: true });
    for (const name of reports) await rm(join(TESTDATA, 'reports', name), { recursive: true, force: true });
    for (const [file, data] of files) {
      await mkdir(dirname(join(TESTDATA, file)), { recursive: true });
      await writeFile(join(TESTDATA, file), file.endsWith('.gz') ? gzipSync(data, { level: 9 }) : data);
    }
    console.log(`recorded ${files.size} input files`);
  } finally {
    killAllChildren();
    await rm(work, { recursive: true, force: true });
  }
}

const wanted = await wantedFiles();
const changed = await differences(wanted);
if (flags.has('--update') || flags.has('--record')) {
  for (const { file } of changed) {
    await mkdir(dirname(join(TESTDATA, file)), { recursive: true });
    await writeFile(join(TESTDATA, file), wanted[file]!);
    if (file.endsWith('.sh')) await chmod(join(TESTDATA, file), 0o755);
  }
  console.log(`${changed.length} of ${Object.keys(wanted).length} expectation and golden files rewritten`);
} else {
  for (const d of changed) console.log(`testdata/${d.file}: ${d.firstDifference ?? 'missing'}`);
  console.log(
    changed.length === 0
      ? `all ${Object.keys(wanted).length} expectation and golden files are up to date`
      : `${changed.length} files differ from what their inputs give; npm run testdata -- --update rewrites them`,
  );
  process.exitCode = changed.length === 0 ? 0 : 1;
}

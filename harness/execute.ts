import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { withDir } from 'tmp-promise';
import { CaseAborted, DiskFullError, isNoSpace } from './errors.ts';
import { buildCommands, compareArgs, imagePath, layoutOf, plannedSizes, regrowWindows, type Case, type Layout, type SideFiles, type StepPlan } from './case.ts';
import { runCommand, type CommandRecord } from './process.ts';
import { qemuImg, resizeArgs, type Resizer } from './subjects.ts';
import { checkOracle, isClean, parseCheck, type CheckObservation } from '../oracles/check.ts';
import { contentOracle, regrowQuirk } from '../oracles/content.ts';
import type { Finding } from '../oracles/finding.ts';
import { infoFromStructure, infoOracle, type InfoObservation } from '../oracles/info.ts';
import { classifyOutcome, outcomeOracle, type OutcomeClass } from '../oracles/outcome.ts';
import { unchangedOnRefusalOracle } from '../oracles/unchanged.ts';
import { afterUseOracle, afterUseWorkload } from '../oracles/after-use.ts';
import { compareContent, planComparison, type ComparePlan } from './content-compare.ts';
import { hasHostClustersFrom, readQcow2Header, structuralCheck } from './qcow2.ts';
import { structureOracle } from '../oracles/structure.ts';

// Where each side's files are is the case's layout (layoutOf in case.ts): base.qcow2,
// reference.qcow2 and subject.qcow2 in the work directory, or, with an external data file, each in
// a directory of its own with its data file and backing image.

export interface StepRecord {
  index: number;
  sizeBefore: number;
  plan: StepPlan;
  reference: OutcomeClass;
  subject: OutcomeClass;
  /** For a shrink qemu-img accepted: whether clusters holding data lay past the new end. */
  discardsAllocated?: boolean;
  /** What the subject printed on stderr for this step; registry entries may match on it. */
  subjectStderr: string;
  subjectCheck?: CheckObservation;
  referenceCheck?: CheckObservation;
  referenceInfo?: InfoObservation;
  subjectInfo?: InfoObservation;
}

/** The qemu-io workload run on both results after the last step, and what followed. */
export interface AfterUseRecord {
  workload: string[];
  referenceExit: number | null;
  subjectExit: number | null;
}

/** A finding together with the step it came from. */
export interface StepFinding extends Finding {
  step: number;
}

export interface CaseResult {
  findings: StepFinding[];
  steps: StepRecord[];
  afterUse: AfterUseRecord | null;
  /** Every command run, in order, with paths relative to the work directory. */
  commands: CommandRecord[];
  /** The base image and both results, gzipped; only when asked for. */
  artifacts: { name: string; data: Buffer }[];
  /** Images not kept, and why (missing, or too large to store). */
  artifactsSkipped: string[];
  /** Allocated clusters of the base image as qemu-img check and the qcow2 reader count them
   * (null for a dirty base, whose check is skipped): a self-check of the reader. */
  baseReader: { byCheck: number; byReader: number | null } | null;
}

/** The generator promised a valid, clean base image and qemu disagrees: a harness bug. */
export class CaseSetupError extends Error {
  constructor(
    message: string,
    readonly command: CommandRecord,
  ) {
    super(message);
  }
}

export interface ExecuteOptions {
  subject: Resizer;
  timeoutMs: number;
  /** Parent of the case's temporary directory. */
  workdir: string;
  /** Aborting kills the running processes and rejects with CaseAborted. */
  signal?: AbortSignal;
  /** Called with the findings of a case; true keeps the images for a report. */
  wantArtifacts: (findings: StepFinding[], steps: StepRecord[]) => boolean;
}

/** Files are read in blocks: an all-zero block (a hole, or preallocated space) is hashed as one
 * marker byte and not copied, so files mostly made of holes cost a read, not a hash or a write. */
const BLOCK = 64 * 1024;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** The blocks of an open file with their offsets, the last one possibly short. Reads fill the
 * buffer to the end (or to EOF), so blocks always start at the same offsets. */
async function* blocksOf(fd: FileHandle): AsyncGenerator<{ at: number; block: Buffer; zero: boolean }> {
  const buffer = Buffer.allocUnsafe(16 * BLOCK);
  for (let at = 0, filled = -1; filled !== 0; at += filled) {
    filled = 0;
    for (let n = -1; n !== 0 && filled < buffer.length; filled += n) n = (await fd.read(buffer, filled, buffer.length - filled, at + filled)).bytesRead;
    for (let b = 0; b < filled; b += BLOCK) {
      const block = buffer.subarray(b, Math.min(b + BLOCK, filled));
      yield { at: at + b, block, zero: block.equals(ZERO_BLOCK.subarray(0, block.length)) };
    }
  }
}

/** The files' content hash; a subject may delete the image, which is evidence, not a harness
 * error. */
async function contentHash(...files: string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const file of files) {
    const fd = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (fd === null) {
      hash.update(`${file} missing\0`);
      continue;
    }
    try {
      for await (const { block, zero } of blocksOf(fd)) {
        if (zero && block.length === BLOCK) hash.update('z');
        else hash.update('d').update(block);
      }
    } finally {
      await fd.close();
    }
    hash.update('\0');
  }
  return hash.digest('hex');
}

/** Copies a file, keeping its holes: a data file is as long as the virtual disk and mostly a hole,
 * and copyFile on tmpfs writes every byte of it. */
async function copySparse(from: string, to: string): Promise<void> {
  const src = await open(from, 'r');
  const dst = await open(to, 'w');
  try {
    await dst.truncate((await src.stat()).size);
    for await (const { at, block, zero } of blocksOf(src)) if (!zero) await dst.write(block, 0, block.length, at);
  } finally {
    await Promise.all([src.close(), dst.close()]);
  }
}

/** Images above this host size are not stored in reports (a subject may write a huge file). */
export const MAX_STORED_IMAGE = 128 * 1024 * 1024;

/** The files a report keeps, as (stored name, path relative to the work directory): the three
 * images, the backing image once (no side writes it) and each side's data file. */
export function artifactFiles(layout: Layout): { name: string; path: string }[] {
  const sides = [layout.base, layout.reference, layout.subject];
  const files = sides.map((s) => ({ name: s.image, path: imagePath(s) }));
  if (layout.backing) files.push({ name: layout.backing, path: join(layout.base.dir, layout.backing) });
  if (layout.dataFile) for (const s of sides) files.push({ name: `${s.dir}.${layout.dataFile}`, path: join(s.dir, layout.dataFile) });
  return files;
}

async function collectArtifacts(dir: string, layout: Layout) {
  const artifacts: CaseResult['artifacts'] = [];
  const artifactsSkipped: string[] = [];
  for (const { name, path } of artifactFiles(layout)) {
    const size = await stat(join(dir, path)).then((s) => s.size, () => null);
    if (size === null) artifactsSkipped.push(`${name}: missing after the run`);
    else if (size > MAX_STORED_IMAGE) artifactsSkipped.push(`${name}: ${size} bytes, above the ${MAX_STORED_IMAGE}-byte limit for stored images`);
    else artifacts.push({ name: `${name}.gz`, data: await promisify(gzip)(await readFile(join(dir, path))) });
  }
  return { artifacts, artifactsSkipped };
}

const NO_SPACE = /No space left on device/i;

const headerSize = (file: string) => readQcow2Header(file).then((h) => h.size, () => null);

const sizeOf = (info: InfoObservation) => (info.ok ? Number(info.fields['virtual-size']) : null);

/** Builds the base image, copies it for each side, runs the steps and the oracles after each.
 * The case stops at the first step with a finding: later steps would compare diverged images.
 * A case runs its commands one after the other: a case takes one core, and --jobs spreads the
 * cases over the cores (side-by-side commands made --jobs 1 take 1.4 cores, so --jobs 2 could
 * not double it), and commands are listed in the order they ran. The harness's own reading of the
 * images overlaps the commands that do not write them. */
export async function runCase(c: Case, options: ExecuteOptions): Promise<CaseResult> {
  const layout = layoutOf(c);
  const { base, reference, subject } = layout;
  return withDir(
    async ({ path: dir }) => {
      /** In-process work that runs while commands do (copies, reading images): awaited where its
       * result is needed, and always before the case directory is removed. */
      const inFlight: Promise<unknown>[] = [];
      const background = <T>(work: Promise<T>): Promise<T> => {
        inFlight.push(work.catch(() => undefined));
        return work;
      };
      try {
        return await caseBody(dir, background);
      } finally {
        await Promise.all(inFlight);
      }
    },
    { unsafeCleanup: true, prefix: 'instar-fuzz-', tmpdir: options.workdir },
  ).catch((err: unknown) => {
    if (isNoSpace(err)) throw new DiskFullError(`the work directory ${options.workdir} is full: ${(err as Error).message}; free space or pass --workdir DIR`);
    throw err;
  });

  async function caseBody(dir: string, background: <T>(work: Promise<T>) => Promise<T>): Promise<CaseResult> {
    const commands: CommandRecord[] = [];
    /** Runs a command in a side's directory (the work directory itself without a data file). */
    const run = async (program: string, args: string[], where: SideFiles | null = null) => {
      const record = await runCommand(program, args, { timeoutMs: options.timeoutMs, cwd: where ? join(dir, where.dir) : dir, signal: options.signal });
      commands.push(record);
      if (options.signal?.aborted) throw new CaseAborted();
      // both sides write into the work directory: a full disk there is no divergence
      if (NO_SPACE.test(record.stderr)) throw new DiskFullError(`the work directory ${options.workdir} is full (${program}: ${record.stderr.trim().split('\n')[0]}); free space or pass --workdir DIR`);
      return record;
    };
    const path = (side: SideFiles) => join(dir, imagePath(side));
    /** What a refused step must leave as it was: the image and its data file. */
    const fingerprint = (side: SideFiles) => (layout.dataFile ? contentHash(path(side), join(dir, side.dir, layout.dataFile)) : contentHash(path(side)));
    const check = (side: SideFiles) => run('qemu-img', ['check', '-f', 'qcow2', '--output=json', side.image], side);
    /** Guest content of both results, at a cost that grows with the allocated data, not the
     * virtual size (content-compare.ts); a data file needs its name given: a plain compare. */
    const compareContents = (plan: Promise<ComparePlan> | undefined) =>
      layout.dataFile
        ? run('qemu-img', compareArgs(layout))
        : compareContent(imagePath(reference), imagePath(subject), { timeoutMs: options.timeoutMs, cwd: dir, signal: options.signal, run: (program, args) => run(program, args), plan });
    /** compareContent's reading of both images, started while another command runs. */
    const planCompare = () => (layout.dataFile ? undefined : background(planComparison(imagePath(reference), imagePath(subject), { cwd: dir })));

    if (layout.dataFile) await Promise.all([base, reference, subject].map((s) => mkdir(join(dir, s.dir))));
    for (const cmd of buildCommands(c, base.image)) {
      const r = await run(cmd.program, cmd.args, base);
      const ok = cmd.expect === 'abort' ? r.signal === 'SIGABRT' : r.exitCode === 0;
      if (!ok) throw new CaseSetupError(`${cmd.what} failed (exit ${r.exitCode ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`, r);
    }
    const plans = plannedSizes(c);
    /** What a step needs to know of both images before either is resized: their hashes and
     * whether a shrink discards data. Read while the commands before it only read them. */
    const prepare = (index: number) => {
      const { plan } = plans[index]!;
      return Promise.all([fingerprint(reference), fingerprint(subject), plan.kind === 'shrink' && plan.accepted ? hasHostClustersFrom(path(reference), plan.target!) : undefined]);
    };
    // the copies and the first step's reading go on while qemu-img checks the base image
    const copied = (async () => {
      for (const side of [reference, subject]) {
        await copyFile(path(base), path(side), constants.COPYFILE_FICLONE);
        // with a data file each side has its own directory: its own data file and backing image
        if (layout.dataFile) await copySparse(join(dir, base.dir, layout.dataFile), join(dir, side.dir, layout.dataFile));
        if (layout.dataFile && layout.backing) await copyFile(join(dir, base.dir, layout.backing), join(dir, side.dir, layout.backing), constants.COPYFILE_FICLONE);
      }
    })();
    let prepared: ReturnType<typeof prepare> | null = background(copied.then(() => prepare(0)));
    // The generator promised a clean image (a dirty one's refcounts lag by design), and the
    // qcow2 reader must count the same allocated clusters as qemu-img check: both are checked.
    let baseReader: CaseResult['baseReader'] = null;
    if (!c.image.dirty) {
      const structure = background(structuralCheck(path(base)));
      const baseCheck = await check(base);
      const baseStructure = await structure;
      if (baseCheck.exitCode !== 0) throw new CaseSetupError(`the base image is not clean (qemu-img check exit ${baseCheck.exitCode ?? baseCheck.signal}): ${baseCheck.stdout.trim()}`, baseCheck);
      const byCheck = parseCheck(baseCheck.exitCode, baseCheck.stdout, baseCheck.stderr).report?.['allocated-clusters'] ?? 0;
      baseReader = { byCheck, byReader: baseStructure.readable ? baseStructure.allocatedClusters : null };
    }

    /** The subject's check, and qemu's own result's only when needed: to tell subject leaks
     * and corruptions from ones qemu's result has too. */
    const checks = async (subCheck: CommandRecord) => {
      const subjectCheck = parseCheck(subCheck.exitCode, subCheck.stdout, subCheck.stderr);
      if (isClean(subjectCheck)) return { subjectCheck };
      const refCheck = await check(reference);
      return { subjectCheck, referenceCheck: parseCheck(refCheck.exitCode, refCheck.stdout, refCheck.stderr) };
    };

    /** Re-attributes a content difference that is qemu's regrow quirk (two reads, only then). */
    const withRegrowQuirk = async (content: Finding[], step: number): Promise<Finding[]> => {
      const at = (content[0]?.evidence as { firstMismatch?: number | null } | undefined)?.firstMismatch;
      const window = typeof at === 'number' ? (regrowWindows(c, step).find((w) => at >= w.start && at < w.end) ?? null) : null;
      if (window === null) return content;
      const readsZero = async (side: SideFiles) => (await run('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P 0 ${window.start} ${window.end - window.start}`, side.image], side)).exitCode === 0;
      const refZero = await readsZero(reference);
      const subZero = await readsZero(subject);
      const quirk = regrowQuirk(window, refZero, subZero);
      return quirk ? [quirk] : content;
    };

    const steps: StepRecord[] = [];
    const findings: StepFinding[] = [];
    for (const [index, { before, plan }] of plans.entries()) {
      const step = c.steps[index]!;
      const [refHash, subHash, discardsAllocated] = await (prepared ?? prepare(index));
      prepared = null;
      const ref = await run(qemuImg.program, resizeArgs(qemuImg, step, reference.image), reference);
      const sub = await run(options.subject.program, resizeArgs(options.subject, step, subject.image), subject);
      const record: StepRecord = { index, sizeBefore: before, plan, reference: classifyOutcome(ref), subject: classifyOutcome(sub), discardsAllocated, subjectStderr: sub.stderr };
      steps.push(record);
      const found: Finding[] = outcomeOracle(ref, sub, plan.kind);
      if (record.reference === 'refused' || record.subject === 'refused') {
        found.push(
          ...unchangedOnRefusalOracle({
            reference: record.reference === 'refused' ? { before: refHash, after: await fingerprint(reference) } : null,
            subject: record.subject === 'refused' ? { before: subHash, after: await fingerprint(subject) } : null,
          }),
        );
      }

      if (record.reference === 'ok' && record.subject === 'ok') {
        // the info fields come from the headers the structure oracle reads anyway (test/info.test.ts
        // holds them equal to `qemu-img info`): two processes fewer per step
        // the structure oracle reads both images in-process while qemu-img checks and compares
        const structures = background(Promise.all([structuralCheck(path(subject)), structuralCheck(path(reference))]));
        // and the next step's reading too: nothing writes the images until it starts
        if (index + 1 < plans.length) prepared = background(prepare(index + 1));
        const comparePlan = planCompare();
        const subCheck = await check(subject);
        const compare = await compareContents(comparePlan);
        const [subStructure, refStructure] = await structures;
        Object.assign(record, await checks(subCheck));
        record.referenceInfo = infoFromStructure(refStructure);
        record.subjectInfo = infoFromStructure(subStructure);
        found.push(
          ...checkOracle(record.subjectCheck!, record.referenceCheck ?? null),
          ...structureOracle(subStructure, refStructure),
          ...infoOracle(record.referenceInfo, record.subjectInfo),
          ...(await withRegrowQuirk(contentOracle({ ...compare, referenceSize: sizeOf(record.referenceInfo), subjectSize: sizeOf(record.subjectInfo) }), index)),
        );
      }
      findings.push(...found.map((f) => ({ ...f, step: index })));
      if (found.length > 0 || record.reference !== record.subject) break;
    }

    let afterUse: AfterUseRecord | null = null;
    const last = steps.at(-1)!;
    if (findings.length === 0 && last.reference === 'ok' && last.subject === 'ok' && last.referenceInfo?.ok) {
      const workload = afterUseWorkload(c, Number(last.referenceInfo.fields['virtual-size']));
      const io = (side: SideFiles) => run('qemu-io', ['-f', 'qcow2', ...workload.flatMap((w) => ['-c', w]), side.image], side);
      const refIo = await io(reference);
      const subIo = await io(subject);
      afterUse = { workload, referenceExit: refIo.exitCode, subjectExit: subIo.exitCode };
      // sizes from the headers: the workload grew both images, and this saves two info runs
      const sizes = background(Promise.all([headerSize(path(reference)), headerSize(path(subject))]));
      const comparePlan = planCompare();
      const subCheck = await check(subject);
      const compare = await compareContents(comparePlan);
      const [referenceSize, subjectSize] = await sizes;
      const { subjectCheck, referenceCheck } = await checks(subCheck);
      const found = afterUseOracle({
        ...afterUse,
        subjectStderr: subIo.stderr,
        subjectCheck,
        referenceCheck: referenceCheck ?? null,
        compare: { ...compare, referenceSize, subjectSize },
      });
      findings.push(...found.map((f) => ({ ...f, step: last.index })));
    }

    const kept = options.wantArtifacts(findings, steps) ? await collectArtifacts(dir, layout) : { artifacts: [], artifactsSkipped: [] };
    return { findings, steps, afterUse, commands, baseReader, ...kept };
  }
}

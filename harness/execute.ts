import { constants } from 'node:fs';
import { copyFile, mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { dir as tmpDir } from 'tmp-promise';
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
import { compareContent, type ComparePlan } from './content-compare.ts';
import { copySparse, provenUnchanged, stampOf, type Stamp } from './files.ts';
import { readQcow2Header } from './qcow2.ts';
import { reader } from './readers.ts';
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

/** Case directories being removed. Freeing a large file on tmpfs takes milliseconds, so a case
 * does not wait for it: the next one starts, and whoever ran the cases awaits workDirsRemoved(). */
const removals = new Set<Promise<void>>();
let removalError: Error | null = null;

function removeInBackground(removal: Promise<void>) {
  const tracked = removal.then(
    () => undefined,
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') removalError ??= err;
    },
  );
  removals.add(tracked);
  void tracked.then(() => removals.delete(tracked));
}

/** Waits until every case directory is gone; throws if one could not be removed. */
export async function workDirsRemoved(): Promise<void> {
  await Promise.all(removals);
  const err = removalError;
  removalError = null;
  if (err) throw new Error(`a case directory could not be removed: ${err.message}`);
}

/** Builds the base image, copies it for each side, runs the steps and the oracles after each.
 * The case stops at the first step with a finding: later steps would compare diverged images.
 * A case runs its commands one after the other: a case takes one core, and --jobs spreads the
 * cases over the cores (side-by-side commands made --jobs 1 take 1.4 cores, so --jobs 2 could
 * not double it), and commands are listed in the order they ran. The harness's own reading of the
 * images overlaps the commands that do not write them. */
export async function runCase(c: Case, options: ExecuteOptions): Promise<CaseResult> {
  const layout = layoutOf(c);
  const { base, reference, subject } = layout;
  try {
    const { path: dir, cleanup } = await tmpDir({ unsafeCleanup: true, prefix: 'instar-fuzz-', tmpdir: options.workdir });
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
      removeInBackground(cleanup());
    }
  } catch (err) {
    if (isNoSpace(err)) throw new DiskFullError(`the work directory ${options.workdir} is full: ${(err as Error).message}; free space or pass --workdir DIR`);
    throw err;
  }

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
    const filesOf = (side: SideFiles) => (layout.dataFile ? [path(side), join(dir, side.dir, layout.dataFile)] : [path(side)]);
    const fingerprint = (side: SideFiles) => reader.contentHash(...filesOf(side));
    /** The hash of a refused step's side after the step: no read when its stamp proves the
     * files unchanged since `stamp` (taken with `hash`'s content, before the step). */
    const hashAfterRefusal = async (side: SideFiles, hash: string, stamp: Stamp): Promise<string> => (provenUnchanged(stamp, await stampOf(filesOf(side))) ? hash : fingerprint(side));
    const check = (side: SideFiles) => run('qemu-img', ['check', '-f', 'qcow2', '--output=json', side.image], side);
    /** Guest content of both results, at a cost that grows with the allocated data, not the
     * virtual size (content-compare.ts); a data file needs its name given: a plain compare. */
    const compareContents = (plan: Promise<ComparePlan> | undefined) =>
      layout.dataFile
        ? run('qemu-img', compareArgs(layout))
        : compareContent(imagePath(reference), imagePath(subject), { timeoutMs: options.timeoutMs, cwd: dir, signal: options.signal, run: (program, args) => run(program, args), plan });
    /** compareContent's reading of both images, started while another command runs. */
    const planCompare = () => (layout.dataFile ? undefined : background(reader.planComparison(imagePath(reference), imagePath(subject), { cwd: dir })));

    if (layout.dataFile) await Promise.all([base, reference, subject].map((s) => mkdir(join(dir, s.dir))));
    for (const cmd of buildCommands(c, base.image)) {
      const r = await run(cmd.program, cmd.args, base);
      const ok = cmd.expect === 'abort' ? r.signal === 'SIGABRT' : r.exitCode === 0;
      if (!ok) throw new CaseSetupError(`${cmd.what} failed (exit ${r.exitCode ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`, r);
    }
    const plans = plannedSizes(c);
    /** What a step needs to know of both images before either is resized: their hashes (when
     * not `known`) and whether a shrink discards data. Read while the commands before it only
     * read them. Before the first step both sides are still copies of the base image: it is read
     * once for both. */
    type Prepared = [refHash: string, subHash: string, discardsAllocated: boolean | undefined];
    const prepare = (index: number, known?: [string, string]): Promise<Prepared> => {
      const { plan } = plans[index]!;
      const before = index === 0 ? base : reference;
      const discards = plan.kind === 'shrink' && plan.accepted ? reader.hasHostClustersFrom(path(before), plan.target!) : undefined;
      if (known) return Promise.all([known[0], known[1], discards]);
      if (index > 0) return Promise.all([fingerprint(reference), fingerprint(subject), discards]);
      const both = fingerprint(base);
      return Promise.all([both, both, discards]);
    };
    // the copies and the reading go on while qemu-img checks the base image
    const copied = background(
      (async () => {
        for (const side of [reference, subject]) {
          await copyFile(path(base), path(side), constants.COPYFILE_FICLONE);
          // with a data file each side has its own directory: its own data file and backing image
          if (layout.dataFile) await copySparse(join(dir, base.dir, layout.dataFile), join(dir, side.dir, layout.dataFile));
          if (layout.dataFile && layout.backing) await copyFile(join(dir, base.dir, layout.backing), join(dir, side.dir, layout.backing), constants.COPYFILE_FICLONE);
        }
      })(),
    );
    // The generator promised a clean image (a dirty one's refcounts lag by design), and the
    // qcow2 reader must count the same allocated clusters as qemu-img check: both are checked.
    const baseStructure = c.image.dirty ? null : background(reader.structuralCheck(path(base)));
    let prepared: Promise<Prepared> | null = background(Promise.all([prepare(0), copied]).then(([first]) => first));
    let baseReader: CaseResult['baseReader'] = null;
    if (baseStructure) {
      const baseCheck = await check(base);
      const structure = await baseStructure;
      if (baseCheck.exitCode !== 0) throw new CaseSetupError(`the base image is not clean (qemu-img check exit ${baseCheck.exitCode ?? baseCheck.signal}): ${baseCheck.stdout.trim()}`, baseCheck);
      const byCheck = parseCheck(baseCheck.exitCode, baseCheck.stdout, baseCheck.stderr).report?.['allocated-clusters'] ?? 0;
      baseReader = { byCheck, byReader: structure.readable ? structure.allocatedClusters : null };
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
      const readsZero = async (side: SideFiles) => (await run('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -q -P 0 ${window.start} ${window.end - window.start}`, side.image], side)).exitCode === 0;
      const refZero = await readsZero(reference);
      const subZero = await readsZero(subject);
      const quirk = regrowQuirk(window, refZero, subZero);
      return quirk ? [quirk] : content;
    };

    const steps: StepRecord[] = [];
    const findings: StepFinding[] = [];
    for (const [index, { before, plan }] of plans.entries()) {
      const step = c.steps[index]!;
      const [refHash, subHash, discardsAllocated]: Prepared = await (prepared ?? prepare(index));
      prepared = null;
      const [refStamp, subStamp] = await Promise.all([stampOf(filesOf(reference)), stampOf(filesOf(subject))]);
      const ref = await run(qemuImg.program, resizeArgs(qemuImg, step, reference.image), reference);
      const sub = await run(options.subject.program, resizeArgs(options.subject, step, subject.image), subject);
      const record: StepRecord = { index, sizeBefore: before, plan, reference: classifyOutcome(ref), subject: classifyOutcome(sub), discardsAllocated, subjectStderr: sub.stderr };
      steps.push(record);
      const found: Finding[] = outcomeOracle(ref, sub, plan.kind);
      if (record.reference === 'refused' || record.subject === 'refused') {
        const refAfter: string | null = record.reference === 'refused' ? await hashAfterRefusal(reference, refHash, refStamp) : null;
        const subAfter: string | null = record.subject === 'refused' ? await hashAfterRefusal(subject, subHash, subStamp) : null;
        found.push(
          ...unchangedOnRefusalOracle({
            reference: refAfter === null ? null : { before: refHash, after: refAfter },
            subject: subAfter === null ? null : { before: subHash, after: subAfter },
          }),
        );
        // both refused: the next step starts from the files as they are now, hashed just now
        if (refAfter !== null && subAfter !== null && index + 1 < plans.length) prepared = background(prepare(index + 1, [refAfter, subAfter]));
      }

      if (record.reference === 'ok' && record.subject === 'ok') {
        // The reader threads read both images while qemu-img checks and compares, asked in the
        // order the answers are needed: the compare plan, the structures (the structure oracle,
        // and the info fields: test/info.test.ts holds them equal to `qemu-img info`, two
        // processes fewer per step), the next step's reading (nothing writes the images until
        // it starts).
        const comparePlan = planCompare();
        const structures = background(Promise.all([reader.structuralCheck(path(subject)), reader.structuralCheck(path(reference))]));
        if (index + 1 < plans.length) prepared = background(prepare(index + 1));
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

import { constants } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { isConverted, isResize, sparseRawBase, type Case, type OperationName, type Step } from '../model/case.ts';
import {
  buildCommands,
  retargetCommands,
  runBuildCommand,
  compareArgs,
  qemuImg,
  qemuIoArgs,
  type CommandRecord,
} from '../model/commands.ts';
import { chainDirectory, imagePath, keptFiles, type SideFiles } from '../model/layout.ts';
import type { StepPlan } from '../model/plan.ts';
import { initialState, type ImageState } from '../model/state.ts';
import type { Operation } from '../operations/operation.ts';
import { operationOf } from '../operations/table.ts';
import { damageImage, type AppliedDamage } from '../operations/repair/damage.ts';
import { hasDamage, overlapped } from '../operations/repair/step.ts';
import { readImageState, readVirtualSize } from './image-state.ts';
import { SnapshotContent } from './snapshot-content.ts';
import { afterUseWorkload, withoutTimings, workloadOutcomes, type CommandOutcome } from '../oracles/after-use.ts';
import { isClean, parseCheck, type CheckObservation } from '../oracles/check.ts';
import {
  firstMismatch,
  readableWindow,
  regrowWindows,
  type CompareObservation,
  type MismatchSector,
  type ObservedStep,
  type RegrowProbe,
} from '../oracles/content.ts';
import type { StepFinding } from '../oracles/finding.ts';
import { rawGrownCounts, type AllocationObservation } from '../oracles/allocation.ts';
import type { FileIdentity, InPlaceObservation } from '../oracles/in-place.ts';
import { infoFromStructure, parseConvertedInfo, RAW_INFO, type InfoObservation } from '../oracles/info.ts';
import { classifyOutcome, type OutcomeClass } from '../oracles/outcome.ts';
import {
  judgeAfterUse,
  judgeStep,
  type OracleName,
  type ResultsObservation,
  type StepObservation,
} from '../oracles/table.ts';
import { sketchOf, type StructureObservation, type StructureSketch } from '../qcow2/structure.ts';
import { formatSketchOf, type FormatSketch } from '../formats/rules.ts';
import { CaseRun, type ExecuteOptions } from './case-run.ts';
import { observeChain } from './chain-observe.ts';
import { compareContent, type ComparePlan } from './content-compare.ts';
import { copySparse, stampOf } from './files.ts';
import { ReadAhead, type ResultStructures } from './read-ahead.ts';
import { readVmdkDescriptor } from '../formats/vmdk.ts';
import { reader } from './readers.ts';
import { inCaseDirectory } from './work-dir.ts';

// A case as a pipeline: build the base image and check it, copy it for each side, then per step
// resize both copies, observe what each side did and left, and let the oracles judge it; after the
// last step, use both results the same way and judge again. The case stops at the first step with a
// finding: later steps would compare diverged images. Commands run one after the other (a case
// takes one core; --jobs spreads cases over the cores), and the harness's own reading of the images
// overlaps the commands that do not write them (read-ahead.ts).

export type { ExecuteOptions } from './case-run.ts';

export interface StepRecord {
  index: number;
  /** The step's operation (absent in reports of resize-only harnesses: resize). */
  operation?: OperationName;
  /** The virtual size of qemu's side right before the step, read from its image. */
  sizeBefore: number;
  /** qemu's result's virtual size after the step, read from it; null where qemu-img refused. */
  sizeAfter?: number | null;
  /** The subject's virtual size after the step, where it was read: when only qemu-img refused (and
   * for a JSON report). */
  subjectSizeAfter?: number | null;
  /** qemu's rules of its operation applied to the step from the state read before it: what
   * registry predicates and coverage call its kind. */
  plan: StepPlan;
  /** qemu's side before the step, as read from it (absent where not read, and in older reports):
   * registry facts take these over the case's, which an earlier amend or snapshot step changed. */
  stateBefore?: {
    compat: '1.1' | '0.10';
    refcountBits: number;
    lazyRefcounts: boolean;
    snapshots: number;
    /** Persistent bitmaps (absent in steps recorded before they were read). */
    bitmaps?: number;
  };
  reference: OutcomeClass;
  subject: OutcomeClass;
  /** qemu's side grew its refcount table in this step (qcow2, read from the image before and after). */
  refcountTableGrew?: boolean;
  /** The dirty bits the image's bitmaps held when the step ran (the subject's image as read
   * before it; qcow2 images with bitmaps only): what a bitmap step had to act on. */
  bitmapBitsBefore?: number;
  /** For a shrink qemu-img accepted: whether clusters holding data lay past the new end. */
  discardsAllocated?: boolean;
  /** What the subject printed on stderr for this step; registry entries may match on it. */
  subjectStderr: string;
  /** The oracles that judged the step (oracles/table.ts). */
  oracles: OracleName[];
  subjectCheck?: CheckObservation;
  referenceCheck?: CheckObservation;
  referenceInfo?: InfoObservation;
  subjectInfo?: InfoObservation;
  /** Both results' host clusters as the structure oracle read them (qcow2, where both were
   * readable): what a report's damage picture is drawn from, without the images. */
  structures?: { reference: StructureSketch; subject: StructureSketch };
  /** The same for a vhdx, vmdk or vpc image: both results' regions and broken rules. */
  formatStructures?: { reference: FormatSketch; subject: FormatSketch };
}

/** The qemu-io workload run on both results after the last step, and what followed. */
export interface AfterUseRecord {
  workload: string[];
  referenceExit: number | null;
  subjectExit: number | null;
  /** Each command's outcome on each side ("ok", or the line it failed with). */
  outcomes?: { role: string; reference: string; subject: string }[];
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
  /** The damage written into the base image after its build, as the case states it: what each hit
   * and the bytes written (repro.sh writes them again). */
  damage?: AppliedDamage[];
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

export interface RunCaseOptions extends ExecuteOptions {
  /** Called with the findings of a case; true keeps the images for a report. */
  wantArtifacts: (findings: StepFinding[], steps: StepRecord[]) => boolean;
}

/** Images above this host size are not stored in reports (a subject may write a huge file). */
export const MAX_STORED_IMAGE = 128 * 1024 * 1024;

export function runCase(c: Case, options: RunCaseOptions): Promise<CaseResult> {
  return inCaseDirectory(options.workdir, async (dir) => {
    const run = new CaseRun(c, dir, options);
    try {
      return await pipeline(run, options);
    } finally {
      await run.settled();
    }
  });
}

async function pipeline(run: CaseRun, options: RunCaseOptions): Promise<CaseResult> {
  const sizeOf = (side: SideFiles) => readVirtualSize(run.path(side), run.c);
  const ahead = new ReadAhead(run, sizeOf);
  const kept = new SnapshotContent(run);
  const damage = await buildBase(run, kept);
  // the copies and the reading go on while qemu-img checks the base image
  ahead.firstStep(run.background(copySides(run)));
  const { baseReader, baseStructure } = await checkBase(run, ahead);
  // the subject's image as read before each step: what clusters a step leaks had been
  let subjectBefore = baseStructure;

  const steps: StepRecord[] = [];
  const findings: StepFinding[] = [];
  // qemu's result's sizes before and after each step, as read from it
  const history: ObservedStep[] = [];
  // a repair qemu-img could not mend all with: the case ends, and its results get no later use
  let leftBroken = false;
  for (let index = 0; index < run.c.steps.length; index++) {
    const side = index === 0 ? run.layout.base : run.layout.reference;
    const state = await readImageState(run.path(side), run.c);
    history.push({ before: state?.size ?? run.c.image.virtualSize, after: null });
    const { record, observation } = await runStep(run, ahead, index, { history, state, subjectBefore, kept });
    if (observation.results) subjectBefore = observation.results.subjectStructure;
    const judged = judgeStep(observation);
    record.oracles = judged.oracles;
    steps.push(record);
    findings.push(...judged.findings.map((f) => ({ ...f, step: index })));
    if (judged.findings.length > 0 || record.reference !== record.subject) break;
    // qemu-img's repair exits non-zero where damage remains, and an overlap it "repairs" into
    // metadata shared with a data cluster (exit 0, still broken): later steps and the workload
    // would meet a broken image, and what qemu makes of one is no finding
    const damaged = observation.reference.exitCode !== 0 || overlapped(run.c);
    leftBroken = Boolean(operationOf(run.c.steps[index]!).damagedInput) && damaged;
    if (leftBroken) break;
  }

  const last = steps.at(-1)!;
  const used = findings.length === 0 && !leftBroken;
  const afterUse = used ? await useBothResults(run, ahead, last, history, subjectBefore) : null;
  if (afterUse) findings.push(...afterUse.findings.map((f) => ({ ...f, step: last.index })));

  const stored = options.wantArtifacts(findings, steps)
    ? await collectArtifacts(run)
    : { artifacts: [], artifactsSkipped: [] };
  const result = { findings, steps, afterUse: afterUse?.record ?? null, commands: run.commands, baseReader };
  return { ...result, damage, ...stored };
}

/** Runs the build commands in the base image's directory; each must do what it is meant to. A
 * snapshot a later step applies is kept as the guest content it names. Then the case's damage is
 * written into the image, in the harness (the input of a repair). */
async function buildBase(run: CaseRun, kept: SnapshotContent): Promise<AppliedDamage[]> {
  const { base, reference, subject } = run.layout;
  if (base.dir !== '.') await Promise.all([base, reference, subject].map((s) => mkdir(join(run.dir, s.dir))));
  // the directory below the image's that holds its chain, in every side's
  const chainDir = chainDirectory(run.c);
  if (chainDir !== null)
    await Promise.all(
      [base, ...(base.dir === '.' ? [] : [reference, subject])].map((s) => mkdir(join(run.dir, s.dir, chainDir))),
    );
  for (const cmd of buildCommands(run.c, base.image)) {
    const { result: r, ok } = await runBuildCommand(cmd, () => run.runUnrecorded(cmd.program, cmd.args, base));
    run.record(r);
    if (!ok)
      throw new CaseSetupError(
        `${cmd.what} failed (exit ${r.exitCode ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`,
        r,
      );
    // the damage written after the build may change what a snapshot reads (an L2 entry it shares)
    if (cmd.creates !== undefined && !hasDamage(run.c)) await kept.keep(cmd.creates, base);
  }
  const applied: AppliedDamage[] = [];
  for (const d of run.c.data) if (d.op === 'damage') applied.push(await damageImage(run.path(base), d));
  return applied;
}

/** Each side's copy of the base image; with a data file, vmdk extent files or a chain a step may
 * write, each side has its own directory, with its own data file, chain and extent files. */
async function copySides(run: CaseRun) {
  const { base, dataFile, chainBuilt } = run.layout;
  const sides = [run.layout.reference, run.layout.subject];
  const inBase = (file: string) => join(run.dir, base.dir, file);
  const images = sides.map((side) => run.path(side));
  if (sparseRawBase(run.c)) await copySparse(run.path(base), images);
  else for (const image of images) await copyFile(run.path(base), image, constants.COPYFILE_FICLONE);
  const inSides = (file: string) => sides.map((side) => join(run.dir, side.dir, file));
  if (dataFile) await copySparse(inBase(dataFile), inSides(dataFile));
  for (const extent of run.layout.extents)
    for (const copy of inSides(extent)) await copyFile(inBase(extent), copy, constants.COPYFILE_FICLONE);
  // a raw level is a guest disk: its zero blocks stay holes, as in the base's directory
  if (base.dir !== '.') for (const file of chainBuilt) await copySparse(inBase(file), inSides(file));
  // a copy of a chain with absolute names still names the base's files until retargeted
  for (const side of sides)
    for (const cmd of retargetCommands(run.c, side.image)) {
      const r = await run.run(cmd.program, cmd.args, side);
      if (r.exitCode !== 0)
        throw new CaseSetupError(`${cmd.what} failed (exit ${r.exitCode ?? r.signal}): ${r.stderr.trim()}`, r);
    }
}

/** The generator promised a clean image (a dirty one's refcounts lag by design), and the qcow2
 * reader must count the same allocated clusters as qemu-img check: both are checked. The base
 * image's structure is read for every qcow2 case: it says what each cluster is before the first step. */
async function checkBase(
  run: CaseRun,
  ahead: ReadAhead,
): Promise<{ baseReader: CaseResult['baseReader']; baseStructure: StructureObservation | null }> {
  // qemu-img cannot check a raw or vpc image, and the harness reads only qcow2 structures here
  if (run.c.image.format !== 'qcow2') return { baseReader: null, baseStructure: null };
  const structure = ahead.baseStructure();
  // a dirty image's refcounts lag by design; a damaged one is the input of a repair
  if (run.c.image.dirty || hasDamage(run.c)) return { baseReader: null, baseStructure: await structure };
  const check = await run.check(run.layout.base);
  const read = await structure;
  if (check.exitCode !== 0) {
    throw new CaseSetupError(
      `the base image is not clean (qemu-img check exit ${check.exitCode ?? check.signal}): ${check.stdout.trim()}`,
      check,
    );
  }
  const byCheck = parseCheck(check.exitCode, check.stdout, check.stderr).report?.['allocated-clusters'] ?? 0;
  return { baseReader: { byCheck, byReader: read.readable ? read.allocatedClusters : null }, baseStructure: read };
}

/** What a step starts from: qemu's side's sizes up to it (its size after is filled in here), the
 * state read from qemu's side before it, the subject's structure before it, and the guest content
 * kept for snapshots a later step applies. */
interface StepContext {
  history: ObservedStep[];
  state: ImageState | null;
  subjectBefore: StructureObservation | null;
  kept: SnapshotContent;
}

/** One step on both sides, by its operation's row (operations/table.ts), and what the oracles need
 * to judge it. */
async function runStep(run: CaseRun, ahead: ReadAhead, index: number, ctx: StepContext) {
  const step = run.c.steps[index]!;
  const op = operationOf(step);
  const { reference, subject } = run.layout;
  const { format } = run.c.image;
  const before = ctx.history[index]!.before;
  // qemu's rules applied to the state qemu's side has now, never to a predicted one
  const state: ImageState = ctx.state ?? { ...initialState(run.c), size: before };
  const { next: _, ...plan } = op.plan(step, state, format);
  await guestWrites(run, ahead, index, op.guestWrites?.(step, state.size) ?? []);
  await moveFiles(run, ahead, index, op.fileMoves?.(step) ?? []);
  const inputs = await ahead.take(index);
  const [refStamp, subStamp] = await Promise.all([stampOf(run.files(reference)), stampOf(run.files(subject))]);
  // both copies were the base image until the first step; the subject's own state after that
  const subjectState = index === 0 ? ctx.state : await readImageState(run.path(subject), run.c);
  // a raw image's grown range is allocated as its host blocks grew (allocation oracle)
  const hostBefore =
    format === 'raw' ? { reference: await hostBytes(run, reference), subject: await hostBytes(run, subject) } : null;
  const ref = await referenceStep(run, op, step, plan);
  const around = await aroundSubject(run);
  const sub = await run.run(
    run.options.subject.program,
    op.subject(run.options.subject, step, subject.image, run.c.image),
    subject,
  );
  const inPlace = await around.after();
  const record: StepRecord = {
    index,
    operation: op.name,
    sizeBefore: before,
    sizeAfter: null,
    plan,
    reference: classifyOutcome(ref, op.acceptedExits),
    subject: classifyOutcome(sub, op.acceptedExits),
    discardsAllocated: inputs.discardsAllocated,
    subjectStderr: sub.stderr,
    oracles: [],
  };
  const bitsBefore = ctx.subjectBefore?.readable ? ctx.subjectBefore.bitmapBits : undefined;
  if (bitsBefore?.length) record.bitmapBitsBefore = bitsBefore.reduce((n, b) => n + b.set, 0);
  if (ctx.state && format === 'qcow2') {
    const { compat, refcountBits, lazyRefcounts, snapshots, bitmaps } = ctx.state;
    record.stateBefore = {
      compat,
      refcountBits,
      lazyRefcounts,
      snapshots: snapshots.length,
      bitmaps: bitmaps?.length ?? 0,
    };
  }
  if (record.reference === 'ok') {
    const after = format === 'qcow2' ? await readImageState(run.path(reference), run.c) : null;
    record.sizeAfter = after ? after.size : await readVirtualSize(run.path(reference), run.c);
    ctx.history[index]!.after = record.sizeAfter;
    const tableBefore = ctx.state?.refcountTableClusters;
    if (after?.refcountTableClusters !== undefined && tableBefore !== undefined)
      record.refcountTableGrew = after.refcountTableClusters > tableBefore;
  }
  const observation: StepObservation = {
    case: run.c,
    index,
    kind: plan.kind,
    operation: { name: op.name, oracles: op.oracles, acceptedExits: op.acceptedExits, damagedInput: op.damagedInput },
    reference: ref,
    subject: sub,
    sizeBefore: subjectState?.size ?? null,
    history: ctx.history,
    output: op.output(run.options.subject, step),
    subjectAfter: null,
    accepted: null,
    refusal: null,
    results: null,
    inPlace,
  };
  const json = observation.output === 'json' && record.subject === 'ok';
  const onlyQemuRefused = record.reference === 'refused' && record.subject === 'ok';
  if (json || onlyQemuRefused) {
    // what the subject's image is now: what its JSON report must say, and what it made of a step
    // qemu-img refused
    const after = await readImageState(run.path(subject), run.c);
    record.subjectSizeAfter = after?.size ?? null;
    const fileLength = await stat(run.path(subject)).then(
      (s) => s.size,
      () => null,
    );
    observation.subjectAfter = { size: after?.size ?? null, fileLength };
    Object.assign(observation, {
      stateBefore: subjectState,
      stateAfter: after,
      snapshotsAfter: after?.snapshots.map((s) => ({ id: s.id ?? '', name: s.name })) ?? null,
    });
  }
  if (onlyQemuRefused) {
    observation.accepted = {
      before: subjectState?.size ?? before,
      target: plan.target,
      after: record.subjectSizeAfter!,
    };
    // qemu gives no result to compare with (it refused a vmdk rebase, say): the subject's own result
    // must at least check clean
    if (checkable(run) && op.checkedAlone) {
      const c = await run.check(subject);
      observation.accepted.check = parseCheck(c.exitCode, c.stdout, c.stderr);
    }
  }
  if (record.reference === 'refused' || record.subject === 'refused') {
    const refAfter =
      record.reference === 'refused'
        ? await ahead.hashAfterRefusal(reference, { hash: inputs.referenceHash, stamp: refStamp })
        : null;
    const subAfter =
      record.subject === 'refused'
        ? await ahead.hashAfterRefusal(subject, { hash: inputs.subjectHash, stamp: subStamp })
        : null;
    observation.refusal = {
      reference: refAfter === null ? null : { before: inputs.referenceHash, after: refAfter },
      subject: subAfter === null ? null : { before: inputs.subjectHash, after: subAfter },
    };
    if (refAfter !== null && subAfter !== null) ahead.afterRefusal(index, [refAfter, subAfter]);
  }
  if (record.reference === 'ok' && record.subject === 'ok') {
    const sizes = op.name === 'resize' ? { before, plan, hostBefore } : null;
    const written = op.writesInto?.(step, state) ?? null;
    observation.results = await observeResults(run, ahead, index, sizes, ctx.history, written);
    observation.results.subjectBefore = ctx.subjectBefore;
    // a snapshot reads through the chain: once a commit or rebase changed it, what the snapshot
    // showed when taken is no longer what qemu shows (the content oracle still compares the sides)
    const chainChanged = run.c.steps.slice(0, index).some((s) => operationOf(s).oracles.includes('chain'));
    const content = chainChanged ? null : (op.snapshotContent?.(step) ?? null);
    observation.results.snapshotContent = await ctx.kept.afterStep(content);
    Object.assign(record, {
      subjectCheck: observation.results.subjectCheck,
      ...(observation.results.referenceCheck ? { referenceCheck: observation.results.referenceCheck } : {}),
      referenceInfo: observation.results.referenceInfo,
      subjectInfo: observation.results.subjectInfo,
    });
    const [refSketch, subSketch] = [observation.results.referenceStructure, observation.results.subjectStructure].map(
      (o) => (o ? sketchOf(o) : null),
    );
    if (refSketch && subSketch) record.structures = { reference: refSketch, subject: subSketch };
    const formats = observation.results.formatStructures;
    const [refFormat, subFormat] = formats ? [formatSketchOf(formats.reference), formatSketchOf(formats.subject)] : [];
    if (refFormat && subFormat) record.formatStructures = { reference: refFormat, subject: subFormat };
  }
  return { record, observation };
}

/** A step's guest writes, made with qemu-io into both sides' images before it; the step's inputs
 * read ahead of them are read again. Both sides are what qemu made of the same case so far, so a
 * write that fails is the harness's fault. */
async function guestWrites(run: CaseRun, ahead: ReadAhead, index: number, writes: string[]) {
  if (writes.length === 0) return;
  await ahead.take(index);
  for (const side of [run.layout.reference, run.layout.subject]) {
    const r = await run.run('qemu-io', qemuIoArgs(writes, side.image, run.c.image), side);
    if (r.exitCode !== 0)
      throw new CaseSetupError(`qemu-io's guest writes before step ${index + 1} failed: ${r.stderr.trim()}`, r);
  }
}

/** A step's file moves (a rebase -u's old backing moved or removed), made in both sides'
 * directories before it; the step's inputs read ahead of them are read again. */
async function moveFiles(
  run: CaseRun,
  ahead: ReadAhead,
  index: number,
  moves: { file: string; movedTo: string | null }[],
) {
  if (moves.length === 0) return;
  await ahead.take(index);
  for (const side of [run.layout.reference, run.layout.subject])
    for (const { file, movedTo } of moves) {
      const from = join(run.dir, side.dir, file);
      // a hand-made case may name a file an earlier step's move took away: that case cannot run
      const argv = movedTo === null ? ['rm', from] : ['mv', from, join(run.dir, side.dir, movedTo)];
      const moved = movedTo === null ? rm(from) : rename(from, argv[2]!);
      await moved.catch((err: Error) => {
        const what = `before step ${index + 1}, ${movedTo === null ? 'removing' : 'moving'} ${side.dir}/${file}`;
        const record = { argv, exitCode: 1, signal: null, timedOut: false, spawnError: null, stdout: '' };
        throw new CaseSetupError(
          `${what} failed: ${err.message}; check the step's oldBacking against the files the steps before it leave`,
          { ...record, stderr: err.message, durationMs: 0 },
        );
      });
    }
}

/** qemu-img's side of a step (its operation's reference commands): one after the other up to the
 * first that fails, which is then the outcome, else the main one's. */
async function referenceStep(run: CaseRun, op: Operation, step: Step, plan: { kind: string }): Promise<CommandRecord> {
  const { reference } = run.layout;
  const { commands, main, scratch } = op.reference(step, reference.image, run.c.image, plan);
  let outcome: CommandRecord | undefined;
  for (const [i, args] of commands.entries()) {
    const r = await run.run(qemuImg.program, args, reference);
    if (i === main || r.exitCode !== 0) outcome = r;
    if (r.exitCode !== 0) break;
  }
  if (scratch) await rm(join(run.dir, reference.dir, scratch), { force: true });
  return outcome!;
}

/** The subject's image and its directory right before its resize; `after()` observes them again
 * once it ran. Stats and directory listings, no processes. */
async function aroundSubject(run: CaseRun) {
  const { subject } = run.layout;
  const image = run.path(subject);
  const dir = join(run.dir, subject.dir);
  const before = await identityOf(image);
  const filesBefore = await readdir(dir);
  return {
    after: async (): Promise<InPlaceObservation | null> =>
      before && {
        image: subject.image,
        before,
        after: await identityOf(image),
        filesBefore,
        filesAfter: await readdir(dir).catch(() => []),
      },
  };
}

async function identityOf(file: string): Promise<FileIdentity | null> {
  const s = await stat(file, { bigint: true }).catch(() => null);
  return s && { ino: String(s.ino), mode: Number(s.mode), uid: Number(s.uid), gid: Number(s.gid) };
}

/** Both results of a step both sides accepted: checked, read and compared. The info fields come
 * from the structures (test/info.test.ts holds them equal to `qemu-img info`: two processes fewer
 * per step). */
async function observeResults(
  run: CaseRun,
  ahead: ReadAhead,
  index: number,
  step: StepSizes | null,
  history: ObservedStep[],
  written: string | null,
): Promise<ResultsObservation> {
  const { comparePlan, structures } = ahead.afterAcceptance(index);
  // what a resize allocates; no other operation is judged by it
  const allocation = run.background(step ? observeAllocation(run, index, step) : Promise.resolve(null));
  const { format } = run.c.image;
  const subCheck = checkable(run) ? await run.check(run.layout.subject) : null;
  const compared = await compareResults(run, comparePlan);
  const read: ResultStructures | null = structures && (await structures);
  const [subjectStructure, referenceStructure] = read?.kind === 'qcow2' ? [read.subject, read.reference] : [null, null];
  const { subjectCheck, referenceCheck } = await checks(run, subCheck);
  const infoOf = format === 'raw' ? rawInfo : convertedInfo;
  const [referenceInfo, subjectInfo] =
    format === 'qcow2'
      ? [infoFromStructure(referenceStructure!), infoFromStructure(subjectStructure!)]
      : [await infoOf(run, run.layout.reference), await infoOf(run, run.layout.subject)];
  const compare: CompareObservation = {
    ...compared,
    referenceSize: sizeOf(referenceInfo),
    subjectSize: sizeOf(subjectInfo),
  };
  // a commit or a rebase writes or names the chain below the top: each member is looked at
  const chain = operationOf(run.c.steps[index]!).oracles.includes('chain') ? await observeChain(run, written) : null;
  if (chain && subjectStructure?.readable && referenceStructure?.readable)
    chain.topAllocated = {
      reference: referenceStructure.allocatedClusters,
      subject: subjectStructure.allocatedClusters,
    };
  const regrow = await probeRegrowWindow(run, history, compare);
  const quirk = regrow !== null && !regrow.referenceReadsZero && regrow.subjectReadsZero;
  if (!quirk) compare.sector = await probeSector(run, compare);
  return {
    subjectCheck,
    referenceCheck,
    subjectStructure,
    referenceStructure,
    formatStructures: read?.kind === 'format' ? { subject: read.subject, reference: read.reference } : null,
    subjectInfo,
    referenceInfo,
    compare,
    regrow,
    allocation: await allocation,
    chain,
  };
}

/** What both results allocate: the host blocks of each side's files and, after a grow, how the
 * guest clusters of the grown range are mapped (read on a reader thread while qemu-img checks the
 * subject). */
async function observeAllocation(
  run: CaseRun,
  index: number,
  { before, plan, hostBefore }: StepSizes,
): Promise<AllocationObservation | null> {
  const { reference, subject } = run.layout;
  // a vhdx, vmdk or vpc reference is converted anew, its host layout nothing like an in-place resize's
  if (isConverted(run.c.image.format)) return null;
  const hostAfter = { reference: await hostBytes(run, reference), subject: await hostBytes(run, subject) };
  const grownRange = (side: SideFiles, name: 'reference' | 'subject') =>
    hostBefore
      ? Promise.resolve(rawGrownCounts(before, plan.target!, hostAfter[name] - hostBefore[name]))
      : reader.guestAllocation(run.path(side), before, plan.target!);
  const grown =
    plan.kind === 'grow'
      ? await Promise.all([grownRange(reference, 'reference'), grownRange(subject, 'subject')]).then(
          ([r, s]) => ({ from: before, to: plan.target!, reference: r, subject: s }),
          () => null,
        )
      : null;
  const resized = run.c.steps[index]!;
  const preallocation = isResize(resized) ? (resized.preallocation ?? 'none') : 'none';
  return { preallocation, grown, hostBytes: hostAfter };
}

/** Where a step starts and what it asks for; for a raw image also the host bytes each side held
 * before it. */
interface StepSizes {
  before: number;
  plan: StepPlan;
  hostBefore: { reference: number; subject: number } | null;
}

/** Allocated bytes on the host (st_blocks × 512) of a side's image and data file. */
async function hostBytes(run: CaseRun, side: SideFiles): Promise<number> {
  const stats = await Promise.all(run.files(side).map((f) => stat(f).catch(() => null)));
  return stats.reduce((sum, s) => sum + (s ? s.blocks * 512 : 0), 0);
}

/** Whether qemu-img can check images of the case's format: not raw or vpc. */
const checkable = (run: CaseRun) => !['raw', 'vpc'].includes(run.c.image.format);

/** `qemu-img info --output=json` of a side's image. */
const qemuInfo = (run: CaseRun, side: SideFiles) =>
  run.run('qemu-img', ['info', '--output=json', '-f', run.c.image.format, side.image], side);

/** `qemu-img info` of a vhdx, vmdk or vpc side, with a vmdk's descriptor read from the file. */
async function convertedInfo(run: CaseRun, side: SideFiles): Promise<InfoObservation> {
  const r = await qemuInfo(run, side);
  const vmdk = run.c.image.format === 'vmdk' && r.exitCode === 0;
  const descriptor = vmdk ? ((await readVmdkDescriptor(run.path(side)))?.text ?? '') : null;
  return parseConvertedInfo(r.exitCode, r.stdout, r.stderr, descriptor);
}

/** What qemu-img info says of a raw image, from the file, with the file's exact length for the
 * virtual size: qemu-img info rounds it up to whole sectors, so a resizer that rounds a size off
 * the sector grid would read the same there (content's size-differs compares the lengths). A raw
 * image has none of the fields of qcow2's format-specific part. */
async function rawInfo(run: CaseRun, side: SideFiles): Promise<InfoObservation> {
  const size = await stat(run.path(side)).then(
    (s) => s.size,
    () => null,
  );
  if (size === null) return { ok: false, exitCode: null, stderr: `${side.image} is missing` };
  return { ok: true, fields: { ...RAW_INFO, 'virtual-size': size } };
}

const sizeOf = (info: InfoObservation) => (info.ok ? Number(info.fields['virtual-size']) : null);

/** The subject's check, and qemu's own result's only when needed: to tell subject leaks and
 * corruptions from ones qemu's result has too. */
async function checks(run: CaseRun, subCheck: CommandRecord | null) {
  if (subCheck === null) return { subjectCheck: null, referenceCheck: null };
  const subjectCheck = parseCheck(subCheck.exitCode, subCheck.stdout, subCheck.stderr);
  if (isClean(subjectCheck)) return { subjectCheck, referenceCheck: null };
  const refCheck = await run.check(run.layout.reference);
  return { subjectCheck, referenceCheck: parseCheck(refCheck.exitCode, refCheck.stdout, refCheck.stderr) };
}

/** Guest content of both results, at a cost that grows with the allocated data, not the virtual
 * size (content-compare.ts); a data file needs its name given and an encrypted image its key: a
 * plain compare. */
function compareResults(run: CaseRun, plan: Promise<ComparePlan> | undefined) {
  const { layout, dir, options } = run;
  const { encrypted, format } = run.c.image;
  if (layout.dataFile || encrypted || format !== 'qcow2') return run.run('qemu-img', compareArgs(layout, run.c.image));
  const runInDir = (program: string, args: string[]) => run.run(program, args);
  return compareContent(imagePath(layout.reference), imagePath(layout.subject), {
    timeoutMs: options.timeoutMs,
    cwd: dir,
    signal: options.signal,
    run: runInDir,
    plan,
  });
}

/** Whether a side's image reads zeros over [start, end). */
async function readsZero(run: CaseRun, side: SideFiles, start: number, end: number): Promise<boolean> {
  const args = ['-r', ...qemuIoArgs([`read -q -P 0 ${start} ${end - start}`], side.image, run.c.image)];
  return (await run.run('qemu-io', args, side)).exitCode === 0;
}

/** What both results read where they first differ (two reads, only when they differ): zeros on
 * one side or data on both names the difference. */
async function probeSector(run: CaseRun, compare: CompareObservation): Promise<MismatchSector | null> {
  const at = firstMismatch(compare);
  if (at === null) return null;
  const start = Math.floor(at / 512) * 512;
  const referenceReadsZero = await readsZero(run, run.layout.reference, start, start + 512);
  const subjectReadsZero = await readsZero(run, run.layout.subject, start, start + 512);
  return { referenceReadsZero, subjectReadsZero };
}

/** When the first difference lies in a partial cluster a shrink kept and a later grow exposed (by
 * the sizes qemu's result had), what each result reads there (two reads, only then): qemu's quirk
 * or the subject's bug. */
async function probeRegrowWindow(
  run: CaseRun,
  history: ObservedStep[],
  compare: CompareObservation,
): Promise<RegrowProbe | null> {
  const at = firstMismatch(compare);
  const windows = at === null ? [] : regrowWindows(history, run.c.image.clusterSize);
  const found = windows.find((w) => at! >= w.start && at! < w.end);
  const window = found ? readableWindow(found, compare.referenceSize) : null;
  if (!window) return null;
  const referenceReadsZero = await readsZero(run, run.layout.reference, window.start, window.end);
  const subjectReadsZero = await readsZero(run, run.layout.subject, window.start, window.end);
  return { window, referenceReadsZero, subjectReadsZero };
}

/** When every step both sides ran succeeded: the same qemu-io workload on both results, then
 * check and compare again (some damage shows only at the next allocation). */
async function useBothResults(
  run: CaseRun,
  ahead: ReadAhead,
  last: StepRecord,
  history: ObservedStep[],
  subjectBefore: StructureObservation | null,
) {
  if (last.reference !== 'ok' || last.subject !== 'ok' || !last.referenceInfo?.ok) return null;
  const { reference, subject } = run.layout;
  const size = Number(last.referenceInfo.fields['virtual-size']);
  // the largest size qemu's result had: a grow back over it reads all a shrink discarded
  const largest = Math.max(...history.flatMap((h) => [h.before, h.after ?? 0]));
  const workload = afterUseWorkload(run.c, size, largest);
  const commands = workload.map((w) => w.command);
  // qemu-io's timing lines differ from run to run: the record keeps what the commands said
  const io = async (side: SideFiles) => {
    const r = await run.runUnrecorded('qemu-io', qemuIoArgs(commands, side.image, run.c.image), side);
    return run.record({ ...r, stdout: withoutTimings(r.stdout) });
  };
  const refIo = await io(reference);
  const subIo = await io(subject);
  // sizes from the images: the workload grew both, and this saves two info runs
  const [referenceSize, subjectSize] = await Promise.all([
    readVirtualSize(run.path(reference), run.c),
    readVirtualSize(run.path(subject), run.c),
  ]);
  const outcomes = {
    reference: workloadOutcomes(workload, refIo.stdout, refIo.stderr, referenceSize),
    subject: workloadOutcomes(workload, subIo.stdout, subIo.stderr, subjectSize),
  };
  const said = (o: CommandOutcome) => (o.ok ? 'ok' : o.said);
  const record: AfterUseRecord = {
    workload: commands,
    referenceExit: refIo.exitCode,
    subjectExit: subIo.exitCode,
    outcomes: workload.map((w, i) => ({
      role: w.role,
      reference: said(outcomes.reference[i]!),
      subject: said(outcomes.subject[i]!),
    })),
  };
  const comparePlan = ahead.comparePlan();
  const subCheck = checkable(run) ? await run.check(subject) : null;
  const compared = await compareResults(run, comparePlan);
  const { subjectCheck, referenceCheck } = await checks(run, subCheck);
  const compare: CompareObservation = { ...compared, referenceSize, subjectSize };
  compare.sector = await probeSector(run, compare);
  // the subject's structure names the clusters qemu-img check complains about: read only then
  const unclean = subjectCheck !== null && !isClean(subjectCheck);
  const subjectStructure =
    unclean && run.c.image.format === 'qcow2' ? await reader.structuralCheck(run.path(subject)) : null;
  const where = {
    clusterSize: run.c.image.clusterSize,
    before: last.sizeBefore,
    after: size,
    workloadSize: referenceSize,
  };
  const findings = judgeAfterUse({
    workload,
    ...outcomes,
    subjectCheck,
    referenceCheck,
    compare,
    context: { where, subjectStructure, subjectBefore },
  });
  return { record, findings };
}

async function collectArtifacts(run: CaseRun) {
  const artifacts: CaseResult['artifacts'] = [];
  const artifactsSkipped: string[] = [];
  for (const { name, path } of keptFiles(run.layout)) {
    const file = join(run.dir, path);
    const size = await stat(file).then(
      (s) => s.size,
      () => null,
    );
    if (size === null) artifactsSkipped.push(`${name}: missing after the run`);
    else if (size > MAX_STORED_IMAGE)
      artifactsSkipped.push(`${name}: ${size} bytes, above the ${MAX_STORED_IMAGE}-byte limit for stored images`);
    else artifacts.push({ name: `${name}.gz`, data: await promisify(gzip)(await readFile(file)) });
  }
  return { artifacts, artifactsSkipped };
}

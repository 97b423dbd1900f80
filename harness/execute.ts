import { createHash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { copyFile, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { withDir } from 'tmp-promise';
import { CaseAborted, DiskFullError, isNoSpace } from './errors.ts';
import { buildCommands, plannedSizes, regrowWindows, type Case, type StepPlan } from './case.ts';
import { runCommand, type CommandRecord } from './process.ts';
import { qemuImg, resizeArgs, type Resizer } from './subjects.ts';
import { checkOracle, isClean, parseCheck, type CheckObservation } from '../oracles/check.ts';
import { contentOracle, regrowQuirk } from '../oracles/content.ts';
import type { Finding } from '../oracles/finding.ts';
import { infoFromStructure, infoOracle, type InfoObservation } from '../oracles/info.ts';
import { classifyOutcome, outcomeOracle, type OutcomeClass } from '../oracles/outcome.ts';
import { unchangedOnRefusalOracle } from '../oracles/unchanged.ts';
import { afterUseOracle, afterUseWorkload } from '../oracles/after-use.ts';
import { hasHostClustersFrom, readQcow2Header, structuralCheck } from './qcow2.ts';
import { structureOracle } from '../oracles/structure.ts';

export const BASE = 'base.qcow2';
export const REFERENCE = 'reference.qcow2';
export const SUBJECT = 'subject.qcow2';

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

/** The file's hash; a subject may delete the image, which is evidence, not a harness error. */
async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw err;
  }
  return hash.digest('hex');
}

/** Images above this host size are not stored in reports (a subject may write a huge file). */
export const MAX_STORED_IMAGE = 128 * 1024 * 1024;

async function collectArtifacts(dir: string) {
  const artifacts: CaseResult['artifacts'] = [];
  const artifactsSkipped: string[] = [];
  for (const name of [BASE, REFERENCE, SUBJECT]) {
    const size = await stat(join(dir, name)).then((s) => s.size, () => null);
    if (size === null) artifactsSkipped.push(`${name}: missing after the run`);
    else if (size > MAX_STORED_IMAGE) artifactsSkipped.push(`${name}: ${size} bytes, above the ${MAX_STORED_IMAGE}-byte limit for stored images`);
    else artifacts.push({ name: `${name}.gz`, data: await promisify(gzip)(await readFile(join(dir, name))) });
  }
  return { artifacts, artifactsSkipped };
}

const NO_SPACE = /No space left on device/i;

const COMPARE_ARGS = ['compare', '-f', 'qcow2', '-F', 'qcow2', REFERENCE, SUBJECT];
const headerSize = (file: string) => readQcow2Header(file).then((h) => h.size, () => null);

const sizeOf = (info: InfoObservation) => (info.ok ? Number(info.fields['virtual-size']) : null);

/** Builds the base image, copies it for each side, runs the steps and the oracles after each.
 * The case stops at the first step with a finding: later steps would compare diverged images. */
export async function runCase(c: Case, options: ExecuteOptions): Promise<CaseResult> {
  return withDir(
    async ({ path: dir }) => {
      const commands: CommandRecord[] = [];
      const run = async (program: string, args: string[]) => {
        // the slot is taken at the start: commands run side by side finish in any order, and
        // reports must list them the same way every time
        const slot = commands.length;
        commands.length++;
        const record = await runCommand(program, args, { timeoutMs: options.timeoutMs, cwd: dir, signal: options.signal });
        commands[slot] = record;
        if (options.signal?.aborted) throw new CaseAborted();
        // both sides write into the work directory: a full disk there is no divergence
        if (NO_SPACE.test(record.stderr)) throw new DiskFullError(`the work directory ${options.workdir} is full (${program}: ${record.stderr.trim().split('\n')[0]}); free space or pass --workdir DIR`);
        return record;
      };
      for (const cmd of buildCommands(c, BASE)) {
        const r = await run(cmd.program, cmd.args);
        const ok = cmd.expect === 'abort' ? r.signal === 'SIGABRT' : r.exitCode === 0;
        if (!ok) throw new CaseSetupError(`${cmd.what} failed (exit ${r.exitCode ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`, r);
      }
      // The generator promised a clean image (a dirty one's refcounts lag by design), and the
      // qcow2 reader must count the same allocated clusters as qemu-img check: both are checked.
      let baseReader: CaseResult['baseReader'] = null;
      if (!c.image.dirty) {
        const [baseCheck, baseStructure] = await Promise.all([run('qemu-img', ['check', '-f', 'qcow2', '--output=json', BASE]), structuralCheck(join(dir, BASE))]);
        if (baseCheck.exitCode !== 0) throw new CaseSetupError(`the base image is not clean (qemu-img check exit ${baseCheck.exitCode ?? baseCheck.signal}): ${baseCheck.stdout.trim()}`, baseCheck);
        const byCheck = parseCheck(baseCheck.exitCode, baseCheck.stdout, baseCheck.stderr).report?.['allocated-clusters'] ?? 0;
        baseReader = { byCheck, byReader: baseStructure.readable ? baseStructure.allocatedClusters : null };
      }
      await copyFile(join(dir, BASE), join(dir, REFERENCE), constants.COPYFILE_FICLONE);
      await copyFile(join(dir, BASE), join(dir, SUBJECT), constants.COPYFILE_FICLONE);

      /** The subject's check, and qemu's own result's only when needed: to tell subject leaks
       * and corruptions from ones qemu's result has too. */
      const checks = async (subCheck: CommandRecord) => {
        const subjectCheck = parseCheck(subCheck.exitCode, subCheck.stdout, subCheck.stderr);
        if (isClean(subjectCheck)) return { subjectCheck };
        const refCheck = await run('qemu-img', ['check', '-f', 'qcow2', '--output=json', REFERENCE]);
        return { subjectCheck, referenceCheck: parseCheck(refCheck.exitCode, refCheck.stdout, refCheck.stderr) };
      };

      /** Re-attributes a content difference that is qemu's regrow quirk (two reads, only then). */
      const withRegrowQuirk = async (content: Finding[], step: number): Promise<Finding[]> => {
        const at = (content[0]?.evidence as { firstMismatch?: number | null } | undefined)?.firstMismatch;
        const window = typeof at === 'number' ? (regrowWindows(c, step).find((w) => at >= w.start && at < w.end) ?? null) : null;
        if (window === null) return content;
        const readsZero = async (file: string) => (await run('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P 0 ${window.start} ${window.end - window.start}`, file])).exitCode === 0;
        const [refZero, subZero] = await Promise.all([readsZero(REFERENCE), readsZero(SUBJECT)]);
        const quirk = regrowQuirk(window, refZero, subZero);
        return quirk ? [quirk] : content;
      };

      const steps: StepRecord[] = [];
      const findings: StepFinding[] = [];
      for (const [index, { before, plan }] of plannedSizes(c).entries()) {
        const step = c.steps[index]!;
        const [refHash, subHash, discardsAllocated] = await Promise.all([
          sha256(join(dir, REFERENCE)),
          sha256(join(dir, SUBJECT)),
          plan.kind === 'shrink' && plan.accepted ? hasHostClustersFrom(join(dir, REFERENCE), plan.target!) : undefined,
        ]);
        const [ref, sub] = await Promise.all([run(qemuImg.program, resizeArgs(qemuImg, step, REFERENCE)), run(options.subject.program, resizeArgs(options.subject, step, SUBJECT))]);
        const record: StepRecord = { index, sizeBefore: before, plan, reference: classifyOutcome(ref), subject: classifyOutcome(sub), discardsAllocated, subjectStderr: sub.stderr };
        steps.push(record);
        const found: Finding[] = outcomeOracle(ref, sub, plan.kind);
        if (record.reference === 'refused' || record.subject === 'refused') {
          found.push(
            ...unchangedOnRefusalOracle({
              reference: record.reference === 'refused' ? { before: refHash, after: await sha256(join(dir, REFERENCE)) } : null,
              subject: record.subject === 'refused' ? { before: subHash, after: await sha256(join(dir, SUBJECT)) } : null,
            }),
          );
        }

        if (record.reference === 'ok' && record.subject === 'ok') {
          // the info fields come from the headers the structure oracle reads anyway (test/info.test.ts
          // holds them equal to `qemu-img info`): two processes fewer per step
          const [subCheck, compare, subStructure, refStructure] = await Promise.all([
            run('qemu-img', ['check', '-f', 'qcow2', '--output=json', SUBJECT]),
            run('qemu-img', COMPARE_ARGS),
            structuralCheck(join(dir, SUBJECT)),
            structuralCheck(join(dir, REFERENCE)),
          ]);
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
        const io = (file: string) => run('qemu-io', ['-f', 'qcow2', ...workload.flatMap((w) => ['-c', w]), file]);
        const [refIo, subIo] = await Promise.all([io(REFERENCE), io(SUBJECT)]);
        afterUse = { workload, referenceExit: refIo.exitCode, subjectExit: subIo.exitCode };
        // sizes from the headers: the workload grew both images, and this saves two info runs
        const [subCheck, compare, referenceSize, subjectSize] = await Promise.all([
          run('qemu-img', ['check', '-f', 'qcow2', '--output=json', SUBJECT]),
          run('qemu-img', COMPARE_ARGS),
          headerSize(join(dir, REFERENCE)),
          headerSize(join(dir, SUBJECT)),
        ]);
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

      const kept = options.wantArtifacts(findings, steps) ? await collectArtifacts(dir) : { artifacts: [], artifactsSkipped: [] };
      return { findings, steps, afterUse, commands, baseReader, ...kept };
    },
    { unsafeCleanup: true, prefix: 'instar-fuzz-', tmpdir: options.workdir },
  ).catch((err: unknown) => {
    if (isNoSpace(err)) throw new DiskFullError(`the work directory ${options.workdir} is full: ${(err as Error).message}; free space or pass --workdir DIR`);
    throw err;
  });
}

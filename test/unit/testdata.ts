// The testdata/ corpus (testdata/README.md): recorded inputs beside the expectations computed from
// them. Each kind of case has one function that computes "actual" from its inputs; the unit tests
// compare it with the stored expectation and `npm run testdata -- --update` stores it, so the
// goldens are exactly what the tests compare. Nothing here runs qemu.
import { chainOracle, type ChainObservation } from '../../oracles/chain.ts';
import { cp, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { parseCase, type Case } from '../../model/case.ts';
import { operationOf } from '../../operations/table.ts';
import type { CommandRecord } from '../../model/commands.ts';
import { planOperation, type StepKind } from '../../model/plan.ts';
import { initialState } from '../../model/state.ts';
import { structuralCheck, type StructureObservation } from '../../qcow2/structure.ts';
import type { FormatStructure, StructuredFormat } from '../../formats/rules.ts';
import { readFormatStructure } from '../../formats/structure.ts';
import { formatStructureOracle } from '../../oracles/format-structure.ts';
import { afterUseOracle, workloadOutcomes, type AfterUseObservation } from '../../oracles/after-use.ts';
import { checkOracle, isClean, parseCheck } from '../../oracles/check.ts';
import {
  contentOracle,
  firstMismatch,
  type CompareContext,
  type ObservedStep,
  type CompareObservation,
  type RegrowProbe,
} from '../../oracles/content.ts';
import { signatureOf, type Finding, type StepFinding } from '../../oracles/finding.ts';
import { infoFromStructure, infoOracle, parseInfo } from '../../oracles/info.ts';
import { classifyOutcome, outcomeOracle, type AcceptedSize } from '../../oracles/outcome.ts';
import { sizeGrammarOracle, type SizeObservation } from '../../oracles/size-grammar.ts';
import { outputOracle, type OutputObservation } from '../../oracles/output.ts';
import { inPlaceOracle, type InPlaceObservation } from '../../oracles/in-place.ts';
import { allocationOracle, type AllocationObservation } from '../../oracles/allocation.ts';
import { bitmapsOracle } from '../../oracles/bitmaps.ts';
import { headerInconsistencies, structureOracle } from '../../oracles/structure.ts';
import { judgeStep, type StepObservation } from '../../oracles/table.ts';
import { unchangedOnRefusalOracle, type RefusalHashes } from '../../oracles/unchanged-on-refusal.ts';
import type { StepRecord } from '../../exec/run-case.ts';
import { caseFacts, judge, loadRegistry, parseRegistry } from '../../triage/registry.ts';
import { collectIndex, indexHtml, indexMarkdown } from '../../reporting/index-page.ts';
import { jobSummaryMarkdown } from '../../reporting/job-summary.ts';
import { PICTURE_FILE, reportPicture } from '../../reporting/damage-picture.ts';
import { readSummary } from '../../reporting/summary.ts';
import { issueText } from '../../reporting/issues.ts';
import { reportMarkdown } from '../../reporting/render.ts';
import { reproOfReport } from '../../reporting/sighting.ts';
import { parseReport, reportFolder } from '../../reporting/store.ts';

/** The checkout, without a trailing slash. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
export const TESTDATA = join(ROOT, 'testdata');

/** One JSON case file: what it shows, the recorded (or written) inputs, and the expectation. */
export interface TestCase<Input = unknown, Expected = unknown> {
  description: string;
  input: Input;
  expected: Expected;
}

/** A finding as testdata states it: what its signature is made of, and the signature. Messages
 * are left out: they carry sizes and paths of the recording (report.md goldens show them). */
export interface FindingView {
  oracle: string;
  kind: string;
  side: string;
  detail: string;
  signature: string;
}

export const findingView = (f: Finding): FindingView => ({
  oracle: f.oracle,
  kind: f.kind,
  side: f.side,
  detail: f.detail,
  signature: signatureOf(f),
});

/** What a JSON file can hold: undefined fields dropped, as in the stored expectation. */
export const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

/** A command's recorded result: qemu-img check, info or compare. */
export interface Recorded {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

// ---- the JSON kinds ------------------------------------------------------------------------------

export interface CheckInput {
  subject: Recorded;
  /** qemu's own result, checked only when the subject's is not clean (as exec/run-case.ts does). */
  reference: Recorded | null;
  /** The images case (relative to testdata/) whose images were checked: their structures name the
   * clusters qemu-img check complains about. */
  images: string | null;
}

/** The structures of an images case, or none. */
async function structuresOf(images: string | null) {
  if (images === null) return { subject: null, reference: null, subjectBefore: null };
  return observeImages((await readCase<ImagesInput>(images)).input, join(TESTDATA, images));
}

const parseRecorded = (r: Recorded) => parseCheck(r.exitCode, r.stdout, r.stderr);

async function checkActual(input: CheckInput) {
  const subject = parseRecorded(input.subject);
  const reference = input.reference && parseRecorded(input.reference);
  const findings = checkOracle(subject, reference, await structuresOf(input.images));
  return { subjectClean: isClean(subject), findings: findings.map(findingView) };
}

export interface InfoInput {
  reference: Recorded;
  subject: Recorded;
}

function infoActual(input: InfoInput) {
  const reference = parseInfo(input.reference.exitCode, input.reference.stdout, input.reference.stderr);
  const subject = parseInfo(input.subject.exitCode, input.subject.stdout, input.subject.stderr);
  return { reference, subject, findings: infoOracle(reference, subject).map(findingView) };
}

export interface CompareInput {
  compare: CompareObservation;
  regrow: RegrowProbe | null;
  /** The case and step the results come from: where a difference lies is named from them. */
  where: CompareContext | null;
}

const compareActual = (input: CompareInput) => ({
  firstMismatch: firstMismatch(input.compare),
  findings: contentOracle(input.compare, input.regrow, input.where).map(findingView),
});

export interface OutcomeInput {
  stepKind: StepKind;
  reference: CommandRecord;
  subject: CommandRecord;
  /** When only qemu-img refused: what the subject made of the size. */
  accepted: AcceptedSize | null;
}

const outcomeActual = (input: OutcomeInput) => ({
  reference: classifyOutcome(input.reference),
  subject: classifyOutcome(input.subject),
  findings: outcomeOracle(input.reference, input.subject, input.stepKind, input.accepted).map(findingView),
});

export interface UnchangedInput {
  reference: RefusalHashes;
  subject: RefusalHashes;
}

const unchangedActual = (input: UnchangedInput) => ({ findings: unchangedOnRefusalOracle(input).map(findingView) });

const sizeGrammarActual = (input: SizeObservation) => ({ findings: sizeGrammarOracle(input).map(findingView) });
/** The recorded case read as a report's is (parseCase gives older recordings their defaults). */
const outputActual = (input: OutputObservation) => ({
  findings: outputOracle({ ...input, case: parseCase(structuredClone(input.case)) }).map(findingView),
});
const inPlaceActual = (input: InPlaceObservation) => ({ findings: inPlaceOracle(input).map(findingView) });
const allocationActual = (input: AllocationObservation) => ({ findings: allocationOracle(input).map(findingView) });
const chainActual = (input: ChainObservation) => ({ findings: chainOracle(input).map(findingView) });

/** The after-use observation as recorded, the subject's structure given by its image (an images
 * case, relative to testdata/), read as the harness reads it: only when its check is not clean. */
export interface AfterUseInput extends Omit<AfterUseObservation, 'context' | 'reference' | 'subject'> {
  /** What qemu-io printed running the workload on each side (timing lines taken out). */
  io: { reference: Recorded; subject: Recorded };
  context: { where: CompareContext; images: string | null };
}

async function afterUseActual(input: AfterUseInput) {
  const { io, context, ...observed } = input;
  const unclean = input.subjectCheck !== null && !isClean(input.subjectCheck);
  const structures = unclean ? await structuresOf(context.images) : null;
  const subjectStructure = structures?.subject ?? null;
  const outcomes = (r: Recorded, size: number | null) => workloadOutcomes(input.workload, r.stdout, r.stderr, size);
  const o: AfterUseObservation = {
    ...observed,
    reference: outcomes(io.reference, input.compare.referenceSize),
    subject: outcomes(io.subject, input.compare.subjectSize),
    context: { where: context.where, subjectStructure, subjectBefore: structures?.subjectBefore ?? null },
  };
  return { outcomes: { reference: o.reference, subject: o.subject }, findings: afterUseOracle(o).map(findingView) };
}

/** The gzipped images of a case, named relative to its JSON file; null for a file that is not there
 * (a subject that deleted its image). `info` is `qemu-img info` of the subject as recorded. */
export interface ImagesInput {
  subject: string | null;
  reference: string | null;
  /** The subject's image right before the step (absent in recordings made before it was kept). */
  before?: string | null;
  info: Recorded | null;
}

/** The parts of a structure observation the structure oracle's findings rest on, in short. */
export function structureDigest(o: StructureObservation) {
  if (!o.readable) return { readable: false, reason: o.reason };
  const tally = (keys: string[]) => {
    const counts: Record<string, number> = {};
    for (const k of keys.sort()) counts[k] = (counts[k] ?? 0) + 1;
    return counts;
  };
  return {
    readable: true,
    version: o.header.version,
    refcountBits: o.header.refcountBits,
    headerInconsistencies: headerInconsistencies(o),
    extensions: o.extensions.map((e) => e.name),
    refcountsChecked: o.refcountsChecked,
    mismatchCounts: o.mismatchCounts,
    listedMismatches: tally(o.refcountMismatches.map((m) => `${m.class}:${m.role ?? 'unreferenced'}`)),
    copiedMismatchCount: o.copiedMismatchCount,
    copiedMismatches: tally(o.copiedMismatches.map((m) => m.table)),
    beyondEofCount: o.beyondEofCount,
    beyondEof: tally(o.beyondEof.map((b) => b.role)),
    mappingsBeyondEndCount: o.mappingsBeyondEndCount,
    mappingsBeyondEnd: tally(o.mappingsBeyondEnd.map((m) => m.table)),
    problems: o.problems.map((p) => p.what),
    allocatedClusters: o.allocatedClusters,
    compressedClusters: o.compressedClusters,
    snapshots: o.snapshots,
    bitmaps: o.bitmaps,
    // the bits only where there are bitmaps: the other images' digests stay as recorded
    ...(o.bitmapBits?.length ? { bitmapBits: o.bitmapBits } : {}),
  };
}

/** Structure observations of a case's images, each gunzipped into a temporary directory. */
export async function observeImages(input: ImagesInput, caseFile: string) {
  const dir = await mkdtemp(join(tmpdir(), 'testdata-images-'));
  try {
    const observe = async (name: string | null, as: string) => {
      const path = join(dir, as);
      if (name !== null) await writeFile(path, gunzipSync(await readFile(join(dirname(caseFile), name))));
      // messages name the file: relative to the temporary directory, they stay the same run to run
      return JSON.parse(
        JSON.stringify(await structuralCheck(path))
          .split(`${dir}/`)
          .join(''),
      ) as StructureObservation;
    };
    const subject = await observe(input.subject, 'subject.qcow2');
    const reference = input.reference === null ? null : await observe(input.reference, 'reference.qcow2');
    const subjectBefore = input.before ? await observe(input.before, 'before.qcow2') : null;
    return { subject, reference, subjectBefore };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A vpc, vhdx or vmdk image of format-images/ (and the extent files of a vmdk with a text
 * descriptor): each file's name as the image names it, and its gzipped copy beside the case. */
export interface FormatImagesInput {
  format: StructuredFormat;
  image: string;
  files: Record<string, string>;
}

/** What the format reader makes of the image, and the structure oracle's findings on it. */
async function formatImagesActual(input: FormatImagesInput, caseFile: string) {
  const dir = await mkdtemp(join(tmpdir(), 'testdata-formats-'));
  try {
    for (const [name, gz] of Object.entries(input.files))
      await writeFile(join(dir, name), gunzipSync(await readFile(join(dirname(caseFile), gz))));
    const s = await readFormatStructure(join(dir, input.image), input.format);
    const observed = JSON.parse(JSON.stringify(s).split(`${dir}/`).join('')) as FormatStructure;
    return {
      virtualSize: observed.readable ? observed.virtualSize : null,
      checked: observed.readable ? observed.checked : [],
      broken: observed.readable ? observed.broken : [],
      findings: formatStructureOracle(observed, null).map(findingView),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function imagesActual(input: ImagesInput, caseFile: string) {
  const { subject, reference, subjectBefore } = await observeImages(input, caseFile);
  return {
    subject: structureDigest(subject),
    reference: reference && structureDigest(reference),
    info: infoFromStructure(subject),
    findings: [
      ...structureOracle(subject, reference, subjectBefore),
      ...(reference ? bitmapsOracle(bitsOf(reference), bitsOf(subject)) : []),
    ].map(findingView),
  };
}

const bitsOf = (o: StructureObservation) => (o.readable ? o.bitmapBits : undefined);

/** One judged step, put together from other cases (paths relative to testdata/): the outcome
 * case's two commands, the unchanged case's hashes when a side refused, and when both accepted
 * the check, images, info and compare cases' inputs. */
export interface StepInput {
  case: Case;
  index: number;
  /** The sizes read from the images: the subject's before the step, qemu's result's before and
   * after each step up to it. */
  sizeBefore: number | null;
  history: ObservedStep[];
  outcome: string;
  refusal: string | null;
  results: { check: string; images: string; info: string; compare: string } | null;
}

async function stepActual(input: StepInput) {
  const outcome = (await readCase<OutcomeInput>(input.outcome)).input;
  const observation: StepObservation = {
    case: input.case,
    index: input.index,
    kind: outcome.stepKind,
    operation: { name: 'resize', oracles: operationOf(input.case.steps[input.index]!).oracles },
    reference: outcome.reference,
    subject: outcome.subject,
    sizeBefore: input.sizeBefore,
    history: input.history,
    output: 'human',
    subjectAfter: null,
    accepted: outcome.accepted,
    refusal: input.refusal === null ? null : (await readCase<UnchangedInput>(input.refusal)).input,
    results: null,
    inPlace: null,
  };
  if (input.results !== null) {
    const check = (await readCase<CheckInput>(input.results.check)).input;
    const info = (await readCase<InfoInput>(input.results.info)).input;
    const compare = (await readCase<CompareInput>(input.results.compare)).input;
    const { subject, reference, subjectBefore } = await structuresOf(input.results.images);
    if (subject === null || reference === null) throw new Error(`${input.results.images} lacks an image`);
    const parseInfoOf = (r: Recorded) => parseInfo(r.exitCode, r.stdout, r.stderr);
    observation.results = {
      subjectCheck: parseRecorded(check.subject),
      referenceCheck: check.reference && parseRecorded(check.reference),
      subjectStructure: subject,
      referenceStructure: reference,
      subjectInfo: parseInfoOf(info.subject),
      referenceInfo: parseInfoOf(info.reference),
      compare: compare.compare,
      regrow: compare.regrow,
      allocation: null,
      subjectBefore,
    };
  }
  const judged = judgeStep(observation);
  return { oracles: judged.oracles, findings: judged.findings.map(findingView) };
}

/** A finding of one step of a case, and what the registry is asked about it. `registry`: entries
 * to match against instead of the shipped known-divergences.json. */
export interface RegistryInput {
  case: unknown;
  step: Pick<StepRecord, 'index' | 'sizeBefore' | 'reference' | 'subject' | 'subjectStderr'> &
    Partial<Pick<StepRecord, 'stateBefore' | 'refcountTableGrew'>>;
  finding: Pick<Finding, 'oracle' | 'kind' | 'side' | 'detail'>;
  registry?: unknown[];
}

async function registryActual(input: RegistryInput, caseFile: string) {
  const c = parseCase(structuredClone(input.case), `${caseFile}: case`);
  // qemu's rules of the step's operation, from the state the case describes at the size recorded
  const state = { ...initialState(c), size: input.step.sizeBefore };
  const { next: _, ...plan } = planOperation(c.steps[input.step.index]!, state, c.image.format);
  const step: StepRecord = { ...input.step, plan, oracles: [] };
  const entries =
    input.registry === undefined
      ? await loadRegistry(join(ROOT, 'known-divergences.json'))
      : parseRegistry(JSON.stringify({ divergences: input.registry }), 'registry.json');
  const finding: StepFinding = { ...input.finding, message: '', step: input.step.index };
  const facts = caseFacts(c, step);
  const { entry, messageDiffers } = judge(entries, finding, facts, step.subjectStderr);
  return { facts, known: entry?.id ?? null, messageDiffers: messageDiffers.map((e) => e.id) };
}

/** A registry file's text, or its JSON value; the expectation is the error that rejects it. */
export type RegistryInvalidInput = { text: string } | { registry: unknown };

function registryInvalidActual(input: RegistryInvalidInput) {
  const text = 'text' in input ? input.text : JSON.stringify(input.registry);
  try {
    return { error: null, entries: parseRegistry(text, 'registry.json').length };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

interface JsonKind {
  /** What the expectation of a case is, from its input; `caseFile` is the case's path. */
  actual: (input: never, caseFile: string) => unknown;
}

/** Every kind of JSON case, by its testdata/ directory. */
export const JSON_KINDS = {
  check: { actual: checkActual },
  info: { actual: infoActual },
  compare: { actual: compareActual },
  outcome: { actual: outcomeActual },
  unchanged: { actual: unchangedActual },
  'after-use': { actual: afterUseActual },
  'size-grammar': { actual: sizeGrammarActual },
  output: { actual: outputActual },
  'in-place': { actual: inPlaceActual },
  allocation: { actual: allocationActual },
  chain: { actual: chainActual },
  images: { actual: imagesActual },
  'format-images': { actual: formatImagesActual },
  steps: { actual: stepActual },
  registry: { actual: registryActual },
  'registry-invalid': { actual: registryInvalidActual },
} satisfies Record<string, JsonKind>;

export type JsonKindName = keyof typeof JSON_KINDS;

/** The directories of one oracle's (or one step's) observations, whose expectations are findings. */
export const ORACLE_DIRS: JsonKindName[] = [
  'size-grammar',
  'output',
  'in-place',
  'allocation',
  'check',
  'info',
  'compare',
  'outcome',
  'unchanged',
  'after-use',
  'chain',
  'steps',
];

/** The case files of a directory of testdata/, as paths relative to testdata/, in name order. */
export async function caseFiles(dir: JsonKindName): Promise<string[]> {
  const names = await readdir(join(TESTDATA, dir)).catch(() => []);
  return names
    .filter((n) => n.endsWith('.json'))
    .sort()
    .map((n) => join(dir, n));
}

export async function readCase<Input = unknown, Expected = unknown>(file: string): Promise<TestCase<Input, Expected>> {
  return JSON.parse(await readFile(join(TESTDATA, file), 'utf8')) as TestCase<Input, Expected>;
}

/** The expectation a case file must hold, computed from its input. */
export async function expectedOf(dir: JsonKindName, file: string): Promise<unknown> {
  const c = await readCase(file);
  const actual = JSON_KINDS[dir].actual as (input: unknown, caseFile: string) => unknown;
  return plain(await actual(c.input, join(TESTDATA, file)));
}

// ---- the golden files ----------------------------------------------------------------------------

/** The folder of each recorded report under testdata/reports/, in name order. */
export async function reportCases(): Promise<string[]> {
  const entries = await readdir(join(TESTDATA, 'reports'), { withFileTypes: true });
  return entries
    .filter((e) => e.isDirectory())
    .map((e) => join('reports', e.name))
    .sort();
}

/** The files the fuzzer renders from a report.json, as it renders them when it files the report
 * (reporting/sighting.ts) and when it writes an issue (reporting/issues.ts). */
export async function reportGoldens(folder: string): Promise<Record<string, string>> {
  const file = join(TESTDATA, folder, 'report.json');
  const report = parseReport(await readFile(file, 'utf8'), 'report.json');
  const where = reportFolder(report.finding, report.flaky);
  const repro = reproOfReport(report);
  const issue = issueText(report, where, repro);
  const picture = reportPicture(report);
  return {
    'report.md': reportMarkdown(report, where),
    'repro.sh': repro,
    'issue-title.txt': `${issue.title}\n`,
    'issue.md': issue.body,
    ...(picture === null ? {} : { [PICTURE_FILE]: picture }),
  };
}

/** When the index goldens were "generated": also the modification time given to summary.json,
 * which the index shows when the summary has no date of its own (as fuzz runs write it). */
export const INDEX_NOW = new Date('2026-12-03T00:00:00.000Z');
export const INDEX_CASE = 'index';

/** index.md and index.html of testdata/index/reports, as of INDEX_NOW. The directory is copied so
 * that summary.json's time and the paths in messages do not depend on the checkout. */
export async function indexGoldens(): Promise<Record<string, string>> {
  const dir = await mkdtemp(join(tmpdir(), 'testdata-index-'));
  try {
    const reports = join(dir, 'reports');
    await cp(join(TESTDATA, INDEX_CASE, 'reports'), reports, { recursive: true });
    await utimes(join(reports, 'summary.json'), INDEX_NOW, INDEX_NOW);
    const ix = await collectIndex(reports, INDEX_NOW);
    ix.unreadable = ix.unreadable.map((u) => ({ ...u, error: u.error.split(`${dir}/`).join('') }));
    // the job summary of the same run; its top signature's repro.sh is the golden one of that report
    const summary = await readSummary(reports);
    const topRepro = await readFile(join(TESTDATA, 'reports', 'two-faults-content-differs', 'repro.sh'), 'utf8');
    const jobSummary = jobSummaryMarkdown({ summary, topRepro, artifact: 'reports' });
    return { 'index.md': indexMarkdown(ix), 'index.html': indexHtml(ix), 'job-summary.md': jobSummary };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Every golden file (relative to testdata/) with the text it must hold. */
export async function goldenFiles(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const put = (folder: string, files: Record<string, string>) => {
    for (const [name, text] of Object.entries(files)) out[join(folder, name)] = text;
  };
  for (const folder of await reportCases()) put(folder, await reportGoldens(folder));
  put(INDEX_CASE, await indexGoldens());
  return out;
}

// ---- comparing -----------------------------------------------------------------------------------

export interface Difference {
  /** Relative to testdata/. */
  file: string;
  /** The first line that differs, for people; null when the file is missing. */
  firstDifference: string | null;
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

function firstDifferingLine(stored: string, wanted: string): string {
  const [a, b] = [stored.split('\n'), wanted.split('\n')];
  const at = a.findIndex((line, i) => line !== b[i]);
  const i = at === -1 ? a.length : at;
  return `line ${i + 1}: stored ${JSON.stringify(a[i] ?? '(end)')}, computed ${JSON.stringify(b[i] ?? '(end)')}`;
}

/** What every expectation and golden file must hold: file (relative to testdata/) -> text. */
export async function wantedFiles(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const dir of Object.keys(JSON_KINDS) as JsonKindName[]) {
    for (const file of await caseFiles(dir)) {
      const c = await readCase(file);
      out[file] = json({ description: c.description, input: c.input, expected: await expectedOf(dir, file) });
    }
  }
  return { ...out, ...(await goldenFiles()) };
}

/** The files whose stored text is not what the inputs give. */
export async function differences(wanted: Record<string, string>): Promise<Difference[]> {
  const out: Difference[] = [];
  for (const [file, text] of Object.entries(wanted)) {
    const stored = await readFile(join(TESTDATA, file), 'utf8').catch(() => null);
    if (stored === text) continue;
    out.push({ file, firstDifference: stored === null ? null : firstDifferingLine(stored, text) });
  }
  return out;
}

/** Whether a path exists (a recorded image, a report folder). */
export const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

export const UPDATE_HINT = 'if the change is meant, npm run testdata -- --update rewrites it (testdata/README.md)';

/** A case's input, its stored expectation and the one its input gives now. */
export async function judged<Input = unknown, Expected = unknown>(dir: JsonKindName, file: string) {
  const c = await readCase<Input, Expected>(file);
  return { input: c.input, stored: c.expected, computed: (await expectedOf(dir, file)) as Expected };
}

/** What the findings of a stored expectation are: `oracle/kind/side` each. */
export const kindsOf = (e: { findings: FindingView[] }) => e.findings.map((f) => `${f.oracle}/${f.kind}/${f.side}`);

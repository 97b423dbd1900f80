import type { CommandRecord } from '../model/commands.ts';
import type { Case, OperationName, OutputMode, RepairStep } from '../model/case.ts';
import { repairOracle } from '../operations/repair/judge.ts';
import type { FormatStructure } from '../formats/rules.ts';
import type { StructureObservation } from '../qcow2/structure.ts';
import { afterUseOracle, type AfterUseObservation } from './after-use.ts';
import { allocationOracle, type AllocationObservation } from './allocation.ts';
import { bitmapsOracle } from './bitmaps.ts';
import { chainOracle, type ChainObservation } from './chain.ts';
import { checkOracle, type CheckObservation } from './check.ts';
import {
  contentOracle,
  snapshotContentOracle,
  type CompareObservation,
  type ObservedStep,
  type RegrowProbe,
} from './content.ts';
import type { Finding } from './finding.ts';
import { inPlaceOracle, type InPlaceObservation } from './in-place.ts';
import { infoOracle, type InfoObservation } from './info.ts';
import { outcomeOracle, type AcceptedSize } from './outcome.ts';
import { outputOracle } from './output.ts';
import { byRank } from './rank.ts';
import { sizeGrammarOracle } from './size-grammar.ts';
import { formatStructureOracle } from './format-structure.ts';
import { structureOracle } from './structure.ts';
import { unchangedOnRefusalOracle, type RefusalHashes } from './unchanged-on-refusal.ts';

// The oracles, in the order they judge a step: the one table that execution (which oracles run
// when), the registry (which names an entry may match) and coverage (which oracles ran) derive
// their lists from. Each oracle is a pure function of what a step's execution observed.

/** Everything observed of one step on both sides. */
export interface StepObservation {
  /** The case and the step's index in it. */
  case: Case;
  index: number;
  /** The step's kind by its operation's rules, from the state read before it. */
  kind: string;
  /** The step's operation and the oracles of its own that judge it (size-grammar, allocation). */
  operation: {
    name: OperationName;
    oracles: readonly string[];
    acceptedExits?: readonly number[];
    damagedInput?: boolean;
  };
  /** The two resize commands. */
  reference: CommandRecord;
  subject: CommandRecord;
  /** Virtual sizes read from the images, never predicted: the subject's right before the step, and
   * qemu's result's before and after every step so far, this one included (after: null where
   * qemu-img refused). */
  sizeBefore: number | null;
  history: ObservedStep[];
  /** What the subject was asked to print, and its image after the step when it owes a JSON
   * report of it. */
  output: OutputMode;
  subjectAfter: { size: number | null; fileLength: number | null } | null;
  /** When only qemu-img refused: what the subject made of the size. */
  accepted: AcceptedSize | null;
  /** When either side refused: the refusing sides' files hashed before and after the step. */
  refusal: { reference: RefusalHashes; subject: RefusalHashes } | null;
  /** When both sides accepted: the two results, checked, read and compared. */
  results: ResultsObservation | null;
  /** The subject's image and its directory around its resize; null when the image was not there
   * before it. */
  inPlace: InPlaceObservation | null;
}

export interface ResultsObservation {
  /** null for a format qemu-img cannot check (raw). */
  subjectCheck: CheckObservation | null;
  /** qemu's own result is checked only when the subject's check is not clean. */
  referenceCheck: CheckObservation | null;
  /** The qcow2 structures read by the harness; null for a raw image, which has none. */
  subjectStructure: StructureObservation | null;
  referenceStructure: StructureObservation | null;
  /** The subject's image before the step, as the harness read it (qcow2): what the clusters a step
   * leaked had been. null where not read. */
  subjectBefore?: StructureObservation | null;
  /** After a snapshot apply: each side compared with the guest content kept when the snapshot was
   * taken (exec/snapshot-content.ts). */
  snapshotContent?: SnapshotContentObservation | null;
  /** A vpc's, vhdx's or vmdk's structures, read by the format readers (formats/); null for qcow2 and
   * raw. Absent in steps recorded before they existed. */
  formatStructures?: { subject: FormatStructure; reference: FormatStructure } | null;
  subjectInfo: InfoObservation;
  referenceInfo: InfoObservation;
  compare: CompareObservation;
  regrow: RegrowProbe | null;
  /** Null where it was not observed (recorded steps of testdata/). */
  allocation: AllocationObservation | null;
  /** The chain below the top, after a commit or a rebase (absent for other steps). */
  chain?: ChainObservation | null;
}

/** Each side after a snapshot apply, compared with the content the snapshot was taken with. */
export interface SnapshotContentObservation {
  name: string;
  reference: CompareObservation;
  subject: CompareObservation;
}

type StepOracle = {
  name: string;
  stage: 'step';
  /** Whether the oracle has something to judge in this step. */
  runs: (o: StepObservation) => boolean;
  judge: (o: StepObservation) => Finding[];
};
type AfterUseStage = { name: string; stage: 'after-use'; judge: (o: AfterUseObservation) => Finding[] };

const bitmapsOf = (o: StructureObservation | null) => (o?.readable ? o.bitmapBits : undefined);
const refused = (o: StepObservation) => o.refusal !== null;
const accepted = (o: StepObservation) => o.results !== null;
/** A finding on a result the subject made of a step qemu-img refused: repro.sh then wants the refusal. */
const judgedAlone = (f: Finding): Finding => ({
  ...f,
  message: `${f.message} (qemu-img refused the step: the subject's result is judged alone)`,
  evidence: { ...(f.evidence as object | undefined), alone: true },
});
const checked = (o: StepObservation) => o.results?.subjectCheck != null || o.accepted?.check !== undefined;
const hasStructure = (o: StepObservation) => o.results?.subjectStructure != null || o.results?.formatStructures != null;

const sizesOf = ({ results: r, accepted }: StepObservation) =>
  r
    ? { reference: r.compare.referenceSize, subject: r.compare.subjectSize }
    : accepted && { reference: null, subject: accepted.after };

/** Where the compared results stand: qemu's result's sizes before and after the step. */
const whereOf = (o: StepObservation) => {
  const { before, after } = o.history[o.index]!;
  return { clusterSize: o.case.image.clusterSize, before, after: after ?? before };
};

export const ORACLES = [
  {
    name: 'size-grammar',
    stage: 'step',
    runs: (o) => o.operation.oracles.includes('size-grammar'),
    judge: (o) => sizeGrammarOracle({ ...o, sizes: sizesOf(o) }),
  },
  {
    name: 'outcome',
    stage: 'step',
    runs: () => true,
    judge: (o) => outcomeOracle(o.reference, o.subject, o.kind, o.accepted, o.operation.acceptedExits),
  },
  {
    name: 'repair',
    stage: 'step',
    runs: (o) => o.operation.oracles.includes('repair'),
    judge: (o) => {
      const step = o.case.steps[o.index] as RepairStep;
      return repairOracle({ tier: step.tier, output: o.output, reference: o.reference, subject: o.subject });
    },
  },
  { name: 'unchanged-on-refusal', stage: 'step', runs: refused, judge: (o) => unchangedOnRefusalOracle(o.refusal!) },
  {
    name: 'check',
    stage: 'step',
    runs: checked,
    judge: ({ results: r, accepted: a }) =>
      // a step only the subject accepted: its result checked alone (repro.sh then wants qemu's refusal)
      r === null
        ? checkOracle(a!.check!, null).map(judgedAlone)
        : checkOracle(r.subjectCheck!, r.referenceCheck, {
            subject: r.subjectStructure,
            reference: r.referenceStructure,
            subjectBefore: r.subjectBefore ?? null,
          }),
  },
  {
    name: 'structure',
    stage: 'step',
    runs: hasStructure,
    judge: ({ results: r }) =>
      r!.formatStructures
        ? formatStructureOracle(r!.formatStructures.subject, r!.formatStructures.reference)
        : structureOracle(r!.subjectStructure!, r!.referenceStructure!, r!.subjectBefore ?? null),
  },
  {
    name: 'bitmaps',
    stage: 'step',
    // where either result has bitmaps: both must then have the same
    runs: ({ results: r }) =>
      Boolean(bitmapsOf(r?.subjectStructure ?? null)?.length || bitmapsOf(r?.referenceStructure ?? null)?.length),
    judge: (o) =>
      bitmapsOracle(
        bitmapsOf(o.results!.referenceStructure),
        bitmapsOf(o.results!.subjectStructure),
        o.operation.name === 'bitmap',
      ),
  },
  {
    name: 'info',
    stage: 'step',
    runs: accepted,
    judge: (o) => infoOracle(o.results!.referenceInfo, o.results!.subjectInfo),
  },
  {
    name: 'content',
    stage: 'step',
    runs: accepted,
    judge: (o) => [
      ...contentOracle(o.results!.compare, o.results!.regrow, whereOf(o)),
      ...(o.results!.snapshotContent ? snapshotContentOracle(o.results!.snapshotContent) : []),
    ],
  },
  {
    name: 'chain',
    stage: 'step',
    runs: (o) => o.operation.oracles.includes('chain') && o.results?.chain != null,
    judge: (o) => chainOracle(o.results!.chain!),
  },
  {
    name: 'allocation',
    stage: 'step',
    runs: (o) => o.operation.oracles.includes('allocation') && o.results?.allocation != null,
    judge: (o) => allocationOracle(o.results!.allocation!),
  },
  {
    name: 'output',
    stage: 'step',
    // a repair's words are each tool's own: the repair oracle judges what it prints
    runs: (o) => o.subject.exitCode === 0 && !o.subject.timedOut && !o.operation.oracles.includes('repair'),
    judge: outputOracle,
  },
  { name: 'in-place', stage: 'step', runs: (o) => o.inPlace !== null, judge: (o) => inPlaceOracle(o.inPlace!) },
  { name: 'after-use', stage: 'after-use', judge: afterUseOracle },
] as const satisfies readonly (StepOracle | AfterUseStage)[];

export type OracleName = (typeof ORACLES)[number]['name'];
export const ORACLE_NAMES: readonly OracleName[] = ORACLES.map((o) => o.name);

type Entry = (typeof ORACLES)[number];
const STEP_ORACLES: readonly StepOracle[] = ORACLES.filter(
  (o): o is Extract<Entry, { stage: 'step' }> => o.stage === 'step',
);
const AFTER_USE_ORACLES: readonly AfterUseStage[] = ORACLES.filter(
  (o): o is Extract<Entry, { stage: 'after-use' }> => o.stage === 'after-use',
);

/** The findings of one step, ranked from cause to symptom (rank.ts), and the oracles that judged
 * it. */
export function judgeStep(o: StepObservation): { findings: Finding[]; oracles: OracleName[] } {
  const ran = STEP_ORACLES.filter((oracle) => oracle.runs(o));
  // a step of another operation than resize names it in its findings' signatures
  const operation = o.operation.name === 'resize' ? {} : { operation: o.operation.name };
  // damage qemu's repair leaves is the measure of the subject's, not a qemu finding
  const qemus = (f: Finding) => f.side === 'reference' && (f.oracle === 'check' || f.oracle === 'structure');
  const found = ran.flatMap((oracle) => oracle.judge(o)).filter((f) => !(o.operation.damagedInput && qemus(f)));
  return {
    findings: byRank(found.map((f) => ({ ...f, ...operation }))),
    oracles: ran.map((oracle) => oracle.name as OracleName),
  };
}

/** The findings of the workload run on both results after the last step. */
export const judgeAfterUse = (o: AfterUseObservation): Finding[] =>
  byRank(AFTER_USE_ORACLES.flatMap((oracle) => oracle.judge(o)));

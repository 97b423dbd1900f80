import { operationOf } from '../operations/table.ts';
import { isConverted, isResize } from '../model/case.ts';
import { planStep } from '../model/plan.ts';
import { hasAbsoluteLinks, type SideFiles } from '../model/layout.ts';
import type { FormatStructure } from '../formats/rules.ts';
import type { StructureObservation } from '../qcow2/structure.ts';
import type { CaseRun } from './case-run.ts';
import type { ComparePlan } from './content-compare.ts';
import { provenUnchanged, stampOf, type Stamp } from './files.ts';
import { reader } from './readers.ts';

// The harness's own reading of a case's images (hashes, the structure oracle, compare plans, the
// shrink-discard probe) runs on reader threads while the commands that only read the images run,
// and is asked for in the order the answers are needed. This is that scheduling, kept beside the
// pipeline (run-case.ts) so that the pipeline reads as what it does.

/** What a step needs to know of both images before either is resized. */
export interface StepInputs {
  referenceHash: string;
  subjectHash: string;
  /** For a shrink qemu-img should accept from the size observed before it: whether clusters holding
   * data lie past the new end. */
  discardsAllocated: boolean | undefined;
}

/** The structures of both results of a step: qcow2's, or a vpc's, vhdx's or vmdk's. */
export type ResultStructures =
  | { kind: 'qcow2'; subject: StructureObservation; reference: StructureObservation }
  | { kind: 'format'; subject: FormatStructure; reference: FormatStructure };

export class ReadAhead {
  private nextInputs: Promise<StepInputs> | null = null;

  /** `sizeOf` reads a side's virtual size from its image (the plan of a step is qemu's rules
   * applied to the size observed before it, never to a predicted one). */
  constructor(
    private readonly run: CaseRun,
    private readonly sizeOf: (side: SideFiles) => Promise<number | null>,
  ) {}

  /** Only a qcow2 image has a structure the harness reads, and a compare plan from it. */
  private get qcow2() {
    return this.run.c.image.format === 'qcow2';
  }

  /** The structure of the base image, read while qemu-img checks it. */
  baseStructure(): Promise<StructureObservation> {
    return this.run.background(reader.structuralCheck(this.run.path(this.run.layout.base)));
  }

  /** Step 0's inputs, read once both copies are made: both sides are still the base image, which
   * is read once for both. */
  firstStep(copied: Promise<void>): void {
    // read from the base while it is copied, unless the copies are then retargeted (absolute names)
    const inputs = hasAbsoluteLinks(this.run.c)
      ? copied.then(() => this.inputsFor(0))
      : Promise.all([this.inputsFor(0), copied]).then(([read]) => read);
    this.nextInputs = this.run.background(inputs);
  }

  /** The inputs of step `index`: read ahead when they could be, else now. */
  take(index: number): Promise<StepInputs> {
    const inputs = this.nextInputs ?? this.inputsFor(index);
    this.nextInputs = null;
    return inputs;
  }

  /** Both sides refused step `index`: the next step starts from the files as hashed after it. */
  afterRefusal(index: number, hashes: [reference: string, subject: string]): void {
    if (index + 1 < this.run.c.steps.length) this.nextInputs = this.run.background(this.inputsFor(index + 1, hashes));
  }

  /** Both sides accepted step `index`: while qemu-img checks and compares, the reader threads read
   * the compare plan, then both structures, then the next step's inputs (nothing writes the
   * images until that step starts). */
  afterAcceptance(index: number): {
    comparePlan: Promise<ComparePlan> | undefined;
    /** null for a raw image, which has no structure the harness reads. */
    structures: Promise<ResultStructures> | null;
  } {
    const comparePlan = this.comparePlan();
    const { reference, subject } = this.run.layout;
    const { format } = this.run.c.image;
    const path = (side: SideFiles) => this.run.path(side);
    const structures: Promise<ResultStructures> | null = this.qcow2
      ? Promise.all([reader.structuralCheck(path(subject)), reader.structuralCheck(path(reference))]).then(
          ([s, r]) => ({ kind: 'qcow2', subject: s, reference: r }),
        )
      : isConverted(format)
        ? Promise.all([
            reader.readFormatStructure(path(subject), format),
            reader.readFormatStructure(path(reference), format),
          ]).then(([s, r]) => ({ kind: 'format', subject: s, reference: r }))
        : null;
    if (structures) this.run.background(structures);
    if (index + 1 < this.run.c.steps.length) this.nextInputs = this.run.background(this.inputsFor(index + 1));
    return { comparePlan, structures };
  }

  /** compareContent's reading of both results; none with a data file or an image that is not
   * qcow2, which get a plain compare. */
  comparePlan(): Promise<ComparePlan> | undefined {
    const { layout, dir } = this.run;
    if (layout.dataFile || !this.qcow2) return undefined;
    return this.run.background(
      reader.planComparison(this.run.path(layout.reference), this.run.path(layout.subject), { cwd: dir }),
    );
  }

  /** A side's files hashed after a step it refused: not read again when their stamp proves them
   * unchanged since `before` (taken with the hash, right before the step). */
  async hashAfterRefusal(side: SideFiles, before: { hash: string; stamp: Stamp }): Promise<string> {
    return provenUnchanged(before.stamp, await stampOf(this.run.files(side))) ? before.hash : this.hash(side);
  }

  private hash(side: SideFiles): Promise<string> {
    return reader.contentHash(...this.run.files(side));
  }

  private async inputsFor(index: number, known?: [string, string]): Promise<StepInputs> {
    const { base, reference, subject } = this.run.layout;
    const before = index === 0 ? base : reference;
    // qemu's rules applied to the size qemu's side has now: a shrink it should accept is probed
    const step = this.run.c.steps[index]!;
    const size = this.qcow2 && isResize(step) ? await this.sizeOf(before) : null;
    const plan = size === null || !isResize(step) ? null : planStep(step, size, this.run.c.image.format);
    const discards =
      plan?.kind === 'shrink' && plan.accepted
        ? reader.hasHostClustersFrom(this.run.path(before), plan.target!)
        : undefined;
    // both sides are still the base image before the first step, unless it moved their files
    // or the copies were retargeted to their chains' absolute names
    const notTheBase = (operationOf(step).fileMoves?.(step).length ?? 0) > 0 || hasAbsoluteLinks(this.run.c);
    const baseHash = index === 0 && !known && !notTheBase ? this.hash(base) : null;
    const hashes = known ?? (baseHash ? [baseHash, baseHash] : [this.hash(reference), this.hash(subject)]);
    const [referenceHash, subjectHash, discardsAllocated] = await Promise.all([...hashes, discards]);
    return {
      referenceHash: referenceHash as string,
      subjectHash: subjectHash as string,
      discardsAllocated: discardsAllocated as boolean | undefined,
    };
  }
}

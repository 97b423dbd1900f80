import type { ImageFormat, ImageSpec, OperationName, OutputMode, Step } from '../model/case.ts';
import type { Resizer } from '../model/commands.ts';
import type { ImageState, OperationPlan } from '../model/state.ts';
import type { OracleName } from '../oracles/table.ts';

// What an operation is to the harness: one row of the operation table (table.ts), beside the oracle
// table. Execution, triage, reports, coverage and the command line take their lists from the rows;
// each operation's row lives in its own folder (operations/<name>/index.ts) with its step, its
// generator and its judging.

/** qemu-img's side of a step: commands run one after the other in the reference's directory up to
 * the first that fails; `main` is the one whose outcome and words are the reference's; `scratch`, a
 * file in between that the caller removes. */
export interface ReferenceCommands {
  commands: string[][];
  main: number;
  scratch: string | null;
}

export interface Operation<S extends Step = Step> {
  name: OperationName;
  /** What it does, for the README, --help and reports. */
  what: string;
  /** The image formats it is generated on and qemu-img performs it on. */
  formats: readonly ImageFormat[];
  /** The kinds its steps have (qemu's rules, `plan`): registry `stepKind` values, coverage rows. */
  kinds: readonly string[];
  /** qemu's rules: what qemu-img makes of the step from a state (predicted in generation, read
   * from the image in a run). */
  plan: (step: S, state: ImageState, format: ImageFormat) => OperationPlan;
  /** qemu-img's commands for the step on the reference's image (`plan`: from the state read before). */
  reference: (step: S, file: string, image: ImageSpec, plan: Pick<OperationPlan, 'kind'>) => ReferenceCommands;
  /** The subject's command line in its dialect (instar's, or qemu-img's in a control run). */
  subject: (resizer: Resizer, step: S, file: string, image: ImageSpec) => string[];
  /** What the subject is asked to print: its words, JSON, or nothing (qemu-img has no JSON, so a
   * control run's subject prints its words where instar would print JSON). */
  output: (resizer: Resizer, step: S) => OutputMode;
  /** The oracles that judge its steps (beyond those every step gets: outcome, unchanged on
   * refusal, check, structure, info, content, output, in place). */
  oracles: readonly OracleName[];
  /** The exit codes of a step that did what it was asked (the default: 0 alone); any other is a
   * refusal. A repair exits 2 or 3 when damage remains after it. */
  acceptedExits?: readonly number[];
  /** The step's input is damaged on purpose (a repair's): what qemu's result keeps of the damage is
   * what the subject is held to, not qemu's own behaviour (no reference-side check or structure
   * findings). */
  damagedInput?: boolean;
  /** A step only the subject accepted has its result checked alone (`qemu-img check`): qemu-img
   * cannot do the operation on some image the subject takes (a vmdk rebase), so there is no result
   * of its to compare with. */
  checkedAlone?: boolean;
  /** How a report and repro.sh name a step: `resize to 8M`, `amend -o compat=0.10`. */
  describe: (step: S) => string;
  /** The registry facts of a step beyond the image's: the -o keys of an amend, say. */
  facts: (step: S) => { amendKeys: string[] };
  /** Guest writes the harness makes into both sides' images right before the step (qemu-io
   * commands), those inside a disk of `size` bytes (the size read before the step: a step before
   * may have ended elsewhere than the generator predicted): what a bitmap step's bitmaps then hold. */
  guestWrites?: (step: S, size: number) => string[];
  /** The chain member the step writes into, by its path relative to the image's directory (a
   * commit's base), from the state before it; null where it writes none. The chain oracle tells
   * damage to it from damage to a member the step had no business writing. */
  writesInto?: (step: S, state: ImageState) => string | null;
  /** Files the harness moves beside them (`movedTo`) or removes (null) in both sides' directories
   * right before the step, after its guest writes: a rebase -u's moved or missing old backing. */
  fileMoves?: (step: S) => { file: string; movedTo: string | null }[];
  /** A snapshot step keeps the guest content it names (create) or brings it back (apply): the
   * harness copies the image at creation and compares each side with the copy after an apply. */
  snapshotContent?: (step: S) => { keeps: string } | { restores: string } | null;
}

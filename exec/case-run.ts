import { join } from 'node:path';
import type { Case } from '../model/case.ts';
import { openImage, type CommandRecord, type Resizer } from '../model/commands.ts';
import { CaseAborted } from '../model/errors.ts';
import { caseLayout, CWD, imagePath, sideFilesOf, type Layout, type SideFiles } from '../model/layout.ts';
import { runCommand } from './process.ts';
import { diskFull } from './work-dir.ts';

export interface ExecuteOptions {
  subject: Resizer;
  timeoutMs: number;
  /** Parent of the case's temporary directory. */
  workdir: string;
  /** Aborting kills the running processes and rejects with CaseAborted. */
  signal?: AbortSignal;
}

const NO_SPACE = /No space left on device/i;

/** One case in its work directory: runs its commands one at a time (recording each), knows where
 * each side's files are, and tracks the in-process work that goes on while commands run. */
export class CaseRun {
  readonly layout: Layout;
  /** Every command run, in order, with paths relative to the work directory. */
  readonly commands: CommandRecord[] = [];
  private readonly inFlight: Promise<unknown>[] = [];

  constructor(
    readonly c: Case,
    readonly dir: string,
    readonly options: ExecuteOptions,
  ) {
    this.layout = caseLayout(c);
  }

  /** Runs a command in a side's directory (the work directory itself without a data file). */
  async run(program: string, args: string[], where: SideFiles | null = null): Promise<CommandRecord> {
    return this.record(await this.runUnrecorded(program, args, where));
  }

  /** Runs a command as `run` does but leaves it out of `commands`: for a build attempt that
   * failed for a passing reason and is run again, so that a report lists what the case needs and
   * the same case gives the same report however busy the machine was. */
  async runUnrecorded(program: string, args: string[], where: SideFiles | null = null): Promise<CommandRecord> {
    const cwd = where ? join(this.dir, where.dir) : this.dir;
    // a build command naming a file by its absolute path names it in the directory it runs in
    const named = args.map((a) => a.replaceAll(CWD, cwd));
    const record = await runCommand(program, named, {
      timeoutMs: this.options.timeoutMs,
      cwd,
      signal: this.options.signal,
    });
    if (this.options.signal?.aborted) throw new CaseAborted();
    // both sides write into the work directory: a full disk there is no divergence
    if (NO_SPACE.test(record.stderr))
      throw diskFull(this.options.workdir, `${program}: ${record.stderr.trim().split('\n')[0]}`);
    return record;
  }

  /** Adds a command that ran to `commands`. */
  record(record: CommandRecord): CommandRecord {
    this.commands.push(record);
    return record;
  }

  /** `qemu-img check` of a side's image (with its key when it is encrypted). */
  check(side: SideFiles): Promise<CommandRecord> {
    const { options, image } = openImage(side.image, this.c.image, this.c.image.encrypted);
    return this.run('qemu-img', ['check', ...options, '--output=json', image], side);
  }

  /** A side's image, as an absolute path. */
  path(side: SideFiles): string {
    return join(this.dir, imagePath(side));
  }

  /** What a refused step must leave as it was: the image and its data file, absolute. */
  files(side: SideFiles): string[] {
    return sideFilesOf(this.layout, side).map((f) => join(this.dir, f));
  }

  /** In-process work that runs while commands do (copies, reading images): awaited where its
   * result is needed, and always before the case directory is removed (see settled). */
  background<T>(work: Promise<T>): Promise<T> {
    this.inFlight.push(work.catch(() => undefined));
    return work;
  }

  /** Resolves when all background work has ended, however it ended. */
  settled(): Promise<unknown> {
    return Promise.all(this.inFlight);
  }
}

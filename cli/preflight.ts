import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, dirname, join, resolve } from 'node:path';
import { killAllChildren } from '../exec/process.ts';
import { toolVersion } from '../exec/tool-version.ts';
import { qemuImg, type Resizer } from '../model/commands.ts';
import { usageFail } from './args.ts';

// What a command line checks before any work is done, each failure a usage error that says what
// to do: the tools (cli/paths.ts checks the directories); and how it stops on a signal.

/** Finds an executable: a path as given, or a bare name on PATH. */
export async function findExecutable(program: string): Promise<string | null> {
  const candidates = program.includes('/')
    ? [resolve(program)]
    : (process.env.PATH ?? '').split(delimiter).map((d) => join(d, program));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  return null;
}

/** --qemu-img PATH: that qemu-img and the qemu-io beside it are the reference, for the harness
 * and every process it starts (their directory goes first on PATH). */
export async function useQemuFrom(qemuImgPath: string): Promise<void> {
  const found = await findExecutable(qemuImgPath.includes('/') ? qemuImgPath : `./${qemuImgPath}`);
  if (!found) usageFail(`--qemu-img ${qemuImgPath} is not an executable file: pass the path of a qemu-img binary`);
  const dir = dirname(found!);
  if (!(await findExecutable(join(dir, 'qemu-io'))))
    usageFail(`--qemu-img ${qemuImgPath}: no qemu-io beside it in ${dir}; the reference needs both from one build`);
  process.env.PATH = `${dir}${delimiter}${process.env.PATH ?? ''}`;
}

const MIN_QEMU = [7, 2];

/** qemu-img and qemu-io on PATH, and qemu-img's version line (at least MIN_QEMU). */
export async function checkQemu(timeoutMs: number): Promise<string> {
  for (const tool of ['qemu-img', 'qemu-io']) {
    if (!(await findExecutable(tool)))
      usageFail(`${tool} not found on PATH: install Debian's qemu-utils (apt-get install qemu-utils)`);
  }
  const version = await toolVersion('qemu-img', timeoutMs);
  const [major = 0, minor = 0] = (/version (\d+)\.(\d+)/.exec(version) ?? []).slice(1).map(Number);
  if (major < MIN_QEMU[0]! || (major === MIN_QEMU[0] && minor < MIN_QEMU[1]!)) {
    usageFail(
      `qemu-img ${major}.${minor} is older than ${MIN_QEMU.join('.')}, ` +
        'the oldest this harness is verified against: upgrade qemu-utils',
    );
  }
  return version;
}

/** The subject: qemu-img in a control run (another qemu-img with --control-qemu-img), else the
 * instar binary given. */
export async function subjectFrom(args: {
  control: boolean;
  instar: string;
  'control-qemu-img'?: string;
}): Promise<Resizer> {
  if (args.control) return qemuImg;
  const other = args['control-qemu-img'];
  if (other !== undefined) {
    const program = await findExecutable(other.includes('/') ? other : `./${other}`);
    if (!program)
      usageFail(`--control-qemu-img ${other} is not an executable file: pass the path of a qemu-img binary`);
    return { dialect: 'qemu-img', program: program! };
  }
  const found = await findExecutable(args.instar);
  if (!found)
    usageFail(
      `instar not found or not executable: ${args.instar}. ` +
        'Pass the binary with --instar PATH, or run --control for a self-test',
    );
  return { dialect: 'instar', program: found! };
}

/** The subject's version line, for reports and the summary. */
export const subjectVersion = (subject: Resizer, qemuVersion: string, timeoutMs: number) =>
  subject.program === qemuImg.program ? Promise.resolve(qemuVersion) : toolVersion(subject.program, timeoutMs);

/** SIGINT or SIGTERM once: stop cleanly and write the summary. Twice: kill everything now. */
export function stopOnSignals(): AbortSignal {
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop.signal.aborted) {
      killAllChildren();
      process.exit(130);
    }
    console.error(`\n${signal}: stopping; the summary of what ran is written next (${signal} again quits at once)`);
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return stop.signal;
}

import { execa } from 'execa';

// Every child process of the harness goes through runCommand: argument arrays (never a shell
// string), a timeout that kills the whole process tree, and a count for the run summary.

export interface CommandRecord {
  argv: string[];
  /** null when the process was killed by a signal or never started. */
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  /** Set when the program could not be started at all (missing, not executable). */
  spawnError: string | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface RunOptions {
  timeoutMs: number;
  cwd?: string;
  env?: Record<string, string>;
}

/** Stored output is bounded: a misbehaving tool may print megabytes. */
const MAX_STORED_OUTPUT = 64 * 1024;
const clip = (s: string) => (s.length > MAX_STORED_OUTPUT ? `${s.slice(0, MAX_STORED_OUTPUT)}\n[... ${s.length - MAX_STORED_OUTPUT} more characters cut]` : s);

let spawned = 0;
/** How many child processes this harness has started so far. */
export const processesSpawned = () => spawned;

/** Process groups still running, killed on exit so that no child outlives the harness. */
const liveGroups = new Set<number>();
const killGroup = (pid: number) => {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is already gone
  }
};
process.once('exit', () => liveGroups.forEach(killGroup));

export async function runCommand(file: string, args: string[], options: RunOptions): Promise<CommandRecord> {
  const started = performance.now();
  spawned++;
  // detached: the child leads its own process group, so a timeout can kill its descendants too
  const child = execa(file, args, {
    reject: false,
    detached: true,
    stdin: 'ignore',
    cwd: options.cwd,
    env: options.env,
    maxBuffer: 16 * 1024 * 1024,
    stripFinalNewline: false,
  });
  const pid = child.pid;
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  if (pid !== undefined) {
    liveGroups.add(pid);
    timer = setTimeout(() => {
      timedOut = true;
      killGroup(pid);
    }, options.timeoutMs);
  }
  const result = await child;
  clearTimeout(timer);
  if (pid !== undefined) {
    // grandchildren left behind by a child that exited are killed too
    killGroup(pid);
    liveGroups.delete(pid);
  }
  const spawnError = pid === undefined || (result.failed && result.exitCode === undefined && !result.signal) ? (result.message ?? 'could not start') : null;
  return {
    argv: [file, ...args],
    exitCode: result.exitCode ?? null,
    signal: result.signal ?? null,
    timedOut,
    spawnError,
    stdout: clip(String(result.stdout ?? '')),
    stderr: clip(String(result.stderr ?? '')),
    durationMs: Math.round(performance.now() - started),
  };
}

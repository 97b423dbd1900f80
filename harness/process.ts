import type { Readable } from 'node:stream';
import { execa } from 'execa';

// Every child process of the harness goes through runCommand: argument arrays (never a shell
// string), a timeout that kills the whole process tree, output capture with a bound, an abort
// signal for interrupted runs, and a count for the run summary.

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
  /** Aborting kills the process tree; the record then says SIGKILL. */
  signal?: AbortSignal;
}

/** Stored output is bounded: a misbehaving tool may print megabytes, and reports keep it. */
export const MAX_STORED_OUTPUT = 64 * 1024;

/** Keeps the first MAX_STORED_OUTPUT bytes of a stream and drains the rest, so the child never
 * blocks on a full pipe and the harness never holds more than the bound. */
function capture(stream: Readable | null): () => string {
  const chunks: Buffer[] = [];
  let kept = 0;
  let dropped = 0;
  stream?.on('data', (chunk: Buffer) => {
    const room = MAX_STORED_OUTPUT - kept;
    if (room > 0) {
      chunks.push(chunk.subarray(0, room));
      kept += Math.min(room, chunk.length);
    }
    dropped += Math.max(0, chunk.length - room);
  });
  return () => Buffer.concat(chunks).toString('utf8') + (dropped > 0 ? `\n[... ${dropped} more bytes not kept]` : '');
}

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
/** Kills every process tree the harness still has running. */
export const killAllChildren = () => liveGroups.forEach(killGroup);
process.once('exit', killAllChildren);

export async function runCommand(file: string, args: string[], options: RunOptions): Promise<CommandRecord> {
  const started = performance.now();
  spawned++;
  // detached: the child leads its own process group, so a timeout can kill its descendants too
  const child = execa(file, args, { reject: false, detached: true, stdin: 'ignore', cwd: options.cwd, env: options.env, buffer: false });
  const stdout = capture(child.stdout);
  const stderr = capture(child.stderr);
  const pid = child.pid;
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const abort = () => pid !== undefined && killGroup(pid);
  if (pid !== undefined) {
    liveGroups.add(pid);
    timer = setTimeout(() => {
      timedOut = true;
      killGroup(pid);
    }, options.timeoutMs);
    options.signal?.addEventListener('abort', abort, { once: true });
    if (options.signal?.aborted) abort();
  }
  const result = await child;
  clearTimeout(timer);
  options.signal?.removeEventListener('abort', abort);
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
    stdout: stdout(),
    stderr: stderr(),
    durationMs: Math.round(performance.now() - started),
  };
}

import type { Readable } from 'node:stream';
import { execa } from 'execa';
import type { CommandRecord, CommandRequest } from '../model/commands.ts';

// Starts and supervises child processes in this process: argument arrays (never a shell string), a
// timeout that kills the whole process tree, output capture with a bound. The harness itself does
// not call this: its runCommand (process.ts) hands every command to the spawner process
// (spawner.ts), which does.

/** Stored output is bounded: a misbehaving tool may print megabytes, and reports keep it. */
export const MAX_STORED_OUTPUT = 64 * 1024;

/** Of output past the bound, its last bytes are kept too: a tool's verdict is often its last line
 * (`qemu-img check -r` says why it failed after thousands of ERROR lines about single clusters). */
export const KEPT_TAIL = 4 * 1024;

/** Keeps the first MAX_STORED_OUTPUT bytes of a stream and its last KEPT_TAIL, and drains the
 * rest, so the child never blocks on a full pipe and the harness never holds more than the bound. */
function capture(stream: Readable | null): () => string {
  const chunks: Buffer[] = [];
  let kept = 0;
  let past = Buffer.alloc(0);
  let beyond = 0;
  stream?.on('data', (chunk: Buffer) => {
    const room = Math.max(0, MAX_STORED_OUTPUT - kept);
    if (room > 0) {
      chunks.push(chunk.subarray(0, room));
      kept += Math.min(room, chunk.length);
    }
    if (chunk.length <= room) return;
    beyond += chunk.length - room;
    past = Buffer.concat([past, chunk.subarray(room)]);
    if (past.length > KEPT_TAIL) past = past.subarray(past.length - KEPT_TAIL);
  });
  return () => {
    const head = Buffer.concat(chunks).toString('utf8');
    if (beyond === 0) return head;
    if (beyond <= KEPT_TAIL) return head + past.toString('utf8');
    return `${head}\n[... ${beyond - past.length} more bytes not kept]\n${past.toString('utf8')}`;
  };
}

/** Process groups still running, killed on exit so that no child outlives its parent. */
const liveGroups = new Set<number>();
const killGroup = (pid: number) => {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is already gone
  }
};
/** Kills every process tree still running. */
export const killAllGroups = () => liveGroups.forEach(killGroup);

/** Runs one command to its end; `kill` (set by the caller) stops it early, like a timeout. */
export async function spawnLocal(
  request: CommandRequest,
  onStart?: (kill: () => void) => void,
): Promise<CommandRecord> {
  const started = performance.now();
  const { file, args } = request;
  // detached: the child leads its own process group, so a timeout can kill its descendants too
  const child = execa(file, args, {
    reject: false,
    detached: true,
    stdin: 'ignore',
    cwd: request.cwd,
    env: request.env,
    buffer: false,
  });
  const stdout = capture(child.stdout);
  const stderr = capture(child.stderr);
  const pid = child.pid;
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  if (pid !== undefined) {
    liveGroups.add(pid);
    timer = setTimeout(() => {
      timedOut = true;
      killGroup(pid);
    }, request.timeoutMs);
    onStart?.(() => killGroup(pid));
  }
  const result = await child;
  clearTimeout(timer);
  if (pid !== undefined) {
    // grandchildren left behind by a child that exited are killed too
    killGroup(pid);
    liveGroups.delete(pid);
  }
  const spawnError =
    pid === undefined || (result.failed && result.exitCode === undefined && !result.signal)
      ? (result.message ?? 'could not start')
      : null;
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

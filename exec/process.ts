import { fileURLToPath } from 'node:url';
import { execaNode, type ResultPromise } from 'execa';
import type { CommandRecord, CommandRequest } from '../model/commands.ts';
import type { SpawnerMessage, SpawnerReply } from './spawner.ts';
import { PendingReplies } from './pending-replies.ts';

// Every child process of the harness goes through runCommand: argument arrays (never a shell
// string), a timeout that kills the whole process tree, output capture with a bound, an abort
// signal for interrupted runs, and a count for the run summary. The commands are started by the
// spawner process (spawner.ts), which keeps fork costs off the harness (see there).

export interface RunOptions {
  timeoutMs: number;
  cwd?: string;
  env?: Record<string, string>;
  /** Aborting kills the process tree; the record then says SIGKILL. */
  signal?: AbortSignal;
}

let spawned = 0;
/** How many child processes this harness has started so far. */
export const processesSpawned = () => spawned;

// Run as TypeScript through tsx (npm run fuzz), or from an esbuild bundle (the tests' runs of the
// CLI, test/helpers.ts), where the modules started in other processes and threads (the spawner,
// the reader threads) are bundles beside it and need no tsx.
export const BUNDLED = import.meta.url.endsWith('.mjs');
/** exec/NAME.ts, or in a bundle NAME.mjs beside it. */
export const companionModule = (name: string) => new URL(BUNDLED ? `./${name}.mjs` : `./${name}.ts`, import.meta.url);
const SPAWNER = fileURLToPath(companionModule('spawner'));

// tsx by its own path: the harness may run from any directory
const SPAWNER_OPTIONS = {
  ipc: true,
  serialization: 'json',
  nodeOptions: BUNDLED ? [] : ['--import', import.meta.resolve('tsx')],
  detached: true,
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  reject: false,
} as const;

interface Spawner {
  child: ResultPromise<typeof SPAWNER_OPTIONS>;
  pending: PendingReplies<CommandRecord>;
}
let current: Spawner | null = null;

/** The spawner process, started on first use and again if it died. Its channel holds the event
 * loop open only while commands are running, so a process that is done can exit. */
function spawner(): Spawner {
  if (current) return current;
  // detached: Ctrl-C reaches the harness, which stops its cases; the spawner follows the harness
  const child = execaNode(SPAWNER, [], SPAWNER_OPTIONS);
  const s: Spawner = { child, pending: new PendingReplies(() => child.channel?.unref()) };
  child.on('message', (m: SpawnerReply) =>
    s.pending.settle(
      m.id,
      'record' in m ? { value: m.record } : { error: new Error(`the spawner could not run the command: ${m.error}`) },
    ),
  );
  const gone = () => {
    if (current === s) current = null;
    s.pending.failAll(new Error('the spawner process (exec/spawner.ts) died; its commands were killed'));
  };
  child.on('exit', gone);
  void child.catch(gone);
  child.unref();
  child.channel?.unref();
  current = s;
  return s;
}

/** Stops the spawner, which kills every process tree it still has running. */
export const killAllChildren = () => current?.child.kill('SIGTERM');
process.once('exit', killAllChildren);

export async function runCommand(file: string, args: string[], options: RunOptions): Promise<CommandRecord> {
  spawned++;
  const s = spawner();
  const { id, reply: done } = s.pending.open();
  const request: CommandRequest = { file, args, timeoutMs: options.timeoutMs, cwd: options.cwd, env: options.env };
  const send = (m: SpawnerMessage) => s.child.connected && s.child.send(m);
  const abort = () => send({ type: 'kill', id });
  s.child.channel?.ref();
  send({ type: 'run', id, request });
  options.signal?.addEventListener('abort', abort, { once: true });
  if (options.signal?.aborted) abort();
  try {
    return await done;
  } finally {
    options.signal?.removeEventListener('abort', abort);
  }
}

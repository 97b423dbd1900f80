import { Worker } from 'node:worker_threads';
import { PendingReplies } from './pending-replies.ts';
import { BUNDLED, companionModule } from './process.ts';
import type { ReaderReply, ReaderRequest, ReaderTasks } from './reader-worker.ts';

// The harness reads images in-process while commands run: content hashes, the structure oracle,
// compare plans. That reading runs on reader threads (reader-worker.ts), not on the main thread:
// there it held up every reply of the spawner and the start of the next command behind it, and
// all of it interleaved, so the answer needed first came last. Each thread takes one task at a
// time in the order asked; a case asks in the order it needs the answers.

// A worker's --import does not reach its main module on node 20, so the thread registers tsx
// (by its own path: the harness may run from any directory) and then imports the TypeScript; run
// from an esbuild bundle (see process.ts), it imports the bundle beside it.
const WORKER_MODULE = JSON.stringify(companionModule('reader-worker').href);
const TSX_API = BUNDLED ? null : JSON.stringify(import.meta.resolve('tsx/esm/api'));
const BOOT = BUNDLED
  ? `import(${WORKER_MODULE})`
  : `import(${TSX_API}).then(({ register }) => { register(); return import(${WORKER_MODULE}); })`;

interface ReaderThread {
  worker: Worker;
  pending: PendingReplies<unknown>;
}

const pool: ReaderThread[] = [];
let size = 1;

/** Reader threads for `jobs` jobs. A thread is busy about an eighth of a job's time and costs
 * ~32 MiB; at --jobs 2 on 2 cores one thread was no slower than two (100 control cases, two runs
 * each: 20.3 and 19.7 s against 21.2 and 21.7 s). */
export const readerThreadsFor = (jobs: number) => Math.ceil(jobs / 4);

/** Uses up to `n` reader threads and starts them now: a thread takes ~150 ms to load, which the
 * first case would otherwise wait for. */
export function startReaders(n: number): void {
  size = Math.max(1, Math.floor(n));
  while (pool.length < size) start();
}

function start(): ReaderThread {
  const worker = new Worker(BOOT, { eval: true });
  const thread: ReaderThread = { worker, pending: new PendingReplies(() => worker.unref()) };
  worker.on('message', (m: ReaderReply) =>
    thread.pending.settle(
      m.id,
      'error' in m
        ? { error: Object.assign(new Error(m.error.message), m.error.code ? { code: m.error.code } : {}) }
        : { value: m.value },
    ),
  );
  const gone = (why: string) => {
    const at = pool.indexOf(thread);
    if (at >= 0) pool.splice(at, 1);
    thread.pending.failAll(new Error(`a reader thread (exec/reader-worker.ts) ${why}; its reads were lost`));
  };
  worker.on('error', (err) => gone(`failed: ${err.message}`));
  worker.on('exit', (code) => gone(`exited with code ${code}`));
  worker.unref();
  pool.push(thread);
  return thread;
}

/** The least busy thread, starting another while there is room and every one is busy. */
function pick(): ReaderThread {
  const idle = pool.reduce<ReaderThread | undefined>(
    (best, t) => (!best || t.pending.size < best.pending.size ? t : best),
    undefined,
  );
  return idle && (idle.pending.size === 0 || pool.length >= size) ? idle : start();
}

function call<K extends keyof ReaderTasks>(task: K, ...args: Parameters<ReaderTasks[K]>): ReturnType<ReaderTasks[K]> {
  const thread = pick();
  const { id, reply } = thread.pending.open();
  thread.worker.ref();
  thread.worker.postMessage({ id, task, args } satisfies ReaderRequest);
  return reply as ReturnType<ReaderTasks[K]>;
}

/** The reading tasks, each run on a reader thread (same arguments and results as the functions). */
export const reader = {
  contentHash: (...files: string[]) => call('contentHash', ...files),
  structuralCheck: (path: string) => call('structuralCheck', path),
  readFormatStructure: (...args: Parameters<ReaderTasks['readFormatStructure']>) =>
    call('readFormatStructure', ...args),
  planComparison: (...args: Parameters<ReaderTasks['planComparison']>) => call('planComparison', ...args),
  hasHostClustersFrom: (path: string, guestOffset: number) => call('hasHostClustersFrom', path, guestOffset),
  guestAllocation: (path: string, from: number, to: number) => call('guestAllocation', path, from, to),
};

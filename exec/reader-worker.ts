import { parentPort } from 'node:worker_threads';
import { planComparison } from './content-compare.ts';
import { contentHash } from './files.ts';
import { guestAllocation, hasHostClustersFrom } from '../qcow2/reader.ts';
import { structuralCheck } from '../qcow2/structure.ts';
import { readFormatStructure } from '../formats/structure.ts';

// A reader thread (see readers.ts): runs the harness's in-process reading of images, one task at
// a time in the order they came, since the harness asks in the order it needs the answers.

export const readerTasks = {
  contentHash,
  structuralCheck,
  readFormatStructure,
  planComparison,
  hasHostClustersFrom,
  guestAllocation,
};
export type ReaderTasks = typeof readerTasks;
export type ReaderRequest = { id: number; task: keyof ReaderTasks; args: unknown[] };
export type ReaderReply = { id: number; value: unknown } | { id: number; error: { message: string; code?: string } };

let queue = Promise.resolve();
parentPort?.on('message', ({ id, task, args }: ReaderRequest) => {
  queue = queue.then(async () => {
    let reply: ReaderReply;
    try {
      reply = { id, value: await (readerTasks[task] as (...a: unknown[]) => Promise<unknown>)(...args) };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      reply = { id, error: { message: String(e?.message ?? e), code: e?.code } };
    }
    parentPort!.postMessage(reply);
  });
});

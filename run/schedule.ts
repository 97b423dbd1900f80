import { CaseAborted } from '../model/errors.ts';

// Runs a run's positions (corpus cases, then case indices) on `jobs` workers and commits their
// results strictly in position order, so that reports, hit counts and the summary do not depend on
// --jobs. It stops on request (fail-fast, an interrupt, a fatal error), and at a --duration
// deadline it starts no further case and gives running ones one grace period to finish.

export type StopReason = 'fail-fast' | 'interrupted' | 'duration';

export interface Scheduler {
  /** Aborted when the run stops: running cases are killed (their commands get this signal). */
  readonly signal: AbortSignal;
  /** Stops the run now; later results are not committed. */
  halt(reason: StopReason): void;
}

export interface ScheduleOptions<R> {
  /** How many positions there are (Infinity: until the deadline or a stop). */
  positions: number;
  jobs: number;
  /** Runs one position. 'skip' commits nothing for it; CaseAborted discards it; any other error
   * is fatal and stops the run. */
  run: (position: number, s: Scheduler) => Promise<R | 'skip'>;
  /** Called in position order with each result. An error other than CaseAborted is fatal. */
  commit: (position: number, result: R, s: Scheduler) => Promise<void>;
  /** Called after each committed position (progress lines). */
  committed?: (count: number) => void;
  /** Aborted by SIGINT or SIGTERM. */
  stop?: AbortSignal;
  /** No position starts after this many ms; running ones may take `graceMs` more, then are
   * stopped like an interrupted run's. */
  durationMs: number | null;
  graceMs: number;
}

export interface ScheduleResult {
  /** Positions committed (0 to n-1 in order). */
  committed: number;
  stoppedEarly: StopReason | null;
  /** The first fatal error, or null. */
  fatal: unknown;
  /** Whether the deadline came before the last position started. */
  draining: boolean;
}

export async function schedule<R>(o: ScheduleOptions<R>): Promise<ScheduleResult> {
  const halt = new AbortController();
  let stoppedEarly: StopReason | null = null;
  let fatal: unknown = null;
  let accepting = true;
  const scheduler: Scheduler = {
    signal: halt.signal,
    halt(reason) {
      stoppedEarly ??= reason;
      // a fail-fast stop commits nothing after the finding: later cases count as never run
      if (reason === 'fail-fast') accepting = false;
      halt.abort();
    },
  };
  const fail = (err: unknown) => {
    if (err instanceof CaseAborted) return;
    fatal ??= err;
    halt.abort();
  };
  const onStop = () => scheduler.halt('interrupted');
  o.stop?.addEventListener('abort', onStop, { once: true });

  let draining = false;
  let graceTimer: NodeJS.Timeout | undefined;
  const deadlineTimer =
    o.durationMs === null
      ? undefined
      : setTimeout(() => {
          draining = true;
          graceTimer = setTimeout(() => scheduler.halt('duration'), o.graceMs);
        }, o.durationMs);

  // results arrive in any order; they are committed strictly in position order
  const done = new Map<number, R | 'skip'>();
  let committed = 0;
  let commits = Promise.resolve();
  const commitReady = async () => {
    while (accepting && done.has(committed)) {
      const result = done.get(committed)!;
      done.delete(committed);
      if (result !== 'skip') await o.commit(committed, result, scheduler);
      committed++;
      if (!halt.signal.aborted) o.committed?.(committed);
    }
  };

  let next = 0;
  const worker = async () => {
    while (!halt.signal.aborted && !draining && next < o.positions) {
      const position = next++;
      try {
        done.set(position, await o.run(position, scheduler));
      } catch (err) {
        fail(err);
        return;
      }
      commits = commits.then(commitReady).catch(fail);
      await commits;
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.jobs, o.positions) }, worker));
  await commits;
  clearTimeout(deadlineTimer);
  clearTimeout(graceTimer);
  o.stop?.removeEventListener('abort', onStop);
  return { committed, stoppedEarly, fatal, draining };
}

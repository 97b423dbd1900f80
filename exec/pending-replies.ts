// Requests sent over a channel that holds the process open (the spawner's IPC channel, a reader
// thread's port), and the replies awaited for them by id. The channel is let go (`release`) when
// no reply is awaited, so a harness that is done can exit; a channel that dies fails them all.

export class PendingReplies<T> {
  private readonly waiting = new Map<number, { resolve: (value: T) => void; reject: (error: Error) => void }>();
  private nextId = 0;

  constructor(private readonly release: () => void) {}

  get size(): number {
    return this.waiting.size;
  }

  /** A new request id and the promise of its reply; the caller holds the channel and sends. */
  open(): { id: number; reply: Promise<T> } {
    const id = this.nextId++;
    const reply = new Promise<T>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    return { id, reply };
  }

  /** Settles the request `id` (an unknown id is ignored: its caller is gone). */
  settle(id: number, outcome: { value: T } | { error: Error }): void {
    const waiting = this.waiting.get(id);
    if (!waiting) return;
    this.waiting.delete(id);
    if (this.waiting.size === 0) this.release();
    if ('error' in outcome) waiting.reject(outcome.error);
    else waiting.resolve(outcome.value);
  }

  /** Fails every request still waiting: the channel is gone. */
  failAll(error: Error): void {
    for (const waiting of this.waiting.values()) waiting.reject(error);
    this.waiting.clear();
  }
}

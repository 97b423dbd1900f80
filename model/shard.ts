// Sharding: shard K of N (1-based) runs the case indices i with i % N == K - 1, so N machines with
// the same seed and --iterations run exactly the cases one machine would, each a similar mix, and
// every report keeps the real case index (seed + iteration replays it anywhere).

export interface Shard {
  /** 1-based. */
  index: number;
  count: number;
}

/** Parses "K/N"; throws an Error whose message names the problem. */
export function parseShard(text: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new Error(`--shard must be K/N (shard K of N, 1-based), e.g. 2/4, not ${JSON.stringify(text)}`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (!Number.isSafeInteger(count) || count < 1) throw new Error(`--shard ${text}: N must be at least 1`);
  if (!Number.isSafeInteger(index) || index < 1 || index > count)
    throw new Error(`--shard ${text}: K must be between 1 and N (${count})`);
  return { index, count };
}

/** The case index at position `p` of a shard's sequence. */
export const caseIndexAt = (shard: Shard | null, p: number) => (shard ? shard.index - 1 + p * shard.count : p);

/** How many of the case indices below `iterations` a shard runs (Infinity stays Infinity). */
export function casesInShard(shard: Shard | null, iterations: number): number {
  if (!shard) return iterations;
  if (!Number.isFinite(iterations)) return iterations;
  return Math.max(0, Math.ceil((iterations - (shard.index - 1)) / shard.count));
}

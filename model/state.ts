import { chainOf, type Case, type RefcountBits } from './case.ts';
import { chainLinks } from './layout.ts';

/** The default granularity of an added bitmap: the cluster size, within 4 KiB..64 KiB (qemu's
 * bdrv_get_default_bitmap_granularity). */
export const defaultGranularity = (clusterSize: number) => Math.min(65536, Math.max(4096, clusterSize));

// The state of an image between steps that the operations' rules look at: its size, its qcow2
// version and options, its internal snapshots. A generator predicts it from qemu's rules (the
// case alone); a run reads it from the image before every step (observed, never predicted).

export interface ImageState {
  size: number;
  compat: '1.1' | '0.10';
  refcountBits: RefcountBits;
  lazyRefcounts: boolean;
  extendedL2: boolean;
  /** An external data file. */
  dataFile: boolean;
  /** Internal snapshots in table order, each with the virtual size it was taken at (and its id,
   * where read from an image). */
  snapshots: { name: string; size: number; id?: string }[];
  /** The cluster size (qcow2): a bitmap's default granularity follows it. */
  clusterSize?: number;
  /** Persistent dirty bitmaps in directory order (qcow2 v3); absent where none were looked for. */
  bitmaps?: BitmapState[];
  /** Its backing chain, parent first. Absent where not looked for. */
  chain?: ChainLink[];
  /** The clusters of its refcount table, where read from an image (qcow2): a step that grows the
   * table takes the allocator's rarest path. Never predicted. */
  refcountTableClusters?: number;
}

/** A member of an image's backing chain: its name as the level above stores it, or relative to
 * that level's directory where it stores an absolute one (what `commit -b` matches either way),
 * and its path relative to the image's directory (what `rebase -b` names). */
export interface ChainLink {
  name: string;
  path: string;
}

/** A persistent bitmap as the rules of a bitmap call look at it. */
export interface BitmapState {
  name: string;
  granularity: number;
  enabled: boolean;
}

/** What an operation's rules say of one step from a state: its kind (per operation: a resize's
 * grow or shrink, an amend's downgrade, a snapshot's apply...), the size it asks for where it asks
 * for one, whether qemu-img accepts it, and the state it leaves. */
export interface OperationPlan {
  kind: string;
  target: number | null;
  accepted: boolean;
  next: ImageState;
}

/** The state the base image of a case has before the first step, as the case describes it. */
export function initialState(c: Case): ImageState {
  const snapshots: ImageState['snapshots'] = [];
  for (const op of c.data) {
    if (op.op === 'snapshot-create') snapshots.push({ name: op.name, size: c.image.virtualSize });
    if (op.op === 'snapshot-delete') {
      const at = snapshots.findIndex((s) => s.name === op.name);
      if (at >= 0) snapshots.splice(at, 1);
    }
  }
  const { virtualSize: size, compat, refcountBits, lazyRefcounts, extendedL2, dataFile } = c.image;
  const bitmaps: BitmapState[] = [];
  const byDefault = defaultGranularity(c.image.clusterSize);
  for (const op of c.data)
    if (op.op === 'bitmap-add')
      bitmaps.push({ name: op.name, granularity: op.granularity ?? byDefault, enabled: op.enabled });
  // the image's plain bitmaps are added after its data (model/commands.ts)
  for (let i = 0; i < c.image.bitmaps; i++) bitmaps.push({ name: `bitmap${i}`, granularity: byDefault, enabled: true });
  return {
    size,
    compat,
    refcountBits,
    lazyRefcounts,
    extendedL2,
    dataFile: dataFile !== 'none',
    snapshots,
    bitmaps,
    clusterSize: c.image.clusterSize,
    chain: chainLinks(chainOf(c.image)),
  };
}

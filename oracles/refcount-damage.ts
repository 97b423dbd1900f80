import type { ClusterRole, RefcountMismatchClass, RoleRun, StructureObservation } from '../qcow2/structure.ts';
import { normaliseMessage } from './message.ts';

// Refcount damage named by its anatomy, whichever oracle saw it: which structure the damaged
// clusters belong to (header, L1, L2, data, compressed, snapshot-owned, bitmap...), how their
// stored refcount is wrong (below the references, above them, or referenced by nothing), and what is
// special about them (shared by a snapshot). `qemu-img check` prints the cluster numbers; the
// qcow2 reader knows what every cluster is; the structure oracle counts the same classes itself.

/** One damaged cluster's class, e.g. `undercounted:l2`, `leaked:unreferenced`,
 * `undercounted:snapshot-data+shared`. */
export function damageClass(
  how: RefcountMismatchClass | 'copied-flag',
  role: ClusterRole | null,
  shared: boolean,
): string {
  // shared matters where the active image and a snapshot share a cluster; clusters only snapshots
  // reference are named by that already, however many snapshots they are shared among
  const withSnapshot = shared && role !== null && !role.startsWith('snapshot-');
  return `${how}:${role ?? 'unreferenced'}${withSnapshot ? '+shared' : ''}`;
}

const widthGroup = (bits: number) => (bits < 8 ? 'sub-byte' : bits === 8 ? 'byte' : 'multi-byte');

/** Which structure's damage names a signature when several are damaged: what is mapped before what
 * maps it (data before the L2 table over it, before the L1 table), since damage to a table nearly
 * always reaches what it maps, and the other way round not: a bug that frees shared L2 tables and
 * their data, or only the data, is named the same; unreferenced clusters last. */
const ROLE_PRECEDENCE: (ClusterRole | null)[] = [
  'data',
  'data-zero',
  'compressed',
  'snapshot-data',
  'l2',
  'snapshot-l2',
  'l1',
  'snapshot-l1',
  'bitmap-data',
  'bitmap-table',
  'bitmap-directory',
  'crypto-header',
  'snapshot-table',
  'refcount-block',
  'refcount-table',
  'header',
  null,
];
const rankOfRole = (role: ClusterRole | null) => {
  const at = ROLE_PRECEDENCE.indexOf(role);
  return at < 0 ? ROLE_PRECEDENCE.length : at;
};

/** Whether damage is the refcount blocks' encoding itself (entries at the wrong width, bit order or
 * stride, as in instar #365) rather than some clusters' counts: the header cluster, whose refcount
 * no operation here changes, is among the damaged clusters and not alone; or, at a sub-byte width,
 * two clusters of one byte hold each other's counts (fields packed in the wrong order). One cluster
 * counted wrong is not a garbled block: a header alone at 0 is `undercounted:header`. */
export function isGarbled(
  damaged: { cluster: number; stored?: number; expected?: number }[],
  total = damaged.length,
  refcountBits = 16,
): boolean {
  if (damaged.some((d) => d.cluster === 0) && total >= 2) return true;
  if (refcountBits >= 8) return false;
  const byCluster = new Map(damaged.map((d) => [d.cluster, d]));
  const perByte = 8 / refcountBits;
  return damaged.some((a) => {
    const first = Math.floor(a.cluster / perByte) * perByte;
    for (let c = first; c < first + perByte; c++) {
      const b = byCluster.get(c);
      if (b && b !== a && a.stored === b.expected && b.stored === a.expected && a.stored !== a.expected) return true;
    }
    return false;
  });
}

/** The structures a cluster nothing references any more is named by when it belonged to one before
 * the step: whole structures a step may lose (the LUKS header, a snapshot's table, L1, L2 or data,
 * a bitmap's). A table or data cluster of the active image that a step frees is a cluster like any
 * other: `unreferenced`, wherever the step happened to leave it. */
const NAMED_WHEN_LEAKED = new Set<ClusterRole>([
  'crypto-header',
  'snapshot-table',
  'snapshot-l1',
  'snapshot-l2',
  'snapshot-data',
  'bitmap-directory',
  'bitmap-table',
  'bitmap-data',
]);

/**
 * The signature detail of a set of damaged clusters: for garbled refcount blocks that and the
 * refcount width's group (the set of clusters it happened to hit follows the image's content);
 * otherwise one class, the damaged structure that comes first by ROLE_PRECEDENCE, so that a second
 * behaviour in the same case (a leak beside an undercount) or a table beside the data it maps does
 * not make a new signature. The
 * message and evidence list every class.
 */
export function damageDetail(classes: DamagedClass[], refcountBits: number, garbled: boolean): string {
  if (garbled) return `refcount-blocks-garbled:${widthGroup(refcountBits)}`;
  const first = [...classes].sort((a, b) => rankOfRole(a.role) - rankOfRole(b.role))[0];
  // a data cluster is data however it is stored (behind a zero flag, compressed), shared with a
  // snapshot or not: which of them a case's damage reaches follows the image, not the cause; the
  // evidence lists the classes
  return first?.class.replace(/:(data-zero|compressed)\b/, ':data').replace('+shared', '') ?? '';
}

/** One damaged cluster (or group of them) as a signature sees it. */
export interface DamagedClass {
  class: string;
  role: ClusterRole | null;
  shared: boolean;
}

/** How a host cluster is referenced, from the reader's runs; null when nothing references it. */
export function roleOf(runs: RoleRun[], cluster: number): RoleRun | null {
  let lo = 0;
  let hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const run = runs[mid]!;
    if (cluster < run.first) hi = mid - 1;
    else if (cluster > run.last) lo = mid + 1;
    else return run;
  }
  return null;
}

/** What a host cluster was in the image before the step (its structure as read then), when that
 * names a structure the step lost (NAMED_WHEN_LEAKED): a cluster leaked by a step is named by it
 * (`leaked:crypto-header`, `leaked:snapshot-l1`); any other is unreferenced. */
export function roleBefore(before: StructureObservation | null, cluster: number): RoleRun | null {
  const run = before?.readable ? roleOf(before.clusterRoles, cluster) : null;
  return run && NAMED_WHEN_LEAKED.has(run.role) ? { ...run, shared: false } : null;
}

/** What `qemu-img check` printed about each damaged cluster, and its other complaints. */
export interface CheckComplaints {
  refcounts: { cluster: number; how: RefcountMismatchClass; stored: number; expected: number }[];
  copiedFlags: { cluster: number; table: 'l2' | 'data' }[];
  /** Other ERROR and Warning lines, normalised. */
  other: string[];
}

const REFCOUNT_LINE = /^(ERROR|Leaked) cluster (\d+) refcount=(\d+) reference=(\d+)/;
const COPIED_DATA = /^ERROR OFLAG_COPIED data cluster: l2_entry=([0-9a-f]+) refcount=\d+/;
const COPIED_L2 = /^ERROR OFLAG_COPIED L2 cluster: l1_index=\d+ l1_entry=([0-9a-f]+) refcount=\d+/;
const OFFSET_MASK = 0x00fffffffffffe00n;

export function parseCheckComplaints(stderr: string, clusterBits: number): CheckComplaints {
  const out: CheckComplaints = { refcounts: [], copiedFlags: [], other: [] };
  const clusterOf = (entryHex: string) => Number((BigInt(`0x${entryHex}`) & OFFSET_MASK) >> BigInt(clusterBits));
  for (const line of stderr.split('\n').map((l) => l.trim())) {
    const r = REFCOUNT_LINE.exec(line);
    const data = COPIED_DATA.exec(line);
    const l2 = COPIED_L2.exec(line);
    if (r) {
      const [stored, references] = [Number(r[3]), Number(r[4])];
      const how = stored < references ? 'undercounted' : references === 0 ? 'leaked' : 'overcounted';
      out.refcounts.push({ cluster: Number(r[2]), how, stored, expected: references });
    } else if (data) out.copiedFlags.push({ cluster: clusterOf(data[1]!), table: 'data' });
    else if (l2) out.copiedFlags.push({ cluster: clusterOf(l2[1]!), table: 'l2' });
    else if (/^(ERROR|Warning)\b/.test(line)) out.other.push(normaliseMessage(line));
  }
  return out;
}

/** The damage classes of check's complaints of one kind (corruptions: refcounts below the
 * references, COPIED flags and other errors; leaks: refcounts above them), roles from the subject's
 * structure. A COPIED flag that is wrong because the cluster's refcount is wrong is a symptom of
 * that: only flags on clusters whose refcount qemu found right count as damage of their own. */
export function checkDamage(
  complaints: CheckComplaints,
  structure: StructureObservation | null,
  kind: 'corruptions' | 'leaks',
  before: StructureObservation | null = null,
) {
  const runs = structure?.readable ? structure.clusterRoles : [];
  const refcounts = complaints.refcounts.filter((r) => (r.how === 'undercounted') === (kind === 'corruptions'));
  const classes = refcounts.map(({ cluster, how }) => {
    // a cluster nothing references now is named by what it was before the step
    const run = how === 'leaked' ? roleBefore(before, cluster) : roleOf(runs, cluster);
    return {
      class: damageClass(how, run?.role ?? null, run?.shared ?? false),
      role: run?.role ?? null,
      shared: run?.shared ?? false,
    };
  });
  if (kind === 'leaks') return classes;
  const counted = new Map(complaints.refcounts.map((r) => [r.cluster, r.how]));
  for (const { cluster, table } of complaints.copiedFlags) {
    const run = roleOf(runs, cluster);
    const how = counted.get(cluster);
    // an undercount is already a class; a COPIED flag wrong because of an overcount is a
    // corruption caused by that overcount, named by it
    if (how === 'undercounted') continue;
    if (how !== undefined) {
      classes.push({
        class: damageClass(how, run?.role ?? null, run?.shared ?? false),
        role: run?.role ?? null,
        shared: run?.shared ?? false,
      });
      continue;
    }
    classes.push({
      class: damageClass('copied-flag', run?.role ?? (table === 'l2' ? 'l2' : 'data'), false),
      role: run?.role ?? null,
      shared: false,
    });
  }
  classes.push(...complaints.other.map((line) => ({ class: line, role: null, shared: false })));
  return classes;
}

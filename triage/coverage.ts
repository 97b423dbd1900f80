import type { CaseResult } from '../exec/run-case.ts';
import {
  IMAGE_FORMATS,
  isIoOp,
  hasBitmaps,
  isResize,
  OPERATION_NAMES,
  opOf,
  QEMU_RESIZED_FORMATS,
  l2Coverage,
  REFCOUNT_WIDTHS,
  type Case,
  type Step,
} from '../model/case.ts';
import { plannedSizes } from '../model/plan.ts';
import { DAMAGE_KINDS, REPAIR_TIERS } from '../operations/repair/step.ts';
import { BITMAP_ACTIONS, type BitmapStep } from '../operations/bitmap/step.ts';
import type { OracleName } from '../oracles/table.ts';

// What a run actually exercised, counted from the cases and the steps that ran (a case stops at
// its first finding, so steps after it do not count). A narrow generator shows up here as zeros.

type Counts = Record<string, number>;

export interface CoverageSummary {
  /** Cases and the steps qemu-img accepted, per image format; and the steps run to a size off the
   * 512-byte grid, growing or shrinking (qemu-img refuses them on qcow2, raw takes them). */
  formats: Record<string, { cases: number; grow: number; shrink: number; offGridGrow: number; offGridShrink: number }>;
  refcountBits: Counts;
  clusterSize: Counts;
  compat: Counts;
  features: Counts;
  dataOps: Counts;
  stepKind: Counts;
  outcomes: { reference: Counts; subject: Counts };
  oracles: Counts;
  /** The steps of each operation that ran, by kind, and how many qemu-img accepted. */
  operations: Record<string, { steps: number; accepted: number; kinds: Counts }>;
  /** Steps qemu-img accepted on qcow2 images, per operation and refcount width (before the step). */
  operationByRefcount: Record<string, Counts>;
  /** Steps qemu-img accepted on qcow2 images, per refcount width: grows, shrinks, and shrinks
   * that discarded clusters holding data. */
  refcountByStep: Record<string, { grow: number; shrink: number; shrinkDiscarding: number }>;
  /** Base images whose allocated clusters the qcow2 reader counted as qemu-img check did, and
   * those where it did not (a reader bug); dirty bases are not checked. */
  readerSelfCheck: { agreed: number; disagreed: number };
  /** The first repair step of each case that had damage written, by what the damage hit (its kind),
   * the refcount width and the tier: `refcount-zero/4/all`. Absent in older summaries. */
  repairDamage?: Counts;
  /** Bitmap steps by action (a call of several counts each), and `<action>/bits` where the image's
   * bitmaps held dirty bits when the step ran; `steps` and `steps/bits` count the calls. */
  bitmapActions?: Counts;
}

const bump = (counts: Counts, key: string | number, by = 1) => {
  counts[String(key)] = (counts[String(key)] ?? 0) + by;
};

export function emptyCoverage(): CoverageSummary {
  return {
    formats: Object.fromEntries(
      IMAGE_FORMATS.map((f) => [f, { cases: 0, grow: 0, shrink: 0, offGridGrow: 0, offGridShrink: 0 }]),
    ),
    refcountBits: {},
    clusterSize: {},
    compat: {},
    features: {},
    dataOps: {},
    stepKind: {},
    outcomes: { reference: {}, subject: {} },
    oracles: {},
    operations: Object.fromEntries(OPERATION_NAMES.map((o) => [o, { steps: 0, accepted: 0, kinds: {} }])),
    operationByRefcount: Object.fromEntries(OPERATION_NAMES.map((o) => [o, {}])),
    refcountByStep: Object.fromEntries(
      REFCOUNT_WIDTHS.map((b) => [String(b), { grow: 0, shrink: 0, shrinkDiscarding: 0 }]),
    ),
    readerSelfCheck: { agreed: 0, disagreed: 0 },
    repairDamage: {},
  };
}

/** Every cell of damage kind x refcount width x tier a repair can meet: a 1-bit refcount has no
 * room for one too high. */
export const REPAIR_CELLS = DAMAGE_KINDS.flatMap((kind) =>
  REFCOUNT_WIDTHS.filter((bits) => !(kind === 'refcount-high' && bits === 1)).flatMap((bits) =>
    REPAIR_TIERS.map((tier) => `${kind}/${bits}/${tier}`),
  ),
);

/** Shapes of the data that a resize's refcount updates treat each their own way, from the case:
 * zero-flag entries (`write -z`, v3) in the range the first shrink discards; compressed clusters
 * (packed by qemu into shared host clusters) on both sides of its new end; clusters a snapshot
 * shares past it; and data behind the second cluster of a multi-cluster L1 table. */
export function dataShapes(c: Case): Record<string, boolean> {
  // the shapes the generator aimed at: where it placed the data (around the shrink it predicted, from
  // the case alone), not what a step then did, which the refcount table counts from the records
  const shrink = plannedSizes(c).find((p) => p.plan.kind === 'shrink');
  const end = shrink?.plan.target ?? null;
  const past = (d: { offset: number; length: number }) => end !== null && d.offset + d.length > end;
  const before = (d: { offset: number }) => end !== null && d.offset < end;
  const io = c.data.filter(isIoOp);
  const compressed = io.filter((d) => d.op === 'compress');
  const snapshotAt = c.data.findIndex((d) => d.op === 'snapshot-create');
  const writtenBeforeSnapshot = snapshotAt < 0 ? [] : c.data.slice(0, snapshotAt).filter(isIoOp);
  const { clusterSize, extendedL2 } = c.image;
  // one L1 cluster holds clusterSize / 8 entries, each mapping one L2 table's coverage
  const firstL1Cluster = (clusterSize / 8) * l2Coverage(clusterSize, extendedL2);
  return {
    zeroFlagDiscarded: c.image.compat === '1.1' && io.some((d) => d.op === 'zero' && past(d)),
    compressedAcrossNewEnd: compressed.some(past) && compressed.some(before),
    snapshotSharedPastEnd: writtenBeforeSnapshot.some((d) => d.op !== 'discard' && past(d)),
    multiClusterL1: c.image.virtualSize > firstL1Cluster && io.some((d) => d.offset + d.length > firstL1Cluster),
  };
}

export function addCase(
  cov: CoverageSummary,
  c: Case,
  result: Pick<CaseResult, 'steps' | 'afterUse' | 'baseReader' | 'damage'>,
) {
  const format = cov.formats[c.image.format]!;
  format.cases++;
  for (const s of result.steps) {
    const op = opOf(c.steps[s.index]!);
    const row = (cov.operations ??= {})[op] ?? { steps: 0, accepted: 0, kinds: {} };
    cov.operations[op] = row;
    row.steps++;
    bump(row.kinds, s.plan.kind);
    if (s.reference === 'ok') {
      row.accepted++;
      if (c.image.format === 'qcow2') {
        const widths = ((cov.operationByRefcount ??= {})[op] ??= {});
        bump(widths, s.stateBefore?.refcountBits ?? c.image.refcountBits);
      }
    }
    // the formats table counts resizes (an amend's size change is the amend row's)
    if (op !== 'resize') continue;
    if (s.reference === 'ok' && s.plan.kind === 'grow') format.grow++;
    if (s.reference === 'ok' && s.plan.kind === 'shrink') format.shrink++;
    const target = s.plan.target;
    if (target !== null && target > 0 && target % 512 !== 0) {
      if (target > s.sizeBefore) format.offGridGrow++;
      else format.offGridShrink++;
    }
  }
  if (c.image.format !== 'qcow2') return addPlainCase(cov, c, result);
  bump(cov.refcountBits, c.image.refcountBits);
  bump(cov.clusterSize, c.image.clusterSize);
  bump(cov.compat, c.image.compat);
  const features = {
    lazyRefcounts: c.image.lazyRefcounts,
    extendedL2: c.image.extendedL2,
    zstd: c.image.compressionType === 'zstd',
    amendedRefcountBits: c.image.createdWithRefcountBits !== null,
    bitmaps: hasBitmaps(c),
    dirty: c.image.dirty,
    snapshots: c.data.some((d) => d.op === 'snapshot-create'),
    snapshotsDeleted: c.data.some((d) => d.op === 'snapshot-delete'),
    // backing images shorter and longer than the image, and both kinds of external data file
    backingShorter: c.image.backing !== null && c.image.backing.virtualSize < c.image.virtualSize,
    backingLonger: c.image.backing !== null && c.image.backing.virtualSize > c.image.virtualSize,
    dataFile: c.image.dataFile === 'data_file',
    dataFileRaw: c.image.dataFile === 'data_file_raw',
    rawBacking: c.image.backing?.format === 'raw',
    encrypted: c.image.encrypted,
    // resized with qemu-img given the key (the rest of an encrypted case's steps withhold it)
    encryptedKeyGiven: c.image.encrypted && c.steps.some((s) => isResize(s) && s.key),
    createdMetadata: c.image.createdPreallocation === 'metadata',
    createdFalloc: c.image.createdPreallocation === 'falloc',
    createdFull: c.image.createdPreallocation === 'full',
    steps4: c.steps.length === 4,
    // a downgrade qemu-img took over zero-flag clusters (v3 `write -z`) and a snapshot: what it
    // expands, and what a header-only downgrade would leave behind
    downgradeOverZeroFlags:
      c.data.some((d) => d.op === 'zero') &&
      c.data.some((d) => d.op === 'snapshot-create') &&
      result.steps.some((s) => s.plan.kind === 'downgrade' && s.reference === 'ok'),
    // a snapshot creation that made qemu-img grow the refcount table (instar v1 never grows it)
    snapshotGrewRefcountTable: result.steps.some(
      (s) => opOf(c.steps[s.index]!) === 'snapshot' && s.plan.kind === 'create' && s.refcountTableGrew === true,
    ),
    ...dataShapes(c),
  };
  for (const [feature, present] of Object.entries(features)) if (present) bump(cov.features, feature);
  for (const d of c.data) bump(cov.dataOps, d.op);
  addRepairDamage(cov, c, result);
  addBitmapActions(cov, c, result);
  if (result.baseReader) {
    if (result.baseReader.byReader === result.baseReader.byCheck) cov.readerSelfCheck.agreed++;
    else cov.readerSelfCheck.disagreed++;
  }
  for (const s of result.steps) {
    bump(cov.stepKind, s.plan.kind);
    bump(cov.outcomes.reference, s.reference);
    bump(cov.outcomes.subject, s.subject);
    for (const oracle of s.oracles) bump(cov.oracles, oracle);
    const row = cov.refcountByStep[String(s.stateBefore?.refcountBits ?? c.image.refcountBits)]!;
    if (s.reference !== 'ok') continue;
    if (s.plan.kind === 'grow') row.grow++;
    if (s.plan.kind === 'shrink') {
      row.shrink++;
      if (s.discardsAllocated) row.shrinkDiscarding++;
    }
  }
  if (result.afterUse) bump(cov.oracles, 'after-use' satisfies OracleName);
}

/** The damage the first step, a repair, met: what the run wrote (observed), not what the case asked. */
function addRepairDamage(cov: CoverageSummary, c: Case, result: Pick<CaseResult, 'steps' | 'damage'>) {
  const first = result.steps[0];
  if (!first || opOf(c.steps[0]!) !== 'repair') return;
  const bits = first.stateBefore?.refcountBits ?? c.image.refcountBits;
  for (const d of result.damage ?? [])
    if (d.hit !== null) bump((cov.repairDamage ??= {}), `${d.kind}/${bits}/${first.plan.kind}`);
}

/** The actions of the bitmap steps that ran, and which of them met bitmaps holding bits. */
function addBitmapActions(cov: CoverageSummary, c: Case, result: Pick<CaseResult, 'steps'>) {
  for (const s of result.steps) {
    const step = c.steps[s.index]!;
    if (opOf(step) !== 'bitmap') continue;
    const counts = (cov.bitmapActions ??= {});
    const bits = (s.bitmapBitsBefore ?? 0) > 0;
    const keys = ['steps', ...new Set((step as BitmapStep).actions.map((a) => a.action))];
    for (const key of keys) {
      bump(counts, key);
      if (bits) bump(counts, `${key}/bits`);
    }
  }
}

/** The console line of the bitmap actions: each action's steps, with bits among them. */
function bitmapLine(cov: CoverageSummary): string[] {
  const counts = cov.bitmapActions;
  if (!counts?.steps) return [];
  const shown = BITMAP_ACTIONS.map((a) => `${a} ${counts[a] ?? 0} (${counts[`${a}/bits`] ?? 0})`).join(', ');
  const share = Math.round((100 * (counts['steps/bits'] ?? 0)) / counts.steps);
  return [
    `  bitmap steps by action (with dirty bits to act on): ${shown}; ${share}% of ${counts.steps} steps with bits`,
  ];
}

/** The console line of the repair cells: how many the run reached, and the first it did not. */
function repairLine(cov: CoverageSummary): string[] {
  const reached = cov.repairDamage ?? {};
  if (Object.keys(reached).length === 0) return [];
  const missing = REPAIR_CELLS.filter((cell) => !reached[cell]);
  const shown = missing.slice(0, 6).join(', ') + (missing.length > 6 ? ', ...' : '');
  return [
    `  repair damage x refcount width x tier: ${REPAIR_CELLS.length - missing.length} of ${REPAIR_CELLS.length} cells` +
      (missing.length > 0 ? ` (none yet: ${shown})` : ''),
  ];
}

/** A raw case's own shapes: dense data (a write of a MiB or more), created preallocated, and steps
 * to sizes off the 512-byte grid, which raw takes and qcow2 does not. */
/** A case of raw, vhdx, vmdk or vpc: no qcow2 features or refcounts; a raw image's own shapes, or
 * the other formats' subformats ("vmdk streamOptimized"). */
function addPlainCase(cov: CoverageSummary, c: Case, result: Pick<CaseResult, 'steps' | 'afterUse'>) {
  if (c.image.options) bump(cov.features, `${c.image.format} ${c.image.options.subformat}`);
  const features =
    c.image.format !== 'raw'
      ? {}
      : {
          rawDense: c.data.some((d) => d.op === 'write' && d.length >= 2 ** 20),
          rawCreatedPreallocated: c.image.createdPreallocation !== 'off',
          rawOffGrid: result.steps.some(
            (s) => s.reference === 'ok' && s.plan.target !== null && s.plan.target % 512 !== 0,
          ),
          rawPreallocatedGrow: result.steps.some(
            (s) =>
              s.reference === 'ok' &&
              s.plan.kind === 'grow' &&
              ['falloc', 'full'].includes(preallocationOf(c.steps[s.index]!)),
          ),
        };
  for (const [feature, present] of Object.entries(features)) if (present) bump(cov.features, feature);
  for (const d of c.data) bump(cov.dataOps, d.op);
  for (const s of result.steps) {
    bump(cov.stepKind, s.plan.kind);
    bump(cov.outcomes.reference, s.reference);
    bump(cov.outcomes.subject, s.subject);
    for (const oracle of s.oracles) bump(cov.oracles, oracle);
  }
  if (result.afterUse) bump(cov.oracles, 'after-use' satisfies OracleName);
}

const preallocationOf = (step: Step) => (isResize(step) ? (step.preallocation ?? '') : '');

/** Every format with cases but no grow or (where qemu-img shrinks it) no shrink, and every refcount width x step kind
 * combination that no qcow2 case reached (none when the run had no qcow2 cases). */
export function coverageGaps(cov: CoverageSummary): string[] {
  // a run of other operations resizes only to set up their steps (a grow before a snapshot apply):
  // shrinks and the refcount x resize table are not what it aimed at
  const others = Object.entries(cov.operations ?? {}).filter(([op, o]) => op !== 'resize' && o.steps > 0);
  const drivesResize = others.length === 0 || (cov.operations?.resize?.kinds.shrink ?? 0) > 0;
  const formats = Object.entries(cov.formats ?? {})
    .filter(([, f]) => f.cases > 0)
    .flatMap(([name, f]) => [
      f.grow === 0 ? `${name} x grow` : null,
      // qemu-img shrinks only the formats it resizes
      drivesResize && f.shrink === 0 && (QEMU_RESIZED_FORMATS as readonly string[]).includes(name)
        ? `${name} x shrink`
        : null,
    ])
    .filter((g): g is string => g !== null);
  // an operation the run drove that qemu-img never took
  const operations = Object.entries(cov.operations ?? {})
    .filter(([, o]) => o.steps > 0 && o.accepted === 0)
    .map(([op]) => `${op} x accepted`);
  if (cov.formats && cov.formats.qcow2?.cases === 0) return [...operations, ...formats];
  return [...operations, ...formats, ...(drivesResize ? refcountGaps(cov) : [])];
}

function refcountGaps(cov: CoverageSummary): string[] {
  return Object.entries(cov.refcountByStep).flatMap(([bits, row]) =>
    Object.entries(row)
      .filter(([, n]) => n === 0)
      .map(([kind]) => `refcount_bits=${bits} x ${kind}`),
  );
}

/** The operations a run drove: their steps, those qemu-img took (per refcount width the image had
 * then: qcow2), and the steps' kinds by their operation's rules. */
function operationTable(cov: CoverageSummary): string[] {
  const rows = Object.entries(cov.operations ?? {}).filter(([, o]) => o.steps > 0);
  if (rows.length === 0) return [];
  const widths = REFCOUNT_WIDTHS.map((b) => `${b}-bit`.padStart(7)).join('');
  return [
    `  operation  steps  accepted${widths}   kinds`,
    ...rows.map(([op, o]) => {
      const byWidth = cov.operationByRefcount?.[op] ?? {};
      const cells = REFCOUNT_WIDTHS.map((b) => String(byWidth[String(b)] ?? 0).padStart(7)).join('');
      const kinds = Object.entries(o.kinds)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ');
      return `  ${op.padEnd(9)}  ${String(o.steps).padStart(5)}  ${String(o.accepted).padStart(8)}${cells}   ${kinds}`;
    }),
  ];
}

/** The operation, format and refcount x step tables and the feature counts, for the console. */
export function coverageTable(cov: CoverageSummary): string {
  const rows = Object.entries(cov.refcountByStep).map(
    ([bits, r]) =>
      `  ${bits.padStart(2)}-bit  ${String(r.grow).padStart(6)}  ` +
      `${String(r.shrink).padStart(7)}  ${String(r.shrinkDiscarding).padStart(17)}`,
  );
  const features = Object.entries(cov.features)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const reader =
    `qcow2 reader vs qemu-img check on base images: ` +
    `${cov.readerSelfCheck.agreed} agreed, ${cov.readerSelfCheck.disagreed} disagreed`;
  const formats = Object.entries(cov.formats ?? {}).map(
    ([name, f]) =>
      `  ${name.padEnd(8)}  ${String(f.cases).padStart(5)}  ` +
      `${String(f.grow).padStart(5)}  ${String(f.shrink).padStart(7)}  ` +
      `${String(f.offGridGrow ?? 0).padStart(14)}  ${String(f.offGridShrink ?? 0).padStart(16)}`,
  );
  return [
    ...operationTable(cov),
    '  format    cases  grows  shrinks  off-grid grows  off-grid shrinks',
    ...formats,
    '  refcount  grows  shrinks  shrinks discarding   (qcow2)',
    ...rows,
    `  features: ${features || 'none'}`,
    ...repairLine(cov),
    ...bitmapLine(cov),
    `  ${reader}`,
  ].join('\n');
}

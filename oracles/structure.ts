import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  EXT_BACKING_FORMAT,
  EXT_BITMAPS,
  EXT_CRYPTO,
  EXT_DATA_FILE,
  EXT_FEATURE_TABLE,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
} from '../qcow2/format.ts';
import type {
  HeaderSummary,
  RefcountMismatchClass,
  SnapshotSummary,
  StructureObservation,
} from '../qcow2/structure.ts';
import { l1EntriesNeeded } from '../qcow2/tables.ts';
import { damageClass, damageDetail, isGarbled, roleBefore } from './refcount-damage.ts';
import type { Finding, Side } from './finding.ts';

// The structure oracle reads the qcow2 metadata itself (qcow2/structure.ts structuralCheck) instead
// of asking qemu: header fields that contradict each other or the file, refcounts recomputed from
// the tables, COPIED flags, mappings a shrink must have dropped, and what a resize must preserve
// compared with qemu's own result (refcount order, header extensions, feature bits qemu-img info
// does not show). Details are field, structure or extension names only, never numbers.

type Readable = Extract<StructureObservation, { readable: true }>;

const KNOWN_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/** Extensions qemu accepts at most once. Unknown types may repeat. */
const SINGLETONS = [EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, EXT_BITMAPS, EXT_CRYPTO, EXT_DATA_FILE];

/**
 * Header fields that contradict each other, qemu's limits or the file length. Returns the names of
 * the offending fields (qcow2.txt spelling), sorted; empty when the header is consistent.
 */
export function headerInconsistencies(o: Readable): string[] {
  const h = o.header;
  const bad = new Set<string>();
  const cs = h.clusterSize;
  const incompat = BigInt(h.incompatibleFeatures);
  const autoclear = BigInt(h.autoclearFeatures);
  const extL2 = (incompat & INCOMPAT_EXTL2) !== 0n;
  const aligned = (n: number) => n % cs === 0;
  const v3 = h.version >= 3;

  if (h.version !== 2 && h.version !== 3) bad.add('version');
  if (extL2 && h.clusterBits < 14) bad.add('cluster_bits');
  if (h.size % 512 !== 0) bad.add('size');
  // The L1 table must map the whole virtual disk, stay within qemu's limit and inside the file.
  if (h.l1Size < l1EntriesNeeded(h.size, cs, extL2) || h.l1Size * 8 > MAX_L1_BYTES) bad.add('l1_size');
  if (
    h.l1Size > 0 &&
    (!aligned(h.l1TableOffset) || h.l1TableOffset === 0 || h.l1TableOffset + h.l1Size * 8 > o.fileLength)
  )
    bad.add('l1_table_offset');
  // The refcount table: non-empty, within qemu's limit, aligned, after the header, inside the file.
  if (!aligned(h.refcountTableOffset) || h.refcountTableOffset === 0 || h.refcountTableOffset >= o.fileLength)
    bad.add('refcount_table_offset');
  else if (h.refcountTableOffset + h.refcountTableClusters * cs > o.fileLength) bad.add('refcount_table_clusters');
  if (h.refcountTableClusters === 0 || h.refcountTableClusters * cs > MAX_REFTABLE_BYTES)
    bad.add('refcount_table_clusters');
  if (h.refcountOrder > 6) bad.add('refcount_order');
  if (v3 && (h.headerLength < 104 || h.headerLength % 8 !== 0 || h.headerLength > cs)) bad.add('header_length');
  if (
    h.nbSnapshots > 0 &&
    (!aligned(h.snapshotsOffset) || h.snapshotsOffset === 0 || h.snapshotsOffset >= o.fileLength)
  )
    bad.add('snapshots_offset');
  // compression_type is non-zero exactly when its incompatible bit says so (zlib is 0, zstd 1).
  if (((incompat & INCOMPAT_COMPRESSION) !== 0n) !== (h.compressionType !== 0) || h.compressionType > 1)
    bad.add('compression_type');
  if (incompat & ~KNOWN_INCOMPAT) bad.add('incompatible_features');
  // the external data file bit with no data file name: qemu cannot open the image on its own
  if (incompat & INCOMPAT_DATA_FILE && !o.extensions.some((e) => e.type === EXT_DATA_FILE))
    bad.add('incompatible_features');
  const hasBitmapsExt = o.extensions.some((e) => e.type === EXT_BITMAPS);
  if (
    (autoclear & AUTOCLEAR_BITMAPS && !hasBitmapsExt) ||
    (autoclear & AUTOCLEAR_DATA_FILE_RAW && !(incompat & INCOMPAT_DATA_FILE))
  ) {
    bad.add('autoclear_features');
  }
  if (h.backingFileOffset > 0 && h.backingFileOffset + h.backingFileSize > cs) bad.add('backing_file_offset');
  if (o.extensionError !== null || SINGLETONS.some((t) => o.extensions.filter((e) => e.type === t).length > 1))
    bad.add('header-extensions');
  return [...bad].sort();
}

const MISMATCH_ORDER: RefcountMismatchClass[] = ['undercounted', 'overcounted', 'leaked'];
const uniqSorted = (xs: string[]) => [...new Set(xs)].sort();

/** Findings about one image on its own: everything that must hold for any valid qcow2 result. */
function intrinsicFindings(side: Side, o: StructureObservation, before: StructureObservation | null = null): Finding[] {
  const base = { oracle: 'structure' as const, side };
  if (!o.readable) {
    return [
      {
        ...base,
        kind: 'unreadable',
        detail: o.reason,
        message: `the ${side} image cannot be read as qcow2: ${o.message}`,
      },
    ];
  }
  const findings: Finding[] = [];
  const fields = headerInconsistencies(o);
  if (fields.length > 0) {
    findings.push({
      ...base,
      kind: 'header-inconsistent',
      detail: fields.join(','),
      message: `the ${side} image's header is inconsistent in ${fields.join(', ')}`,
      evidence: { header: o.header, fileLength: o.fileLength, extensionError: o.extensionError },
    });
  }
  if (o.problems.length > 0) {
    const what = uniqSorted(o.problems.map((p) => p.what));
    findings.push({
      ...base,
      kind: 'metadata-invalid',
      detail: what.join(','),
      message: `invalid metadata in the ${side} image: ${o.problems.map((p) => p.message).join('; ')}`,
      evidence: o.problems,
    });
  }
  const mismatched = MISMATCH_ORDER.reduce((n, cls) => n + o.mismatchCounts[cls], 0);
  if (mismatched > 0) {
    // clusters nothing references now are named by what they were before the step (the listed ones)
    const leakedBefore = o.refcountMismatches
      .filter((m) => m.class === 'leaked')
      .map((m) => roleBefore(before, m.cluster))
      .map((run) => ({
        class: damageClass('leaked', run?.role ?? null, false),
        role: run?.role ?? null,
        shared: false,
      }));
    const groups = [
      ...o.mismatchGroups
        .filter((g) => g.class !== 'leaked' || leakedBefore.length === 0)
        .map((g) => ({ class: damageClass(g.class, g.role, g.shared), role: g.role, shared: g.shared })),
      ...leakedBefore,
    ];
    const garbled = isGarbled(o.refcountMismatches, mismatched, o.header.refcountBits);
    const e = o.refcountMismatches[0];
    const counts = MISMATCH_ORDER.filter((cls) => o.mismatchCounts[cls] > 0).map(
      (cls) => `${o.mismatchCounts[cls]} ${cls}`,
    );
    findings.push({
      ...base,
      kind: 'refcount-mismatch',
      detail: damageDetail(groups, o.header.refcountBits, garbled),
      message:
        `${mismatched} host clusters of the ${side} image have a stored refcount that differs from the references ` +
        `the metadata makes (${counts.join(', ')}), ` +
        `e.g. cluster ${e?.cluster}: stored ${e?.stored}, expected ${e?.expected}`,
      evidence: {
        classes: [...new Set(groups.map((g) => g.class))].sort(),
        groups: o.mismatchGroups,
        listed: o.refcountMismatches,
      },
    });
  }
  if (o.copiedMismatchCount > 0) {
    findings.push({
      ...base,
      kind: 'copied-flag-mismatch',
      detail: uniqSorted(o.copiedMismatches.map((m) => m.table)).join(','),
      message:
        `${o.copiedMismatchCount} active L1/L2 entries of the ${side} image ` +
        'have a COPIED flag that disagrees with the refcount',
      evidence: o.copiedMismatches,
    });
  }
  if (o.beyondEofCount > 0) {
    findings.push({
      ...base,
      kind: 'beyond-eof',
      detail: uniqSorted(o.beyondEof.map((b) => b.role)).join(','),
      message:
        `the ${side} image references ${o.beyondEofCount} host clusters ` +
        `at or past the end of its ${o.fileLength}-byte file`,
      evidence: o.beyondEof,
    });
  }
  if (o.mappingsBeyondEndCount > 0) {
    findings.push({
      ...base,
      kind: 'mapping-beyond-end',
      detail: uniqSorted(o.mappingsBeyondEnd.map((m) => m.table)).join(','),
      message:
        `the ${side} image still maps ${o.mappingsBeyondEndCount} L1/L2 entries ` +
        `past its virtual size of ${o.header.size}`,
      evidence: o.mappingsBeyondEnd,
    });
  }
  return findings;
}

/** Whole structures qemu's result keeps and the subject's lost: the encryption header (crypt_method
 * 0), the snapshot table, the bitmap directory, the backing file, the external data file. A header
 * rebuilt without one leaks its clusters (or over-counts those it shared): the lost structure is the
 * cause, and names the report before the refcount damage it leaves. In this order. */
export function droppedStructures(ref: Readable, sub: Readable): string[] {
  const has = (o: Readable, type: number) => o.extensions.some((e) => e.type === type);
  return [
    ref.header.cryptMethod !== 0 && sub.header.cryptMethod === 0 ? 'crypto-header' : null,
    sub.snapshots < ref.snapshots ? 'snapshot-table' : null,
    sub.bitmaps < ref.bitmaps || (has(ref, EXT_BITMAPS) && !has(sub, EXT_BITMAPS)) ? 'bitmap-directory' : null,
    ref.backingFile !== null && sub.backingFile === null ? 'backing-file' : null,
    has(ref, EXT_DATA_FILE) && !has(sub, EXT_DATA_FILE) ? 'data-file' : null,
  ].filter((d): d is string => d !== null);
}

/** Where the subject's snapshot table, entry by entry in table order, says other than qemu's
 * result's: a snapshot more (`entries`; fewer is a dropped structure), its `id` (qemu numbers a new
 * one past the highest), `name`, `l1-size` (the active L1's at creation), `disk-size` (the virtual
 * size then, which an apply restores) or `vm-state-size`. */
export function snapshotTableDifferences(ref: Readable, sub: Readable): string[] {
  const a = ref.snapshotTable;
  const b = sub.snapshotTable;
  if (a.length !== b.length) return ['entries'];
  const fields: [string, (e: SnapshotSummary) => unknown][] = [
    ['id', (e) => e.id],
    ['name', (e) => e.name],
    ['l1-size', (e) => e.l1Size],
    ['disk-size', (e) => e.diskSize],
    ['vm-state-size', (e) => e.vmStateSize],
  ];
  return fields.filter(([, get]) => a.some((e, i) => get(e) !== get(b[i]!))).map(([name]) => name);
}

/** The first entries that differ, as qemu's result and the subject's have them: ` (entry 3: qemu
 * id 4 name "step1", subject id 3 name "step1")`; empty when the counts differ. */
function snapshotEntryDiffs(ref: Readable, sub: Readable): string {
  if (ref.snapshotTable.length !== sub.snapshotTable.length)
    return ` (${ref.snapshotTable.length} entries in qemu's, ${sub.snapshotTable.length} in the subject's)`;
  const show = (e: SnapshotSummary) => `id ${e.id} name ${JSON.stringify(e.name)} l1 ${e.l1Size} size ${e.diskSize}`;
  const diffs = ref.snapshotTable
    .map((e, i) => ({ i, a: show(e), b: show(sub.snapshotTable[i]!) }))
    .filter(({ a, b }) => a !== b)
    .slice(0, 2)
    .map(({ i, a, b }) => `entry ${i + 1}: qemu ${a}, subject ${b}`);
  return diffs.length > 0 ? ` (${diffs.join('; ')})` : '';
}

/** The header fields and extensions (by name) each dropped structure takes with it. */
const DROPPED_PARTS: Record<string, string[]> = {
  'crypto-header': ['crypt_method', 'crypto-header'],
  'bitmap-directory': ['bitmaps', 'autoclear_features'],
  'backing-file': ['backing_file', 'backing-format'],
  'data-file': ['data-file', 'incompatible_features', 'autoclear_features'],
};

/** Header bits and fields a resize must keep that the info oracle does not already compare
 * (it compares dirty, corrupt, compression type, extended L2 and lazy refcounts). */
function changedFields(
  ref: HeaderSummary,
  sub: HeaderSummary,
  refBacking: string | null,
  subBacking: string | null,
): string[] {
  const INFO_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
  const masked = (v: string, covered: bigint) => BigInt(v) & ~covered;
  const changed: string[] = [];
  if (ref.clusterBits !== sub.clusterBits) changed.push('cluster_bits');
  if (ref.cryptMethod !== sub.cryptMethod) changed.push('crypt_method');
  if (masked(ref.incompatibleFeatures, INFO_INCOMPAT) !== masked(sub.incompatibleFeatures, INFO_INCOMPAT))
    changed.push('incompatible_features');
  if (masked(ref.compatibleFeatures, COMPAT_LAZY_REFCOUNTS) !== masked(sub.compatibleFeatures, COMPAT_LAZY_REFCOUNTS))
    changed.push('compatible_features');
  if (BigInt(ref.autoclearFeatures) !== BigInt(sub.autoclearFeatures)) changed.push('autoclear_features');
  if (refBacking !== subBacking) changed.push('backing_file');
  return changed;
}

/** Extensions compared as multisets by type: lost, added, or present with different content. */
function extensionFindings(ref: Readable, sub: Readable, covered: Set<string> = new Set()): Finding[] {
  const base = { oracle: 'structure' as const, side: 'subject' as const };
  const byType = (o: Readable) => {
    const m = new Map<number, { name: string; contents: string[] }>();
    for (const e of o.extensions) {
      const entry = m.get(e.type) ?? { name: e.name, contents: [] };
      entry.contents.push(e.content);
      m.set(e.type, entry);
    }
    return m;
  };
  const r = byType(ref);
  const s = byType(sub);
  const lost: string[] = [];
  const added: string[] = [];
  const changed: string[] = [];
  for (const [type, e] of r) {
    const other = s.get(type);
    if (!other) {
      if (!covered.has(e.name)) lost.push(e.name);
    } else if (JSON.stringify([...e.contents].sort()) !== JSON.stringify([...other.contents].sort()))
      changed.push(e.name);
  }
  for (const [type, e] of s) if (!r.has(type)) added.push(e.name);
  const findings: Finding[] = [];
  const names = (xs: string[]) => uniqSorted(xs).join(',');
  const evidence = { reference: ref.extensions, subject: sub.extensions };
  if (lost.length)
    findings.push({
      ...base,
      kind: 'extension-lost',
      detail: names(lost),
      message: `the subject's result lost header extensions that qemu's keeps: ${names(lost)}`,
      evidence,
    });
  if (changed.length)
    findings.push({
      ...base,
      kind: 'extension-changed',
      detail: names(changed),
      message: `header extensions differ from qemu's result: ${names(changed)}`,
      evidence,
    });
  if (added.length)
    findings.push({
      ...base,
      kind: 'extension-added',
      detail: names(added),
      message: `the subject's result has header extensions qemu's lacks: ${names(added)}`,
      evidence,
    });
  return findings;
}

/**
 * The structure oracle. `subject` is structuralCheck() of the subject's image after a successful
 * resize step; `reference` the same for qemu's result of that step (null when not available: only
 * the subject's own consistency is then judged). Intrinsic problems of qemu's result are reported
 * with side 'reference' (a qemu bug or, more likely, a bug of this oracle).
 */
export function structureOracle(
  subject: StructureObservation,
  reference: StructureObservation | null,
  subjectBefore: StructureObservation | null = null,
): Finding[] {
  // qemu's result before the step was what the subject's was: what leaked clusters had been
  const qemus = reference === null ? [] : intrinsicFindings('reference', reference, subjectBefore);
  // what qemu's own result breaks the same way is qemu's: reported on its side, not the subject's
  const shared = new Set(qemus.map((f) => `${f.kind}/${f.detail}`));
  const findings = intrinsicFindings('subject', subject, subjectBefore).filter(
    (f) => !shared.has(`${f.kind}/${f.detail}`),
  );
  if (reference === null) return findings;
  if (subject.readable && reference.readable) {
    const base = { oracle: 'structure' as const, side: 'subject' as const };
    const dropped = droppedStructures(reference, subject);
    // the header fields and extensions of a dropped structure are part of that finding
    const covered = new Set(dropped.flatMap((d) => DROPPED_PARTS[d] ?? []));
    for (const what of dropped)
      findings.push({
        ...base,
        kind: 'structure-dropped',
        detail: what,
        message: `the subject's result lost the ${what} that qemu's result keeps`,
        evidence: {
          reference: {
            cryptMethod: reference.header.cryptMethod,
            snapshots: reference.snapshots,
            bitmaps: reference.bitmaps,
          },
          subject: { cryptMethod: subject.header.cryptMethod, snapshots: subject.snapshots, bitmaps: subject.bitmaps },
        },
      });
    if (subject.header.refcountOrder !== reference.header.refcountOrder) {
      findings.push({
        ...base,
        kind: 'refcount-order-changed',
        detail: 'refcount_order',
        message:
          `refcount_order is ${subject.header.refcountOrder} in the subject's result ` +
          `and ${reference.header.refcountOrder} in qemu's`,
        evidence: { reference: reference.header.refcountOrder, subject: subject.header.refcountOrder },
      });
    }
    const snapshotFields = dropped.includes('snapshot-table') ? [] : snapshotTableDifferences(reference, subject);
    if (snapshotFields.length > 0)
      findings.push({
        ...base,
        kind: 'snapshot-table-differs',
        detail: snapshotFields.join(','),
        message:
          `the snapshot table differs from qemu's result in: ${snapshotFields.join(', ')}` +
          snapshotEntryDiffs(reference, subject),
        evidence: { reference: reference.snapshotTable, subject: subject.snapshotTable },
      });
    const changed = changedFields(reference.header, subject.header, reference.backingFile, subject.backingFile).filter(
      (f) => !covered.has(f),
    );
    if (changed.length > 0) {
      findings.push({
        ...base,
        kind: 'header-field-changed',
        detail: changed.join(','),
        message: `header fields differ from qemu's result: ${changed.join(', ')}`,
        evidence: { reference: reference.header, subject: subject.header },
      });
    }
    findings.push(...extensionFindings(reference, subject, covered));
  }
  findings.push(...qemus);
  return findings;
}

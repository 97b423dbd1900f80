import type { StructureObservation } from '../qcow2/structure.ts';
import type { Finding } from './finding.ts';

/** The fields of `qemu-img info --output=json` that both tools must agree on. Host layout (file
 * length, actual-size, cluster placement) legitimately differs and is never compared. */
export interface InfoFields {
  'virtual-size': unknown;
  'dirty-flag': unknown;
  compat: unknown;
  'refcount-bits': unknown;
  'lazy-refcounts': unknown;
  'extended-l2': unknown;
  'compression-type': unknown;
  corrupt: unknown;
  /** 'luks' for an encrypted image, absent for a plain one: an image must not come back plain. */
  'encrypt-format': unknown;
  /** vhdx, vmdk, vpc (parseConvertedInfo): the block or grain size (a fixed vpc has none), the
   * vmdk subformat, its extents but their file names, and what its descriptor says. */
  'cluster-size'?: unknown;
  'create-type'?: unknown;
  extents?: unknown;
  'adapter-type'?: unknown;
  'descriptor-extents'?: unknown;
}

/** The fields of a raw image but its size: qemu-img info shows no format-specific part. */
export const RAW_INFO: Omit<InfoFields, 'virtual-size'> = {
  'dirty-flag': false,
  compat: undefined,
  'refcount-bits': undefined,
  'lazy-refcounts': undefined,
  'extended-l2': undefined,
  'compression-type': undefined,
  corrupt: undefined,
  'encrypt-format': undefined,
};

export type InfoObservation = { ok: true; fields: InfoFields } | { ok: false; exitCode: number | null; stderr: string };

export function parseInfo(exitCode: number | null, stdout: string, stderr: string): InfoObservation {
  if (exitCode !== 0) return { ok: false, exitCode, stderr };
  try {
    const info = JSON.parse(stdout) as Record<string, unknown> & {
      'format-specific'?: { data?: Record<string, unknown> };
    };
    const data = info['format-specific']?.data ?? {};
    const encrypt = data.encrypt as { format?: unknown } | undefined;
    return {
      ok: true,
      fields: {
        'virtual-size': info['virtual-size'],
        'dirty-flag': info['dirty-flag'],
        compat: data.compat,
        'refcount-bits': data['refcount-bits'],
        'lazy-refcounts': data['lazy-refcounts'],
        'extended-l2': data['extended-l2'],
        'compression-type': data['compression-type'],
        corrupt: data.corrupt,
        'encrypt-format': encrypt?.format,
      },
    };
  } catch {
    return { ok: false, exitCode, stderr: `qemu-img info printed no JSON: ${stdout.slice(0, 200)}` };
  }
}

/** What `qemu-img info --output=json` says of a vhdx, vmdk or vpc image, with the adapter type and
 * the extent lines (access, sectors, type) of a vmdk's descriptor (`descriptor`, the text): qemu
 * shows neither and sizes a sparse extent by its header alone, but VMware's tools read both. The
 * vmdk CID changes with every write, so it is left out. */
export function parseConvertedInfo(
  exitCode: number | null,
  stdout: string,
  stderr: string,
  descriptor: string | null,
): InfoObservation {
  const parsed = parseInfo(exitCode, stdout, stderr);
  if (!parsed.ok) return parsed;
  const info = JSON.parse(stdout) as Record<string, unknown> & {
    'format-specific'?: { data?: { 'create-type'?: unknown; extents?: Record<string, unknown>[] } };
  };
  const data = info['format-specific']?.data;
  // an extent as large as the disk is named so: the size is the content oracle's (one symptom,
  // one signature), a part that disagrees with it is this oracle's
  const size = info['virtual-size'];
  const extents = data?.extents?.map(({ filename: _f, ...extent }) =>
    extent['virtual-size'] === size ? { ...extent, 'virtual-size': 'disk' } : extent,
  );
  return {
    ok: true,
    fields: {
      ...parsed.fields,
      'cluster-size': info['cluster-size'],
      'create-type': data?.['create-type'],
      extents: extents && JSON.stringify(extents),
      'adapter-type': descriptor === null ? undefined : adapterTypeOf(descriptor),
      'descriptor-extents': descriptor === null ? undefined : descriptorExtents(descriptor, Number(size)),
    },
  };
}

/** The adapter type a vmdk descriptor names (`ddb.adapterType = "lsilogic"`), or null. */
export const adapterTypeOf = (descriptor: string) => /^ddb\.adapterType\s*=\s*"([^"]*)"/m.exec(descriptor)?.[1] ?? null;

/** "RW 16384 SPARSE; ...": a descriptor's extent lines without their file names, "disk" for the
 * sectors of an extent as large as the disk (`size` bytes). */
const descriptorExtents = (descriptor: string, size: number) =>
  [...descriptor.matchAll(/^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)/gm)]
    .map(([, access, sectors, type]) => `${access} ${Number(sectors) * 512 === size ? 'disk' : sectors} ${type}`)
    .join('; ');

/** qcow2's crypt_method values as qemu-img info names them (0, no encryption, has no name). */
const CRYPT_METHODS: Record<number, string> = { 1: 'aes', 2: 'luks' };

/** The same fields read from the qcow2 header by qcow2/structure.ts, as `qemu-img info` reports
 * them (v2 images have no lazy-refcounts, corrupt or extended-l2 field): two processes fewer per
 * step. test/info.test.ts holds the two views equal on images of every kind the generators make. */
export function infoFromStructure(o: StructureObservation): InfoObservation {
  if (!o.readable) return { ok: false, exitCode: null, stderr: `not readable as qcow2 (${o.reason}): ${o.message}` };
  const h = o.header;
  const incompatible = BigInt(h.incompatibleFeatures);
  const v3 = h.version >= 3;
  return {
    ok: true,
    fields: {
      'virtual-size': h.size,
      'dirty-flag': (incompatible & 1n) !== 0n,
      compat: v3 ? '1.1' : '0.10',
      'refcount-bits': h.refcountBits,
      'lazy-refcounts': v3 ? (BigInt(h.compatibleFeatures) & 1n) !== 0n : undefined,
      'extended-l2': v3 ? (incompatible & 16n) !== 0n : undefined,
      'compression-type': h.compressionType === 1 ? 'zstd' : 'zlib',
      corrupt: v3 ? (incompatible & 2n) !== 0n : undefined,
      'encrypt-format': CRYPT_METHODS[h.cryptMethod],
    },
  };
}

/** The fields read from a vmdk's descriptor, not from qemu-img info (parseConvertedInfo). */
const DESCRIPTOR_FIELDS: readonly (keyof InfoFields)[] = ['adapter-type', 'descriptor-extents'];

/** Where the differing fields were read, for the finding's message. */
function whereRead(fields: (keyof InfoFields)[]): string {
  const fromDescriptor = fields.filter((k) => DESCRIPTOR_FIELDS.includes(k)).length;
  if (fromDescriptor === 0) return 'qemu-img info differs';
  return fromDescriptor === fields.length
    ? 'the vmdk descriptor differs'
    : 'qemu-img info and the vmdk descriptor differ';
}

export function infoOracle(reference: InfoObservation, subject: InfoObservation): Finding[] {
  if (!subject.ok) {
    return [
      {
        oracle: 'info',
        kind: 'info-failed',
        side: 'subject',
        detail: 'info-failed',
        message: `qemu-img info failed on the subject image: ${subject.stderr.trim()}`,
      },
    ];
  }
  if (!reference.ok) {
    return [
      {
        oracle: 'info',
        kind: 'info-failed',
        side: 'reference',
        detail: 'info-failed',
        message: `qemu-img info failed on the reference image: ${reference.stderr.trim()}`,
      },
    ];
  }
  // the size is the content oracle's (size-differs says where the subject's size lands): one
  // symptom, one signature
  const fields = (Object.keys(reference.fields) as (keyof InfoFields)[]).filter((k) => k !== 'virtual-size');
  const differing = fields.filter((k) => reference.fields[k] !== subject.fields[k]).sort();
  if (differing.length === 0) return [];
  const diff = Object.fromEntries(
    differing.map((k) => [k, { reference: reference.fields[k], subject: subject.fields[k] }]),
  );
  // a field a v2 header or a plain image does not have is absent, not "undefined"
  const value = (v: unknown) => (v === undefined ? 'absent' : JSON.stringify(v));
  const shown = (k: keyof InfoFields) => `${k} (qemu ${value(diff[k]!.reference)}, subject ${value(diff[k]!.subject)})`;
  return [
    {
      oracle: 'info',
      kind: 'info-mismatch',
      side: 'subject',
      detail: differing.join(','),
      message: `${whereRead(differing)} in ${differing.map(shown).join(', ')}`,
      evidence: diff,
    },
  ];
}

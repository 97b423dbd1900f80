import type { Case, IoOp } from '../model/case.ts';
import type { StructureObservation } from '../qcow2/structure.ts';
import { qemuIoCommand } from '../model/commands.ts';
import { checkOracle, type CheckObservation } from './check.ts';
import { contentOracle, type CompareContext, type CompareObservation } from './content.ts';
import { normaliseMessage } from './message.ts';
import type { Finding } from './finding.ts';

// Some damage only shows when the image is used again: a wrong refcount makes the next allocation
// overwrite live data, stale L2 entries past a shrink come back when the image grows. When both
// sides succeeded, the same qemu-io workload runs on both results, then check and compare again.

/** The workload for results of virtual size `size`, from the case and `largest`, the largest size
 * qemu's result had over the steps (observed); reports keep it, and repro.sh runs it as kept. */
export function afterUseWorkload(c: Case, size: number, largest: number): string[] {
  const cs = c.image.clusterSize;
  const align = (n: number) => Math.floor(n / 512) * 512;
  const ops: IoOp[] = [];
  // fresh clusters at the new end
  const endStart = Math.max(0, align(size - 2 * cs));
  ops.push({ op: 'write', offset: endStart, length: Math.min(size - endStart, 2 * cs, 256 * 1024), pattern: 0xe1 });
  // a rewrite of data the case wrote, where it is still inside the image
  const kept = c.data.find((d): d is Extract<IoOp, { op: 'write' }> => d.op === 'write' && d.offset + d.length <= size);
  if (kept) ops.push({ ...kept, pattern: 0xe2 });
  // a whole-cluster discard (qemu ignores partial ones)
  if (size >= cs) ops.push({ op: 'discard', offset: 0, length: cs });
  const commands = ops.map(qemuIoCommand);
  // grow past the end and write there: discarded data must not come back. The grow covers at least
  // four clusters and every size the image had before, so all a shrink discarded is read again
  // (data left past the new end, in the image or in an external data file, shows there). Only from
  // a cluster-aligned size: inside a partial cluster qemu itself shows old bytes again (a qemu quirk).
  if (size % cs === 0) {
    const grown = Math.max(size + 4 * cs, Math.ceil(largest / cs) * cs);
    commands.push(`truncate ${grown}`, qemuIoCommand({ op: 'write', offset: grown - 512, length: 512, pattern: 0xe3 }));
  }
  return commands;
}

export interface AfterUseObservation {
  /** The qemu-io commands run on both results. */
  workload: string[];
  /** qemu-io exit codes of the workload on each side. */
  referenceExit: number | null;
  subjectExit: number | null;
  subjectStderr: string;
  /** null for a format qemu-img cannot check (raw). */
  subjectCheck: CheckObservation | null;
  referenceCheck: CheckObservation | null;
  compare: CompareObservation;
  /** Where the results stand: the sizes of the last step and the size the workload grew them to,
   * and the subject's structure (which names the clusters qemu-img check complains about). */
  context?: { where: CompareContext; subjectStructure: StructureObservation | null };
}

/** The check and content oracles again, after the workload; findings carry the 'after-use'
 * oracle so that damage seen only after use has a signature of its own. */
export function afterUseOracle(o: AfterUseObservation): Finding[] {
  if (o.referenceExit !== o.subjectExit) {
    return [
      {
        oracle: 'after-use',
        kind: 'workload-failed',
        side: o.subjectExit === 0 ? 'reference' : 'subject',
        detail:
          `reference=${o.referenceExit === 0 ? 'ok' : 'failed'},subject=${o.subjectExit === 0 ? 'ok' : 'failed'}` +
          (o.subjectExit === 0 ? '' : `,${normaliseMessage(o.subjectStderr) || 'no message'}`),
        message:
          `the same qemu-io workload exited ${o.referenceExit} on qemu's result ` +
          `and ${o.subjectExit} on the subject's`,
        evidence: { workload: o.workload, subjectStderr: o.subjectStderr },
      },
    ];
  }
  const x = o.context;
  const checked = o.subjectCheck
    ? checkOracle(o.subjectCheck, o.referenceCheck, { subject: x?.subjectStructure ?? null, reference: null })
    : [];
  const compared = contentOracle(o.compare, null, x?.where ?? null);
  return [...checked, ...compared].map((f) => ({
    ...f,
    oracle: 'after-use' as const,
    message: `after the same qemu-io workload on both results: ${f.message}`,
    evidence: { workload: o.workload, ...(f.evidence as object | undefined) },
  }));
}

import { isConverted, type Case, type IoOp } from '../model/case.ts';
import type { StructureObservation } from '../qcow2/structure.ts';
import { qemuIoCommand } from '../model/commands.ts';
import { checkOracle, type CheckObservation } from './check.ts';
import { contentOracle, type CompareContext, type CompareObservation } from './content.ts';
import { firstLine, normaliseMessage } from './message.ts';
import type { Finding } from './finding.ts';

// Some damage only shows when the image is used again: a wrong refcount makes the next allocation
// overwrite live data, stale L2 entries past a shrink come back when the image grows, a grown vmdk
// whose new grain directory entries are empty fails the next write there. When both sides
// succeeded, the same qemu-io workload runs on both results; each command's outcome is compared
// (a failure both sides share is no difference), then check and compare again.

/** What each command of the workload is for; a failed command is named by it. */
export type WorkloadRole = 'write-new-end' | 'rewrite-data' | 'discard-start' | 'grow' | 'write-past-old-end';

export interface WorkloadCommand {
  role: WorkloadRole;
  /** The qemu-io command, without -q: each write and discard prints a line that says how it went. */
  command: string;
}

const io = (op: IoOp) => qemuIoCommand(op).replace(' -q', '');

/** The workload for results of virtual size `size`, from the case and `largest`, the largest size
 * qemu's result had over the steps (observed); reports keep it, and repro.sh runs it as kept. Only
 * what qemu can do on the format: it resizes no vhdx, vmdk or vpc, and rewrites no allocated grain
 * of a streamOptimized vmdk (it appends only). */
export function afterUseWorkload(c: Case, size: number, largest: number): WorkloadCommand[] {
  const cs = c.image.clusterSize;
  const align = (n: number) => Math.floor(n / 512) * 512;
  const out: WorkloadCommand[] = [];
  // fresh clusters at the new end
  const endStart = Math.max(0, align(size - 2 * cs));
  const fresh = { op: 'write' as const, offset: endStart, length: Math.min(size - endStart, 2 * cs, 256 * 1024) };
  out.push({ role: 'write-new-end', command: io({ ...fresh, pattern: 0xe1 }) });
  // a rewrite of data the case wrote, where it is still inside the image
  const kept = c.data.find((d): d is Extract<IoOp, { op: 'write' }> => d.op === 'write' && d.offset + d.length <= size);
  if (kept && c.image.options?.subformat !== 'streamOptimized')
    out.push({ role: 'rewrite-data', command: io({ ...kept, pattern: 0xe2 }) });
  // a whole-cluster discard (qemu ignores partial ones)
  if (size >= cs) out.push({ role: 'discard-start', command: io({ op: 'discard', offset: 0, length: cs }) });
  // grow past the end and write there: discarded data must not come back. The grow covers at least
  // four clusters and every size the image had before, so all a shrink discarded is read again
  // (data left past the new end, in the image or in an external data file, shows there). Only from
  // a cluster-aligned size: inside a partial cluster qemu itself shows old bytes again (a qemu quirk).
  if (size % cs === 0 && !isConverted(c.image.format)) {
    const grown = Math.max(size + 4 * cs, Math.ceil(largest / cs) * cs);
    out.push({ role: 'grow', command: `truncate ${grown}` });
    const past = { op: 'write' as const, offset: grown - 512, length: 512, pattern: 0xe3 };
    out.push({ role: 'write-past-old-end', command: io(past) });
  }
  return out;
}

/** The size a workload grows the results to, or null when it does not grow them. */
export const workloadGrowth = (workload: WorkloadCommand[]): number | null => {
  const grow = workload.find((w) => w.role === 'grow');
  return grow ? Number(grow.command.split(' ')[1]) : null;
};

/** How one command went on one side: ok, or failed with the line qemu-io said it with. */
export type CommandOutcome = { ok: true } | { ok: false; said: string };

/** Each write's and discard's outcome from qemu-io's stdout (without -q): `wrote L/L bytes at offset
 * O` and `discard ...` when it went, `write failed: ...` and `discard failed: ...` when not, in
 * command order. A truncate prints nothing: its outcome is the size the image has afterwards
 * (`sizeAfter`, null where it could not be read). */
export function workloadOutcomes(
  workload: WorkloadCommand[],
  stdout: string,
  stderr: string,
  sizeAfter: number | null,
): CommandOutcome[] {
  const events = stdout.split('\n').filter((l) => /^(wrote |write failed|discard |discard failed)/.test(l));
  let next = 0;
  return workload.map(({ command }) => {
    if (command.startsWith('truncate ')) {
      const target = Number(command.split(' ')[1]);
      if (sizeAfter !== null && sizeAfter >= target) return { ok: true };
      const said = stderr.split('\n').find((l) => l.trim() !== '') ?? `the size is ${sizeAfter}, not ${target}`;
      return { ok: false, said: said.trim() };
    }
    // no line at all: qemu-io stopped before the command (it could not open the image, say)
    const event = events[next++] ?? (firstLine(stderr) || 'no output');
    return /^(wrote|discard) \d/.test(event) ? { ok: true } : { ok: false, said: event };
  });
}

/** qemu-io's stdout without its timing lines (`64 KiB, 1 ops; 00.00 sec (...)`), which differ from
 * run to run: what a report keeps. */
export const withoutTimings = (stdout: string) =>
  stdout
    .split('\n')
    .filter((l) => !/ ops; \d+\.\d+ sec /.test(l))
    .join('\n');

export interface AfterUseObservation {
  /** The qemu-io commands run on both results, and how each went on each side. */
  workload: WorkloadCommand[];
  reference: CommandOutcome[];
  subject: CommandOutcome[];
  /** null for a format qemu-img cannot check (raw). */
  subjectCheck: CheckObservation | null;
  referenceCheck: CheckObservation | null;
  compare: CompareObservation;
  /** Where the results stand: the sizes of the last step and the size the workload grew them to,
   * and the subject's structure (which names the clusters qemu-img check complains about). */
  context?: {
    where: CompareContext;
    subjectStructure: StructureObservation | null;
    /** The subject's result before the workload: what the clusters it leaked had been. */
    subjectBefore?: StructureObservation | null;
  };
}

/** The check and content oracles again, after the workload; findings carry the 'after-use'
 * oracle so that damage seen only after use has a signature of its own. */
export function afterUseOracle(o: AfterUseObservation): Finding[] {
  // the first command that went one way on one side and the other way on the other
  const at = o.workload.findIndex((_, i) => o.reference[i]?.ok !== o.subject[i]?.ok);
  if (at >= 0) {
    const { role, command } = o.workload[at]!;
    const side = o.subject[at]!.ok ? 'reference' : 'subject';
    const failed = (side === 'subject' ? o.subject[at] : o.reference[at]) as Extract<CommandOutcome, { ok: false }>;
    return [
      {
        oracle: 'after-use',
        kind: 'workload-failed',
        side,
        detail: `${role}:${normaliseMessage(failed.said) || 'failed'}`,
        message:
          `the same qemu-io workload's ${role} (\`${command}\`) failed on the ` +
          `${side === 'subject' ? "subject's" : "qemu's"} result only: ${failed.said}`,
        evidence: {
          workload: o.workload.map((w) => w.command),
          roles: o.workload.map((w) => w.role),
          reference: o.reference,
          subject: o.subject,
        },
      },
    ];
  }
  const x = o.context;
  const checked = o.subjectCheck
    ? checkOracle(o.subjectCheck, o.referenceCheck, {
        subject: x?.subjectStructure ?? null,
        reference: null,
        subjectBefore: x?.subjectBefore ?? null,
      })
    : [];
  const compared = contentOracle(o.compare, null, x?.where ?? null);
  return [...checked, ...compared].map((f) => ({
    ...f,
    oracle: 'after-use' as const,
    message: `after the same qemu-io workload on both results: ${f.message}`,
    evidence: { workload: o.workload.map((w) => w.command), ...(f.evidence as object | undefined) },
  }));
}

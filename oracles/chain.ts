import type { ChainRole } from '../model/layout.ts';
import { isClean, type CheckObservation } from './check.ts';

export type { ChainRole };
import type { Finding } from './finding.ts';

// The chain oracle: after a commit or a rebase, every file of the chain below the top on each side
// (its parent, a grandparent, an image built to rebase onto) against qemu's result's same file:
// present, the same guest content read through its own chain, checking clean where qemu's does,
// naming the same backing (a finding's detail says whether it is the member the step writes into,
// `written`, or another, `other`); and the top image alone (read without its backing), which a commit
// empties or keeps. The top read through its chain is the content oracle's, as for every step.

/** The output of a `qemu-img compare` (exit 0: the same, 1: different, other: it could not read). */
export interface CompareRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

export interface ChainMemberObservation {
  file: string;
  role: ChainRole;
  /** The member the step writes into (a commit's base); absent in older observations: false. */
  written?: boolean;
  present: { reference: boolean; subject: boolean };
  /** Byte for byte the same file on both sides (but for naming its own directory by absolute
   * path): nothing more was read. */
  identical: boolean;
  /** The two members compared, each read through its own chain (where not identical). */
  compare?: CompareRun;
  /** Its own backing was gone on both sides: compared and checked alone, without it. */
  readAlone?: boolean;
  /** qemu-img check of a qcow2 member (where not identical); qemu's only where the subject's is
   * not clean. */
  subjectCheck?: CheckObservation;
  referenceCheck?: CheckObservation | null;
  /** The backing name each side's member stores (qcow2 members, where not identical). */
  backing?: { reference: string | null; subject: string | null };
}

export interface ChainObservation {
  members: ChainMemberObservation[];
  /** The two tops compared alone, each without its backing. */
  topAlone: CompareRun | null;
  /** Guest clusters the top itself maps, on each side (from the structure read): whether a top
   * that reads otherwise alone was emptied where qemu's kept its data, or kept where qemu's was
   * emptied. Absent where not read. */
  topAllocated?: { reference: number; subject: number };
}

/** How the subject's top differs alone: fewer clusters of its own than qemu's (emptied), more
 * (kept), or as many. */
function topDetail(o: ChainObservation): string {
  const a = o.topAllocated;
  if (!a || a.subject === a.reference) return '';
  return a.subject < a.reference ? 'emptied' : 'kept';
}

const chainFinding = (kind: string, detail: string, message: string, evidence?: unknown): Finding => ({
  oracle: 'chain',
  kind,
  side: 'subject',
  detail,
  message,
  ...(evidence === undefined ? {} : { evidence }),
});

const firstLine = (r: CompareRun) => (r.stdout.trim() || r.stderr.trim()).split('\n')[0] ?? '';

function memberFindings(m: ChainMemberObservation): Finding[] {
  const name = `the ${m.role} (${m.file})`;
  // signatures say whether the member is the one the step writes into: which member a case's chain
  // gave that part is the message's (one bug, whichever member a case's commit went into)
  const place = m.written ? 'written' : 'other';
  // the member's file, for repro.sh: a role has the same file name in every case
  // and whether it was read alone (its backing gone on both sides), for repro.sh to read it so
  const finding = (kind: string, detail: string, message: string, evidence: object = {}) =>
    chainFinding(kind, detail, message, { file: m.file, ...(m.readAlone ? { readAlone: true } : {}), ...evidence });
  if (m.present.reference && !m.present.subject)
    return [finding('member-missing', place, `${name} is gone from the subject's chain; qemu's is there`)];
  if (!m.present.reference && m.present.subject)
    return [finding('member-extra', place, `${name} exists in the subject's chain; qemu left none`)];
  if (m.identical || !m.present.reference) return [];
  const out: Finding[] = [];
  const sub = m.subjectCheck;
  if (sub && !isClean(sub) && !(m.referenceCheck && !isClean(m.referenceCheck))) {
    const report = sub.report;
    const what =
      report === null ? 'unreadable' : report.corruptions ? 'corruptions' : report.leaks ? 'leaks' : 'errors';
    out.push(
      finding(
        'member-check-failed',
        `${place}:${what}`,
        `qemu-img check of ${name} in the subject's chain: exit ${sub.exitCode}, ${what}` +
          (report ? ` (corruptions ${report.corruptions ?? 0}, leaks ${report.leaks ?? 0})` : `: ${sub.stderr.trim()}`),
        { subject: sub, reference: m.referenceCheck ?? null },
      ),
    );
  }
  if (m.backing && m.backing.reference !== m.backing.subject)
    out.push(
      finding(
        'member-backing-differs',
        place,
        `${name} names ${JSON.stringify(m.backing.subject)} as its backing in the subject's chain, ` +
          `qemu's ${JSON.stringify(m.backing.reference)}`,
      ),
    );
  if (m.compare && m.compare.exitCode !== 0)
    out.push(
      m.compare.exitCode === 1
        ? finding('member-content-differs', place, `${name} reads differently from qemu's: ${firstLine(m.compare)}`)
        : finding('member-unreadable', place, `${name} could not be compared with qemu's: ${firstLine(m.compare)}`),
    );
  return out;
}

export function chainOracle(o: ChainObservation): Finding[] {
  const out = o.members.flatMap(memberFindings);
  const top = o.topAlone;
  if (top && top.exitCode !== 0)
    out.push(
      top.exitCode === 1
        ? chainFinding(
            'top-alone-differs',
            topDetail(o),
            `the top image alone (without its backing) holds other data than qemu's: ${firstLine(top)}` +
              (o.topAllocated
                ? `; it maps ${o.topAllocated.subject} clusters of its own, qemu's ${o.topAllocated.reference}`
                : ''),
          )
        : chainFinding('member-unreadable', 'top', `the top image alone could not be compared: ${firstLine(top)}`),
    );
  return out;
}

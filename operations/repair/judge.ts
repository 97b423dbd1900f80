import type { CommandRecord } from '../../model/commands.ts';
import type { OutputMode } from '../../model/case.ts';
import type { Finding } from '../../oracles/finding.ts';
import { normaliseMessage } from '../../oracles/message.ts';
import { classifyOutcome } from '../../oracles/outcome.ts';
import { REPAIR_EXITS, type RepairTier } from './step.ts';

// The repair oracle: what a repair says of its own result, against qemu-img's. The exit code is
// qemu's verdict after its re-check (0 clean, 2 corruptions remain, 3 only leaks remain) and must
// be the same; with the same exit code, a JSON report must count what remains as qemu's does (qemu-img prints a zero
// counter not at all; instar always, and its own keys besides). A repair's words are each tool's
// own ("The following inconsistencies were found and repaired" against "Repaired N leaked
// cluster(s)"): only -q must print nothing. What the repaired images are is the other oracles'
// (check, structure, content, info).

export interface RepairObservation {
  tier: RepairTier;
  /** What the subject was asked to print (qemu-img: always JSON). */
  output: OutputMode;
  reference: CommandRecord;
  subject: CommandRecord;
}

/** A check that ran to its verdict: not killed, not failed. */
const ran = (r: CommandRecord) => classifyOutcome(r, REPAIR_EXITS) === 'ok';

const EXIT_MEANING: Record<number, string> = { 0: 'clean', 2: 'corruptions remain', 3: 'leaks remain' };

/** The counters a check report gives of what remains; a missing one is zero. null: not JSON. */
export function remainingCounts(stdout: string): { corruptions: number; leaks: number } | null {
  try {
    const report = JSON.parse(stdout) as Record<string, unknown>;
    if (typeof report !== 'object' || report === null || Array.isArray(report)) return null;
    const count = (k: string) => (typeof report[k] === 'number' ? (report[k] as number) : 0);
    return { corruptions: count('corruptions'), leaks: count('leaks') };
  } catch {
    return null;
  }
}

export function repairOracle(o: RepairObservation): Finding[] {
  if (!ran(o.reference) || !ran(o.subject)) return [];
  const base = { oracle: 'repair' as const, side: 'subject' as const };
  const evidence = {
    tier: o.tier,
    referenceExit: o.reference.exitCode,
    subjectExit: o.subject.exitCode,
    referenceStdout: o.reference.stdout,
    subjectStdout: o.subject.stdout,
  };
  const out: Finding[] = [];
  const [ref, sub] = [o.reference.exitCode!, o.subject.exitCode!];
  const exitDiffers = ref !== sub;
  if (exitDiffers)
    out.push({
      ...base,
      kind: 'exit-differs',
      detail: `tier=${o.tier},qemu=${ref},subject=${sub}`,
      message:
        `after a repair of tier ${o.tier} qemu-img exits ${ref} (${EXIT_MEANING[ref]}) ` +
        `and the subject ${sub} (${EXIT_MEANING[sub]})`,
      evidence,
    });
  if (o.output === 'quiet') {
    if (o.subject.stdout.trim() !== '')
      out.push({
        ...base,
        kind: 'quiet-printed',
        detail: normaliseMessage(o.subject.stdout),
        message: `the subject printed ${JSON.stringify(o.subject.stdout.slice(0, 200))} with -q`,
        evidence,
      });
    return out;
  }
  if (o.output !== 'json') return out;
  const expected = remainingCounts(o.reference.stdout);
  const said = remainingCounts(o.subject.stdout);
  if (said === null) {
    const printed = JSON.stringify(o.subject.stdout.slice(0, 200));
    const message = `the subject's --output json is not a JSON object: ${printed}`;
    return [...out, { ...base, kind: 'json-invalid', detail: 'not-an-object', message, evidence }];
  }
  if (expected === null) return out;
  // counts that differ where the exit codes do are the same verdict said twice: one finding
  const wrong = (['corruptions', 'leaks'] as const).filter((k) => said[k] !== expected[k]);
  if (wrong.length > 0 && !exitDiffers)
    out.push({
      ...base,
      kind: 'counts-differ',
      detail: `tier=${o.tier},${wrong.join(',')}`,
      message:
        `the subject's JSON report counts ${wrong.map((k) => `${said[k]} ${k}`).join(' and ')} remaining ` +
        `where qemu-img counts ${wrong.map((k) => `${expected[k]}`).join(' and ')}`,
      evidence,
    });
  return out;
}

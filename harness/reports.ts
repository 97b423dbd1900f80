import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createOptions, type Case } from './case.ts';
import type { CaseResult, StepFinding } from './execute.ts';
import type { CommandRecord } from './process.ts';
import { reproScript, shellQuote } from './repro.ts';
import type { Resizer } from './subjects.ts';
import { signatureOf } from '../oracles/finding.ts';

// One folder per signature. A new signature gets report.json, report.md, repro.sh and the images;
// another hit of it only bumps the counter. Files are written under a temporary name and renamed,
// so a harness killed at any moment never leaves a half-written report.

export interface Origin {
  /** null for a replayed case. */
  seed: number | null;
  iteration: number | null;
  date: string;
}

export interface Report {
  formatVersion: 1;
  signature: string;
  finding: StepFinding;
  hits: number;
  firstSeen: Origin;
  lastSeen: Origin;
  case: Case;
  subject: Resizer;
  tools: { qemuImg: string; subject: string };
  /** Every finding of the case, the primary one first. */
  findings: StepFinding[];
  steps: CaseResult['steps'];
  commands: CommandRecord[];
}

export const folderName = (f: StepFinding) =>
  `${f.side}-${f.oracle}-${f.kind}-${createHash('sha256').update(signatureOf(f)).digest('hex').slice(0, 10)}`.replace(/[^\w.-]/g, '_');

export async function writeAtomic(file: string, data: string | Buffer) {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, file);
}

const originText = (o: Origin) => (o.seed === null ? `replay on ${o.date}` : `seed ${o.seed}, iteration ${o.iteration}, ${o.date}`);

function markdown(r: Report, folder: string): string {
  const c = r.case;
  const f = r.finding;
  const step = (i: number) => c.steps[i]!;
  const lines = [
    `# ${f.side === 'reference' ? 'qemu-img (reference) behaviour' : 'Divergence'}: ${f.message}`,
    '',
    `- signature: \`${r.signature}\``,
    `- oracle: ${f.oracle}, kind: ${f.kind}, side: ${f.side}, at step ${f.step + 1} of ${c.steps.length}`,
    `- hits: ${r.hits}; first seen ${originText(r.firstSeen)}`,
    `- tools: ${r.tools.qemuImg}; subject: ${r.tools.subject}`,
    '',
    '## Reproduce',
    '',
    '```',
    r.subject.dialect === 'instar' ? 'INSTAR=/path/to/instar bash repro.sh        # exit 1: reproduces' : 'bash repro.sh        # control run: qemu-img on both sides',
    `npm run fuzz -- --replay reports/${folder}${r.subject.dialect === 'instar' ? ' --instar /path/to/instar' : ' --control'}`,
    '```',
    '',
    '## Case',
    '',
    `- image: qcow2, virtual size ${c.image.virtualSize} bytes, \`-o ${createOptions(c.image)}\``,
    `- image features: compression ${c.image.compressionType}, ${c.image.bitmaps} bitmaps${c.image.dirty ? ', dirty' : ''}${c.image.createdWithRefcountBits !== null ? `, created with refcount_bits=${c.image.createdWithRefcountBits} then amended` : ''}`,
    `- data: ${c.data.length === 0 ? 'none' : c.data.map((d) => `\`${'offset' in d ? `${d.op} ${d.offset}+${d.length}` : `${d.op} ${d.name}`}\``).join(', ')}`,
    ...r.steps.map(
      (s) =>
        `- step ${s.index + 1}: \`${step(s.index).size}\`${step(s.index).shrink ? ' --shrink' : ''}${step(s.index).preallocation ? ` --preallocation=${step(s.index).preallocation}` : ''} (${s.plan.kind}, from ${s.sizeBefore}): qemu-img ${s.reference}, subject ${s.subject}`,
    ),
    '',
    '## Findings',
    '',
    ...r.findings.map((x) => `- step ${x.step + 1}, ${x.oracle}/${x.kind} (${x.side}): ${x.message}`),
    '',
    '## Commands',
    '',
    ...r.commands.map((cmd) => `- \`${cmd.argv.map(shellQuote).join(' ')}\` → ${cmd.timedOut ? 'timed out' : cmd.signal ?? `exit ${cmd.exitCode}`}${cmd.stderr.trim() ? `\n  stderr: ${cmd.stderr.trim().split('\n').join('\n  ')}` : ''}`),
    '',
    'Images (gzip): `base.qcow2.gz` (before any step), `reference.qcow2.gz` and `subject.qcow2.gz` (after the last step run).',
    '',
  ];
  return lines.join('\n');
}

export interface FileInput {
  finding: StepFinding;
  findings: StepFinding[];
  case: Case;
  result: CaseResult;
  subject: Resizer;
  tools: Report['tools'];
  origin: Origin;
}

/** Files a finding: a new folder for a new signature, or one more hit in the existing one. */
export async function fileReport(reportsDir: string, input: FileInput): Promise<{ folder: string; isNew: boolean; hits: number }> {
  const folder = folderName(input.finding);
  const path = join(reportsDir, folder);
  const existing = await readFile(join(path, 'report.json'), 'utf8').catch(() => null);
  if (existing !== null) {
    const report = JSON.parse(existing) as Report;
    report.hits += 1;
    report.lastSeen = input.origin;
    await writeAtomic(join(path, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
    return { folder, isNew: false, hits: report.hits };
  }
  const report: Report = {
    formatVersion: 1,
    signature: signatureOf(input.finding),
    finding: input.finding,
    hits: 1,
    firstSeen: input.origin,
    lastSeen: input.origin,
    case: input.case,
    subject: input.subject,
    tools: input.tools,
    findings: [input.finding, ...input.findings.filter((f) => f !== input.finding)],
    steps: input.result.steps,
    commands: input.result.commands,
  };
  const staging = join(reportsDir, `.${folder}.tmp-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  await writeFile(join(staging, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(join(staging, 'report.md'), markdown(report, folder));
  await writeFile(join(staging, 'repro.sh'), reproScript({ finding: input.finding, case: input.case, subject: input.subject, origin: originText(input.origin) }));
  await chmod(join(staging, 'repro.sh'), 0o755);
  for (const a of input.result.artifacts) await writeFile(join(staging, a.name), a.data);
  await rename(staging, path);
  return { folder, isNew: true, hits: 1 };
}

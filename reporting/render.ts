import { caseSizeText, chainOf, type Case, type ImageSpec } from '../model/case.ts';
import { chainFileNames } from '../model/layout.ts';
import { operationOf } from '../operations/table.ts';
import { createOptions } from '../model/commands.ts';
import { PICTURE_FILE, reportPicture } from './damage-picture.ts';
import { shellQuote } from './repro.ts';
import type { Origin, Recheck, Report } from './store.ts';

// How a report reads, in one place: the wording of its facts (sightings, confirmation, rechecks,
// the stored case) shared by report.md, issue.md and the index, and report.md itself.

/** `2026-11-26T02:00:46.488Z` -> `2026-11-26 02:00 UTC` (without ` UTC` when `utc` is false, in
 * table cells whose header says UTC); anything unparsable is shown as is. */
export function shortDate(iso: string | null | undefined, utc = true): string {
  if (!iso) return 'unknown date';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${d.toISOString().slice(0, 16).replace('T', ' ')}${utc ? ' UTC' : ''}`;
}

/** Where a sighting came from, without its date. */
export function originWhere(o: Origin): string {
  if (o.corpus !== undefined) return `corpus ${o.corpus}`;
  if (o.seed !== null) return `seed ${o.seed}, iteration ${o.iteration ?? '?'}`;
  return 'replay';
}

/** Where and when a sighting came from. */
export const originText = (o: Origin) => `${originWhere(o)}, ${shortDate(o.date)}`;

/** The steps and data operations of a case. */
export const sizeOf = (c: Case) => ({ steps: c.steps.length, dataOps: c.data.length });

export const confirmationText = (r: Pick<Report, 'confirmation'>) =>
  r.confirmation === null ? 'not confirmed' : `${r.confirmation.reproduced} of ${r.confirmation.runs}`;

/** The latest recheck (by date; among equal dates the last one recorded), or null. */
export const latestRecheck = (r: Pick<Report, 'rechecks'>): Recheck | null =>
  r.rechecks.reduce<Recheck | null>((best, x) => (best === null || x.date >= best.date ? x : best), null);

export function recheckText(r: Pick<Report, 'rechecks'>): string {
  const latest = latestRecheck(r);
  if (latest === null) return 'not rechecked';
  return `${latest.reproduced ? 'reproducing' : 'fixed'} (${shortDate(latest.date)}, ${latest.subjectVersion})`;
}

/** The stored case's size, and how it was shrunk from the generated one. */
export function storedCaseText(r: Pick<Report, 'case' | 'originalCase' | 'minimisation'>): string {
  const size = caseSizeText(sizeOf(r.case));
  const m = r.minimisation;
  if (m === null) return size;
  const how = m.stoppedBy === 'done' ? 'no smaller case reproduces' : `stopped: ${m.stoppedBy}`;
  return `${size}, minimised from ${caseSizeText(sizeOf(r.originalCase))} in ${m.runs} runs (${m.seconds} s, ${how})`;
}

export const isControl = (r: Pick<Report, 'subject'>) => r.subject.dialect === 'qemu-img';

/** The facts of a report as a markdown list: report.md and issue.md both start with these. */
export function factLines(r: Report): string[] {
  const f = r.finding;
  const side =
    f.side === 'reference'
      ? 'reference (qemu-img itself)'
      : `subject${isControl(r) ? ' (control run: qemu-img on both sides)' : ''}`;
  const confirmation = r.confirmation
    ? `reproduced in ${r.confirmation.reproduced} of ${r.confirmation.runs} re-runs in fresh directories` +
      (r.flaky ? ' (flaky: it does not reproduce every time)' : '')
    : 'not confirmed';
  return [
    `- signature: ${inlineCode(r.signature)}`,
    `- side: ${side}; oracle: ${f.oracle}; kind: ${f.kind}; at step ${f.step + 1} of ${r.case.steps.length}`,
    `- hits: ${r.hits}; first seen ${originText(r.firstSeen)}; last seen ${originText(r.lastSeen)}`,
    `- confirmation: ${confirmation}`,
    `- latest recheck: ${recheckText(r)}`,
    `- stored case: ${storedCaseText(r)}`,
    `- tools: ${r.tools.qemuImg}; subject: ${r.tools.subject}`,
  ];
}

/** How to reproduce a report: its repro.sh alone, and a replay from a checkout of the fuzzer. */
export function reproduceCommands(r: Report, folder: string): { repro: string; replay: string } {
  const control = isControl(r);
  return {
    repro: control
      ? 'bash repro.sh        # exit 1: it reproduces'
      : 'INSTAR=/path/to/instar bash repro.sh        # exit 1: it reproduces',
    replay: `npm run fuzz -- --replay reports/${folder}${control ? ' --control' : ' --instar /path/to/instar'}`,
  };
}

/** An inline code span that survives backticks in its text. */
export function inlineCode(s: string): string {
  const run = Math.max(0, ...(s.match(/`+/g) ?? []).map((x) => x.length));
  const fence = '`'.repeat(run + 1);
  const pad = run > 0 ? ' ' : '';
  return `${fence}${pad}${s.replace(/\r?\n/g, ' ')}${pad}${fence}`;
}

/** A fenced block that the text cannot close: its fence is longer than any run of backticks in it. */
export function codeBlock(lang: string, text: string): string {
  const fence = '`'.repeat(Math.max(3, ...(text.match(/`+/g) ?? []).map((r) => r.length + 1)));
  return `${fence}${lang}\n${text.replace(/\n$/, '')}\n${fence}`;
}

const stepText = (c: Case, s: Report['steps'][number]) => {
  const step = c.steps[s.index]!;
  return (
    `- step ${s.index + 1}: \`${operationOf(step).describe(step)}\` (${s.plan.kind}, from ${s.sizeBefore}): ` +
    `qemu-img ${s.reference}, subject ${s.subject}`
  );
};

const commandText = (cmd: Report['commands'][number]) => {
  const outcome = cmd.timedOut ? 'timed out' : (cmd.signal ?? `exit ${cmd.exitCode}`);
  const stderr = cmd.stderr.trim() ? `\n  stderr: ${cmd.stderr.trim().split('\n').join('\n  ')}` : '';
  return `- \`${cmd.argv.map(shellQuote).join(' ')}\` → ${outcome}${stderr}`;
};

/** The image of a case, in a line or two: an image that is not qcow2 has only its size and its
 * create options. */
function imageLines(image: ImageSpec, features: string[]): string[] {
  const options = createOptions(image);
  const created = options === '' ? '' : `, \`-o ${options}\``;
  const line = `- image: ${image.format}, virtual size ${image.virtualSize} bytes${created}`;
  return image.format !== 'qcow2' ? [line] : [line, `- image features: ${features.join(', ')}`];
}

/** One line per level of the image's backing chain, parent first: where it is, how it was made,
 * how the level above names it and what was written into it. */
function chainLines(image: ImageSpec): string[] {
  const levels = chainOf(image);
  const paths = chainFileNames(levels);
  return levels.map((b, i) => {
    const options =
      b.format === 'qcow2' ? `, cluster size ${b.clusterSize ?? 65536}, refcount_bits ${b.refcountBits ?? 16}` : '';
    const named = b.absolute ? ', named by its absolute path' : '';
    const data = b.data.map((d) => `\`write ${d.offset}+${d.length}\``).join(', ') || 'none';
    const level = `${i === 0 ? 'parent' : 'grandparent'} \`${paths[i]}\``;
    return `- ${level}: ${b.format}, virtual size ${b.virtualSize} bytes${options}${named}; data: ${data}`;
  });
}

/** report.md: the report for people. */
export function reportMarkdown(r: Report, folder: string): string {
  const c = r.case;
  const f = r.finding;
  const { repro, replay } = reproduceCommands(r, folder);
  const features = [
    `compression ${c.image.compressionType}`,
    `${c.image.bitmaps + c.data.filter((d) => d.op === 'bitmap-add').length} bitmaps`,
    ...(c.image.dirty ? ['dirty'] : []),
    ...(c.image.createdWithRefcountBits !== null
      ? [`created with refcount_bits=${c.image.createdWithRefcountBits} then amended`]
      : []),
  ];
  const dataOp = (d: Case['data'][number]) =>
    'offset' in d ? `${d.op} ${d.offset}+${d.length}` : d.op === 'damage' ? `damage ${d.kind}` : `${d.op} ${d.name}`;
  const data = c.data.map((d) => `\`${dataOp(d)}\``);
  return [
    `# ${f.side === 'reference' ? 'qemu-img (reference) behaviour' : 'Divergence'}: ${f.message}`,
    '',
    ...factLines(r),
    '',
    '## Reproduce',
    '',
    codeBlock('', `${repro}\n${replay}`),
    '',
    '## Case',
    '',
    ...imageLines(c.image, features),
    ...chainLines(c.image),
    `- data: ${data.length === 0 ? 'none' : data.join(', ')}`,
    // what each damage hit in the built image, as the run wrote it (repro.sh writes the same bytes)
    ...(r.damage ?? []).map((d) => `- damage written: ${d.kind}, ${d.hit ?? 'no place for it in this image'}`),
    ...r.steps.map((s) => stepText(c, s)),
    '',
    '## Findings',
    '',
    ...r.findings.map((x) => `- step ${x.step + 1}, ${x.oracle}/${x.kind} (${x.side}): ${x.message}`),
    '',
    // both results' host clusters, the ones the oracles name marked (damage-picture.ts)
    ...(reportPicture(r) === null
      ? []
      : ['## The damage', '', `![host clusters of both results, damage marked](${PICTURE_FILE})`, '']),
    '## Commands',
    '',
    ...r.commands.map(commandText),
    '',
    `Images (gzip): \`base.${c.image.format}.gz\` (before any step), ` +
      `\`reference.${c.image.format}.gz\` and \`subject.${c.image.format}.gz\` (after the last step run).`,
    '',
  ].join('\n');
}

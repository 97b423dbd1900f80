import { createArgs, plannedSizes, qemuIoArgs, type Case } from './case.ts';
import { BASE, REFERENCE, SUBJECT } from './execute.ts';
import { qemuImg, resizeArgs, type Resizer } from './subjects.ts';
import { signatureOf, type Finding } from '../oracles/finding.ts';

// repro.sh is what maintainers paste into a bug tracker: standalone bash that needs only qemu-img,
// qemu-io, $INSTAR and coreutils. It rebuilds the base image, runs every step on both sides and,
// at the step that diverged, runs the one oracle that fired and shows its evidence.

/** Single-quotes a word for bash: safe for spaces, quotes, $ and newlines. */
export const shellQuote = (word: string) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`);
const command = (words: string[]) => words.map(shellQuote).join(' ');

const PRELUDE = String.raw`set -u
INSTAR=${'$'}{INSTAR:-instar}
TIMEOUT=${'$'}{TIMEOUT:-30}
work=$(mktemp -d) || exit 2
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 2
# outcome class of an exit status from timeout(1): 124 timed out, above 128 killed by a signal
outcome() { case $1 in 0) echo ok ;; 124) echo timed-out ;; *) if [ "$1" -gt 128 ]; then echo crashed; else echo refused; fi ;; esac; }
fields() { qemu-img info --output=json "$1" | grep -E "$2"; }`;

/** The shell test that decides whether the finding reproduced; it sets reproduced=1 if so. */
function verdict(f: Finding): string[] {
  const image = f.side === 'subject' ? SUBJECT : REFERENCE;
  switch (f.oracle) {
    case 'outcome': {
      if (f.kind === 'outcome-mismatch') {
        const [, ref, sub] = /reference=([\w-]+),subject=([\w-]+)/.exec(f.detail) ?? [];
        return [`[ "$ref" = ${ref} ] && [ "$sub" = ${sub} ] && reproduced=1`];
      }
      return [`[ "$${f.side === 'subject' ? 'sub' : 'ref'}" = ${f.kind} ] && reproduced=1`];
    }
    case 'unchanged-on-refusal':
      return [`if ! cmp -s before.qcow2 ${image}; then echo "${image} changed although the resize was refused"; reproduced=1; fi`];
    case 'check': {
      const want = { corruptions: '2', leaks: '3', 'check-errors': '1', 'check-failed': '1' }[f.kind] ?? '1';
      const lines = [`qemu-img check ${image}; check=$?`, `[ "$check" = ${want} ] && reproduced=1`];
      // leaks count only where qemu's own result has none
      if (f.kind === 'leaks') lines.push(`qemu-img check -q ${REFERENCE} || reproduced=0`);
      return lines;
    }
    case 'info': {
      const pattern = shellQuote(`"(${f.detail.split(',').join('|')})":`);
      return [
        `fields ${REFERENCE} ${pattern} >reference.fields; fields ${SUBJECT} ${pattern} >subject.fields`,
        `if ! diff -u reference.fields subject.fields; then reproduced=1; fi`,
      ];
    }
    case 'content':
      if (f.kind === 'size-differs') return [`if ! diff -u <(fields ${REFERENCE} '"virtual-size":') <(fields ${SUBJECT} '"virtual-size":'); then reproduced=1; fi`];
      return [`qemu-img compare -f qcow2 -F qcow2 ${REFERENCE} ${SUBJECT}; [ $? = ${f.kind === 'content-differs' ? 1 : 2} ] && reproduced=1`];
  }
}

export interface ReproInput {
  finding: Finding & { step: number };
  case: Case;
  subject: Resizer;
  origin: string;
}

export function reproScript({ finding, case: c, subject, origin }: ReproInput): string {
  const subjectProgram = subject.dialect === 'instar' ? '"$INSTAR"' : 'qemu-img';
  const lines = [
    '#!/usr/bin/env bash',
    `# Reproduces: ${signatureOf(finding)}`,
    `# ${finding.message.replace(/\n/g, ' ')}`,
    `# Found by the instar resize fuzzer (${origin}).`,
    subject.dialect === 'instar'
      ? '# Needs qemu-img, qemu-io and instar: INSTAR=/path/to/instar bash repro.sh'
      : '# Found in a control run: qemu-img is on both sides, so this is a harness bug.',
    '# Exit 1: it reproduces. Exit 0: it does not. Exit 2: the image could not be built.',
    PRELUDE,
    '',
    `${command(['qemu-img', ...createArgs(c.image, BASE)])} || exit 2`,
  ];
  const fill = qemuIoArgs(c.data, BASE);
  if (fill) lines.push(`${command(['qemu-io', ...fill])} >/dev/null || exit 2`);
  lines.push(`cp ${BASE} ${REFERENCE} && cp ${BASE} ${SUBJECT} || exit 2`);
  for (const [index, { plan }] of plannedSizes(c).slice(0, finding.step + 1).entries()) {
    const step = c.steps[index]!;
    const last = index === finding.step;
    lines.push('', `echo '== step ${index + 1}: resize to ${step.size} (${plan.kind})'`);
    if (last && finding.oracle === 'unchanged-on-refusal') lines.push(`cp ${finding.side === 'subject' ? SUBJECT : REFERENCE} before.qcow2`);
    lines.push(
      `timeout -k 5 "$TIMEOUT" ${command(['qemu-img', ...resizeArgs(qemuImg, step, REFERENCE)])}; ref=$(outcome $?)`,
      `timeout -k 5 "$TIMEOUT" ${subjectProgram} ${command(resizeArgs(subject, step, SUBJECT))}; sub=$(outcome $?)`,
      `echo "qemu-img: $ref, subject: $sub"`,
    );
  }
  lines.push('', 'reproduced=0', ...verdict(finding), '');
  lines.push(`if [ "$reproduced" = 1 ]; then echo ${shellQuote(`REPRODUCED: ${signatureOf(finding)}`)}; exit 1; fi`);
  lines.push(`echo 'did not reproduce'`, 'exit 0', '');
  return lines.join('\n');
}

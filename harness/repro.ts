import { buildCommands, plannedSizes, type Case } from './case.ts';
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
fields() { qemu-img info -f qcow2 --output=json "$1" | grep -E "$2"; }`;

/** qcow2 magic numbers of header extensions, as od prints them. */
const EXTENSION_MAGIC: Record<string, string> = {
  'feature-name-table': '68 03 f8 57',
  bitmaps: '23 85 28 75',
  'backing-format': 'e2 79 2a ca',
  'external-data-file': '44 41 54 41',
  'full-disk-encryption': '05 37 be 77',
};

/** The structure oracle reads metadata that qemu-img does not show. With a checkout of the fuzzer
 * (FUZZER=DIR) repro.sh runs that oracle itself; without one it shows what od can: the extension
 * magic numbers and refcount_order of both header clusters. */
function structureVerdict(f: Finding): string[] {
  const exact = [
    'if [ -n "${FUZZER:-}" ]; then',
    `  node --import "$FUZZER/node_modules/tsx/dist/loader.mjs" "$FUZZER/harness/structure-cli.ts" ${SUBJECT} ${REFERENCE} ${shellQuote(signatureOf(f))}; [ $? = 1 ] && reproduced=1`,
  ];
  const header = (image: string) => `od -An -tx1 -v -w1 -N 65536 ${image} | tr -d '\n'`;
  const magic = f.detail.split(',').map((name) => EXTENSION_MAGIC[name]);
  let fallback: string[];
  if (f.kind === 'refcount-order-changed') {
    fallback = [`  ref_order=$(od -An -tu1 -j 99 -N 1 ${REFERENCE}); sub_order=$(od -An -tu1 -j 99 -N 1 ${SUBJECT})`, '  echo "refcount_order: qemu-img result $ref_order, subject result $sub_order"', '  [ "$ref_order" != "$sub_order" ] && reproduced=1'];
  } else if (/^extension-(lost|added)$/.test(f.kind) && magic.every(Boolean)) {
    const [has, lacks] = f.kind === 'extension-lost' ? [REFERENCE, SUBJECT] : [SUBJECT, REFERENCE];
    fallback = magic.map((m) => `  ${header(has)} | grep -q ' ${m}' && ! ${header(lacks)} | grep -q ' ${m}' && reproduced=1 && echo 'extension ${m} is in ${has}, not in ${lacks}'`);
  } else {
    fallback = [`  echo 'this structure finding needs the fuzzer: FUZZER=/path/to/fuzzer-checkout bash repro.sh'`, '  exit 2'];
  }
  return [...exact, 'else', ...fallback, 'fi'];
}

const CHECK_KINDS = ['corruptions', 'leaks', 'check-errors', 'check-failed'];

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
      const lines = [`qemu-img check -f qcow2 ${image}; check=$?`, `[ "$check" = ${want} ] && reproduced=1`];
      // leaks count only where qemu's own result has none
      if (f.kind === 'leaks') lines.push(`qemu-img check -q -f qcow2 ${REFERENCE} || reproduced=0`);
      return lines;
    }
    case 'info': {
      const pattern = shellQuote(`"(${f.detail.split(',').join('|')})":`);
      return [
        `fields ${REFERENCE} ${pattern} >reference.fields; fields ${SUBJECT} ${pattern} >subject.fields`,
        `if ! diff -u reference.fields subject.fields; then reproduced=1; fi`,
      ];
    }
    case 'after-use': {
      const { workload } = f.evidence as { workload: string[] };
      const io = (image: string) => command(['qemu-io', '-f', 'qcow2', ...workload.flatMap((w) => ['-c', w]), image]);
      const lines = [
        `echo '== the same qemu-io workload on both results'`,
        `${io(REFERENCE)} >/dev/null; ref_io=$?`,
        `${io(SUBJECT)} >/dev/null; sub_io=$?`,
        'echo "qemu-io exit: qemu-img result $ref_io, subject result $sub_io"',
      ];
      if (f.kind === 'workload-failed') return [...lines, '[ $((ref_io == 0)) != $((sub_io == 0)) ] && reproduced=1'];
      return [...lines, ...verdict({ ...f, oracle: CHECK_KINDS.includes(f.kind) ? 'check' : 'content' })];
    }
    case 'structure':
      return structureVerdict(f);
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
  ];
  for (const cmd of buildCommands(c, BASE)) {
    const words = command([cmd.program, ...cmd.args]);
    // an aborting qemu-io leaves the dirty bit on purpose; its exit status is expected to be 134
    lines.push(cmd.expect === 'abort' ? `${words} >/dev/null 2>&1; [ $? -gt 128 ] || exit 2` : `${words} >/dev/null || exit 2`);
  }
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

import { sparseRawBase, type Case, type ImageSpec } from '../model/case.ts';
import {
  BUILD_ATTEMPTS,
  buildCommands,
  compareArgs,
  compareFilesArgs,
  openImage,
  qemuImg,
  qemuIoArgs,
  retargetCommands,
  withoutBacking,
  type Resizer,
} from '../model/commands.ts';
import {
  caseLayout,
  chainDirectory,
  chainFileFormat,
  CWD,
  imagePath,
  sideExtras,
  type Layout,
  type SideFiles,
} from '../model/layout.ts';
import { plannedSizes } from '../model/plan.ts';
import { operationOf } from '../operations/table.ts';
import type { AppliedDamage } from '../operations/repair/damage.ts';
import { hasDamage } from '../operations/repair/step.ts';
import { HOST_FACTOR, HOST_SLACK } from '../oracles/allocation.ts';
import { signatureOf, type Finding, type StepFinding } from '../oracles/finding.ts';

// repro.sh is what maintainers paste into a bug tracker: standalone bash that needs only qemu-img,
// qemu-io, $INSTAR and coreutils. It rebuilds the base image, runs every step on both sides and,
// at the step that diverged, runs the one oracle that fired and shows its evidence.

/** Single-quotes a word for bash: safe for spaces, quotes, $ and newlines. */
export const shellQuote = (word: string) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`);
/** A word naming a file by its absolute path in the directory the line runs in (CWD) says $PWD. */
const word = (w: string) =>
  w
    .split(CWD)
    .map((part) => (part === '' ? '' : shellQuote(part)))
    .join('"$PWD"');
const command = (words: string[]) => words.map(word).join(' ');
/** A command line run in a side's directory, when the case gives each side one (an external data
 * file: qemu-img 7.2 resolves its relative name against the working directory, see layout.ts). */
const at = (side: SideFiles, line: string) => (side.dir === '.' ? line : `(cd ${shellQuote(side.dir)} && ${line})`);

// kept short: a minimal case's script is meant to be read whole in a bug tracker
const PRELUDE =
  String.raw`set -u; INSTAR=${'$'}{INSTAR:-instar}; TIMEOUT=${'$'}{TIMEOUT:-30}
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT && cd "$work" || exit 2
# outcome class of an exit status from timeout(1): 124 timed out, above 128 killed by a signal; ok
# for 0 or the step's other accepted statuses (\$2: a repair exits 2 or 3 when damage remains)
outcome() { case " ${'$'}{2:-0} " in *" $1 "*) echo ok; return ;; esac; case $1 in 124) echo timed-out ;; ` +
  String.raw`*) if [ "$1" -gt 128 ]; then echo crashed; else echo refused; fi ;; esac; }`;
/** Only the verdicts on a chain a step may write need it: a file a step's preparation removed (a
 * rebase -u's old backing) must stay gone. */
const SAME = `# two files the same, or both absent
same() { if [ -e "$1" ] || [ -e "$2" ]; then cmp -s "$1" "$2"; fi; }`;
/** Only the verdicts that compare info fields need it: the fields of qemu-img info, and the lines
 * of a vmdk's descriptor (descriptor-extents, adapter-type) that it does not show. */
const fields = (format: string) =>
  format === 'vmdk'
    ? 'fields() { qemu-img info -f vmdk --output=json "$1" | grep -E "$2"; ' +
      `head -c 65536 "$1" | grep -a -o -E '^(RW|RDONLY|NOACCESS) [0-9]+ [A-Z]+|^ddb\\.adapterType.*'; }`
    : `fields() { qemu-img info -f ${format} --output=json "$1" | grep -E "$2"; }`;

/** qcow2 magic numbers of header extensions, as od prints them. */
const EXTENSION_MAGIC: Record<string, string> = {
  'feature-name-table': '68 03 f8 57',
  bitmaps: '23 85 28 75',
  'backing-format': 'e2 79 2a ca',
  'data-file': '44 41 54 41',
  'crypto-header': '05 37 be 77',
};

/** The subject's image right before the step a structure finding judges: what its leaked clusters
 * had been (oracles/refcount-damage.ts). */
const SUBJECT_BEFORE = 'subject-before.img';

/** The structure oracle reads metadata that qemu-img does not show. With a checkout of the fuzzer
 * (FUZZER=DIR) repro.sh runs that oracle itself; without one it shows what od can: the extension
 * magic numbers and refcount_order of both header clusters. */
function structureVerdict(f: Finding, layout: Layout): string[] {
  const [REFERENCE, SUBJECT] = [imagePath(layout.reference), imagePath(layout.subject)];
  // cli/structure.ts judges two images, not a step: its signatures name no operation
  const exact = [
    'if [ -n "${FUZZER:-}" ]; then',
    `  node --import "$FUZZER/node_modules/tsx/dist/loader.mjs" "$FUZZER/cli/structure.ts" ` +
      `${SUBJECT} ${REFERENCE} ${shellQuote(signatureOf({ ...f, operation: undefined }))} ${SUBJECT_BEFORE}; ` +
      '[ $? = 1 ] && reproduced=1',
  ];
  const header = (image: string) => `od -An -tx1 -v -w1 -N 65536 ${image} | tr -d '\n'`;
  const magic = f.detail.split(',').map((name) => EXTENSION_MAGIC[name]);
  let fallback: string[];
  if (f.kind === 'refcount-order-changed') {
    fallback = [
      `  ref_order=$(od -An -tu1 -j 99 -N 1 ${REFERENCE}); sub_order=$(od -An -tu1 -j 99 -N 1 ${SUBJECT})`,
      '  echo "refcount_order: qemu-img result $ref_order, subject result $sub_order"',
      '  [ "$ref_order" != "$sub_order" ] && reproduced=1',
    ];
  } else if (/^extension-(lost|added)$/.test(f.kind) && magic.every(Boolean)) {
    const [has, lacks] = f.kind === 'extension-lost' ? [REFERENCE, SUBJECT] : [SUBJECT, REFERENCE];
    fallback = magic.map(
      (m) =>
        `  ${header(has)} | grep -q ' ${m}' && ! ${header(lacks)} | grep -q ' ${m}' && ` +
        `reproduced=1 && echo 'extension ${m} is in ${has}, not in ${lacks}'`,
    );
  } else {
    fallback = [
      `  echo 'this structure finding needs the fuzzer: FUZZER=/path/to/fuzzer-checkout bash repro.sh'`,
      '  exit 2',
    ];
  }
  return [...exact, 'else', ...fallback, 'fi'];
}

/** The verdict holds only where both sides accepted the step it judges. */
const BOTH_OK = '[ "$ref$sub" = okok ] || reproduced=0';
/** A result the subject made of a step qemu-img refused, judged alone (a vmdk rebase's check). */
const ONLY_SUBJECT_OK = '[ "$ref$sub" = refusedok ] || reproduced=0';

/** A repair's exit status and report against qemu-img's (both printed into ref.out and sub.out). */
function repairVerdict(f: Finding): string[] {
  const shown = ["echo '== what the repairs printed: qemu-img, then the subject'", 'cat ref.out sub.out'];
  if (f.kind === 'exit-differs')
    return ['echo "exit status: qemu-img $rc_ref, subject $rc_sub"', '[ "$rc_ref" != "$rc_sub" ] && reproduced=1'];
  if (f.kind === 'quiet-printed') return [...shown, '[ -s sub.out ] && reproduced=1'];
  if (f.kind === 'json-invalid') return [...shown, "head -c 1 sub.out | grep -q '{' || reproduced=1"];
  // counts-differ: a counter qemu-img leaves out when zero
  const count = (file: string, key: string) => `$(grep -o '"${key}": *[0-9]*' ${file} | grep -o '[0-9]*$' || echo 0)`;
  const keys = f.detail.split(',').filter((k) => k === 'corruptions' || k === 'leaks');
  return [...shown, ...keys.map((k) => `[ "${count('ref.out', k)}" != "${count('sub.out', k)}" ] && reproduced=1`)];
}

/** What the subject printed against what it should have (its stdout is in sub.out). */
function outputVerdict(f: Finding, layout: Layout, format: string): string[] {
  const shown = ["echo '== what the subject printed'", 'cat sub.out'];
  if (f.kind === 'quiet-printed') return [...shown, '[ -s sub.out ] && reproduced=1'];
  // a snapshot listing's dates and clocks differ between the sides, whatever else does
  const plain = (file: string) =>
    `<(sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}/<date>/g; ` +
    `s/[0-9]{2,}:[0-9]{2}:[0-9]{2}[.][0-9]{3}/<clock>/g' ${file})`;
  if (f.kind === 'stdout-differs') return [...shown, `cmp -s ${plain('ref.out')} ${plain('sub.out')} || reproduced=1`];
  if (f.kind === 'json-invalid') return [...shown, "head -c 1 sub.out | grep -q '{' || reproduced=1"];
  const fields = f.detail.split(',');
  if (f.kind === 'json-incomplete') return [...shown, ...fields.map((k) => `grep -q '"${k}"' sub.out || reproduced=1`)];
  // json-wrong: the sizes after the step against the image; the size before and the action, which
  // the case decides, as the wrong value the report gave
  const { stdout } = f.evidence as { stdout?: string };
  const image = imagePath(layout.subject);
  const said = (k: string) => `$(grep -o '"${k}": *[0-9a-z"]*' sub.out | sed 's/.*: *//; s/"//g')`;
  const virtualSize = `qemu-img info -f ${format} --output=json ${image} | grep -o '"virtual-size": *[0-9]*'`;
  const expected: Record<string, string> = {
    new_virtual_size: `$(${virtualSize} | grep -o '[0-9]*$')`,
    new_file_size: `$(stat -c %s ${image})`,
  };
  return [
    ...shown,
    ...fields.map((k) =>
      expected[k]
        ? `[ "${said(k)}" != "${expected[k]}" ] && reproduced=1`
        : `[ "${said(k)}" = ${shellQuote(reportedValue(stdout, k))} ] && reproduced=1`,
    ),
  ];
}

/** A field's value in a JSON report as the subject printed it, for a verdict that it prints the
 * same wrong value again. */
function reportedValue(stdout: string | undefined, key: string): string {
  try {
    return String((JSON.parse(stdout ?? '') as Record<string, unknown>)[key]);
  } catch {
    return '';
  }
}

const CHECK_KINDS = ['corruptions', 'leaks', 'check-errors', 'check-failed'];

/** How qemu-img names a side's image: `-f FORMAT FILE`, or with the key of an encrypted one. */
const opened = (file: string, spec: ImageSpec) => {
  const { options, image } = openImage(file, spec, spec.encrypted);
  return command([...options, image]);
};

/** A chain finding: the member file it names, on both sides (each in its own directory). */
function chainVerdict(f: Finding, layout: Layout, spec: ImageSpec): string[] {
  const { reference: ref, subject: sub } = layout;
  const evidence = f.evidence as { file?: string; readAlone?: boolean } | undefined;
  const file = evidence?.file ?? '';
  const [r, s] = [`${ref.dir}/${file}`, `${sub.dir}/${file}`];
  const format = chainFileFormat(file);
  // a member whose backing is gone on both sides is read alone, as the oracle read it
  const readAlone = evidence?.readAlone === true;
  const leveled = format === 'vmdk' ? 'vmdk' : 'qcow2';
  const member = (path: string) => (readAlone ? shellQuote(withoutBacking(path, leveled)) : `-f ${format} ${path}`);
  const topFormat = spec.format === 'vmdk' ? 'vmdk' : 'qcow2';
  const alone = (side: SideFiles) => shellQuote(withoutBacking(imagePath(side), topFormat));
  switch (f.kind) {
    case 'member-missing':
      return [`[ -e ${r} ] && [ ! -e ${s} ] && reproduced=1`];
    case 'member-extra':
      return [`[ ! -e ${r} ] && [ -e ${s} ] && reproduced=1`];
    case 'member-check-failed':
      return [
        `${at(sub, `qemu-img check ${member(file)}`)}; [ $? != 0 ] && reproduced=1`,
        `${at(ref, `qemu-img check -q ${member(file)}`)} || reproduced=0`,
      ];
    case 'member-backing-differs': {
      // an absolute name with each side's directory taken out
      const name = (side: SideFiles) =>
        `<(${at(side, `qemu-img info --output=json -f ${format} ${file}`)} | grep '"backing-filename":' | ` +
        `sed "s|$PWD/${side.dir}/||")`;
      return [`if ! diff -u ${name(ref)} ${name(sub)}; then reproduced=1; fi`];
    }
    case 'top-alone-differs':
      return [`qemu-img compare ${alone(ref)} ${alone(sub)}; [ $? = 1 ] && reproduced=1`];
    default:
      if (f.detail === 'top') return [`qemu-img compare ${alone(ref)} ${alone(sub)}; [ $? -ge 2 ] && reproduced=1`];
      return [
        `qemu-img compare ${readAlone ? `${member(r)} ${member(s)}` : `-f ${format} -F ${format} ${r} ${s}`}; ` +
          `[ $? ${f.kind === 'member-content-differs' ? '= 1' : '-ge 2'} ] && reproduced=1`,
      ];
  }
}

/** The shell test that decides whether the finding reproduced; it sets reproduced=1 if so. */
function verdict(f: Finding, layout: Layout, spec: ImageSpec): string[] {
  const { reference: ref, subject: sub } = layout;
  const side = f.side === 'subject' ? sub : ref;
  const image = imagePath(side);
  switch (f.oracle) {
    case 'outcome': {
      // a refusal for the same reason prints the same first line (sizes and paths aside)
      if (f.kind === 'refused') return ['[ "$ref" = ok ] && [ "$sub" = refused ] && reproduced=1'];
      if (f.kind === 'accepted') return ['[ "$ref" = refused ] && [ "$sub" = ok ] && reproduced=1'];
      return [`[ "$${f.side === 'subject' ? 'sub' : 'ref'}" = ${f.kind} ] && reproduced=1`];
    }
    case 'size-grammar':
      if (f.kind === 'read-differently')
        return verdict({ ...f, oracle: 'content', kind: 'size-differs' }, layout, spec);
      return verdict({ ...f, oracle: 'outcome' }, layout, spec);
    case 'output':
      return [...outputVerdict(f, layout, spec.format), '[ "$sub" = ok ] || reproduced=0'];
    case 'unchanged-on-refusal': {
      // with a data file or vmdk extent files, a refused step must leave those as they were too
      // a file the step's preparation removed (a rebase -u's old backing) must stay gone
      const data = sideExtras(layout)
        .map((f) => ` || ! ${layout.chain.includes(f) ? 'same' : 'cmp -s'} before.${f} ${side.dir}/${f}`)
        .join('');
      return [
        `if ! cmp -s before.qcow2 ${image}${data}; then ` +
          `echo "${image} changed although the resize was refused"; reproduced=1; fi`,
      ];
    }
    case 'check': {
      const want = { corruptions: '2', leaks: '3', 'check-errors': '1', 'check-failed': '1' }[f.kind] ?? '1';
      const lines = [
        `${at(side, `qemu-img check ${opened(side.image, spec)}`)}; check=$?`,
        `[ "$check" = ${want} ] && reproduced=1`,
      ];
      // leaks count only where qemu's own result has none
      if (f.kind === 'leaks') lines.push(`${at(ref, `qemu-img check -q ${opened(ref.image, spec)}`)} || reproduced=0`);
      return lines;
    }
    case 'info': {
      if (f.kind === 'info-failed')
        return [`${at(side, `qemu-img info ${opened(side.image, spec)}`)} >/dev/null || reproduced=1`];
      const pattern = shellQuote(`"(${f.detail.split(',').join('|')})":`);
      return [
        `${at(ref, `fields ${ref.image} ${pattern}`)} >reference.fields; ` +
          `${at(sub, `fields ${sub.image} ${pattern}`)} >subject.fields`,
        `if ! diff -u reference.fields subject.fields; then reproduced=1; fi`,
      ];
    }
    case 'after-use': {
      const { workload } = f.evidence as { workload: string[] };
      const io = (s: SideFiles) => at(s, command(['qemu-io', ...qemuIoArgs(workload, s.image, spec)]));
      // what each write and discard said: `wrote ...` or `write failed: ...`, in order
      const said = "grep -E '^(wrote|write failed|discard|discard failed)'";
      const lines = [
        `echo '== the same qemu-io workload on both results'`,
        `ref_said=$(${io(ref)} 2>&1); ref_io=$?; ref_said=$(echo "$ref_said" | ${said})`,
        `sub_said=$(${io(sub)} 2>&1); sub_io=$?; sub_said=$(echo "$sub_said" | ${said})`,
        'echo "qemu-io exit: qemu-img result $ref_io, subject result $sub_io"',
      ];
      if (f.kind === 'workload-failed')
        return [
          ...lines,
          'if ! diff <(echo "$ref_said") <(echo "$sub_said"); then reproduced=1; fi',
          '[ $((ref_io == 0)) != $((sub_io == 0)) ] && reproduced=1',
        ];
      const judged = { ...f, oracle: CHECK_KINDS.includes(f.kind) ? ('check' as const) : ('content' as const) };
      return [...lines, ...verdict(judged, layout, spec)];
    }
    case 'structure':
    case 'bitmaps':
      return structureVerdict(f, layout);
    case 'repair':
      return repairVerdict(f);
    case 'chain':
      return chainVerdict(f, layout, spec);
    case 'allocation': {
      if (f.kind === 'host-blow-up') {
        const blocks = (s: SideFiles) => `$(( $(stat -c %b ${imagePath(s)}) * 512 ))`;
        return [
          `ref_bytes=${blocks(ref)}; sub_bytes=${blocks(sub)}`,
          'echo "allocated on the host: qemu-img result $ref_bytes bytes, subject result $sub_bytes"',
          `[ "$sub_bytes" -gt $((ref_bytes * ${HOST_FACTOR})) ] && ` +
            `[ "$sub_bytes" -gt $((ref_bytes + ${HOST_SLACK})) ] && reproduced=1`,
        ];
      }
      if (spec.format === 'raw') {
        // a raw file has no map (SEEK_DATA shows fallocated blocks as holes): its host blocks
        const blocks = (s: SideFiles) => `$(stat -c %b ${imagePath(s)})`;
        return [
          `ref_blocks=${blocks(ref)}; sub_blocks=${blocks(sub)}`,
          'echo "512-byte blocks allocated on the host: qemu-img result $ref_blocks, subject result $sub_blocks"',
          '[ "$sub_blocks" != "$ref_blocks" ] && reproduced=1',
        ];
      }
      // the allocation status of the grown range, as qemu-img map shows it (host offsets aside)
      const { from, to } = f.evidence as { from: number; to: number };
      const range = `--start-offset=${from} --max-length=${to - from}`;
      const map = (s: SideFiles) =>
        `<(${at(s, `qemu-img map --output=json ${range} ${opened(s.image, spec)}`)} | ` +
        `sed -E 's/"(start|length|depth)": [0-9]+, ?//g; s/, ?"offset": [0-9]+//g')`;
      return [`if ! diff -u ${map(ref)} ${map(sub)}; then reproduced=1; fi`];
    }
    case 'in-place': {
      // against what the step began with, captured right before the subject's resize
      if (f.kind === 'files-left') {
        return [
          `left=$(comm -13 <(echo "$before_files") <(ls -A ${sub.dir}))`,
          `if [ -n "$left" ]; then echo "left next to the image: $left"; reproduced=1; fi`,
        ];
      }
      return [
        `after_id=$(stat -c '%i %a %u:%g' ${image} 2>/dev/null || echo missing)`,
        `echo "inode, mode, owner before: $before_id; after: $after_id"`,
        `[ "$after_id" != missing ] && [ "$after_id" != "$before_id" ] && reproduced=1`,
      ];
    }
    case 'content':
      if (f.kind === 'snapshot-content-differs') {
        const size = (file: string) => `fields ${file} '"virtual-size":'`;
        if (f.detail === 'size')
          return [`if ! diff <(${size(SNAPSHOT_COPY)}) <(${at(side, size(side.image))}); then reproduced=1; fi`];
        return [
          `${command(['qemu-img', ...compareFilesArgs(SNAPSHOT_COPY, image, spec)])}; [ $? -ne 0 ] && reproduced=1`,
        ];
      }
      if (f.kind === 'size-differs') {
        // qemu-img info rounds a raw file's length up to whole sectors: the length itself
        const size = (s: SideFiles) =>
          spec.format === 'raw'
            ? `<(stat -c 'length %s' ${imagePath(s)})`
            : `<(${at(s, `fields ${s.image} '"virtual-size":'`)})`;
        return [`if ! diff -u ${size(ref)} ${size(sub)}; then reproduced=1; fi`];
      }
      return [
        `${command(['qemu-img', ...compareArgs(layout, spec)])}; ` +
          // a compare that crashed (an assertion: exit 134) failed as much as one that exits 2
          `[ $? ${f.kind === 'content-differs' ? '= 1' : '-ge 2'} ] && reproduced=1`,
      ];
  }
}

/** The damage a repair case writes after the build, as the run wrote it: its bytes with dd. */
function damageLines(c: Case, damage: readonly AppliedDamage[], image: string): string[] {
  if (!hasDamage(c)) return [];
  if (damage.length === 0)
    return [
      "echo 'this case damages its image: its report.json holds the bytes; re-run the fuzzer to file it'; exit 2",
    ];
  return damage.flatMap((d) => [
    `# damage ${d.kind}: ${d.hit ?? 'no place for it in this image'}`,
    ...d.patches.map((p) =>
      'length' in p
        ? `truncate -s ${p.length} ${image} || exit 2`
        : `printf '${p.hex.replace(/../g, '\\x$&')}' | ` +
          `dd of=${image} bs=1 seek=${p.offset} conv=notrunc status=none || exit 2`,
    ),
  ]);
}

/** The lines that build the base image and give each side its copy. With an external data file
 * each side has a directory of its own (see model/layout.ts): three lines more. */
function buildLines(
  c: Case,
  layout: Layout,
  applied: string | null = null,
  damage: readonly AppliedDamage[] = [],
): string[] {
  const { base, reference, subject } = layout;
  const own = base.dir !== '.';
  const lines = own ? [`mkdir ${base.dir} ${reference.dir} ${subject.dir} && cd ${base.dir} || exit 2`] : [];
  const chainDir = chainDirectory(c);
  if (chainDir) lines.push(`mkdir ${chainDir} || exit 2`);
  let copied = false;
  for (const cmd of buildCommands(c, base.image)) {
    const words = command([cmd.program, ...cmd.args]);
    const n = BUILD_ATTEMPTS;
    // an aborting qemu-io leaves the dirty bit on purpose; its exit status is expected to be 134
    if (cmd.expect === 'abort') lines.push(`${words} >/dev/null 2>&1; [ $? -gt 128 ] || exit 2`);
    // qemu's LUKS create fails now and then for a passing reason (TRANSIENT_FAILURE): try again
    else if (cmd.retried)
      lines.push(`for try in $(seq ${n}); do ${words} >/dev/null && break; [ $try = ${n} ] && exit 2; done`);
    else lines.push(`${words} >/dev/null || exit 2`);
    // the content of the snapshot the finding's apply restores, as it was taken
    if (applied !== null && cmd.creates === applied && !copied) {
      lines.push(`cp ${base.image} ${SNAPSHOT_COPY}`);
      copied = true;
    }
  }
  lines.push(...damageLines(c, damage, base.image));
  if (!own) {
    // as the harness copies it (exec/run-case.ts): a sparse raw image's zero blocks become holes
    const cp = sparseRawBase(c) ? 'cp --sparse=always' : 'cp';
    return [...lines, `${cp} ${base.image} ${reference.image} && ${cp} ${base.image} ${subject.image} || exit 2`];
  }
  const built = new Set(layout.chainBuilt);
  const files = [...new Set([...sideExtras(layout), ...layout.chain])].filter(
    (f) => !layout.chain.includes(f) || built.has(f),
  );
  // each file to the same place below each side's directory (a chain may have a directory of its own)
  const copies = files.map((f) => ` && cp --sparse=always ${base.dir}/${f} "$s/${f}"`).join('');
  const mkdirs = chainDir ? ` && mkdir "$s/${chainDir}"` : '';
  // a copy of a chain with absolute names names the base's files until retargeted
  const retargets = [reference, subject].flatMap((side) =>
    retargetCommands(c, side.image).map(
      (cmd) => `${at(side, command([cmd.program, ...cmd.args]))} >/dev/null || exit 2`,
    ),
  );
  return [
    ...lines,
    'cd .. || exit 2',
    `for s in ${reference.dir} ${subject.dir}; do ` +
      `cp ${imagePath(base)} "$s/$s.${c.image.format}"${mkdirs}${copies} || exit 2; done`,
    ...retargets,
  ];
}

/** The guest content a snapshot was taken with, for a finding about an apply of it. */
const SNAPSHOT_COPY = 'snapshot-content.img';

/** Whether the base image's build creates snapshot `name`. */
const buildCreates = (c: Case, name: string) => c.data.some((d) => d.op === 'snapshot-create' && d.name === name);

export interface ReproInput {
  finding: StepFinding;
  case: Case;
  subject: Resizer;
  origin: string;
  /** The steps as the run recorded them: the kind each was, from the state read before it. */
  steps?: readonly { index: number; plan: { kind: string }; sizeBefore?: number }[];
  /** The damage the run wrote into the base image after its build: its bytes, written again here. */
  damage?: readonly AppliedDamage[];
}

export function reproScript({ finding, case: c, subject, origin, steps = [], damage = [] }: ReproInput): string {
  // a control run across qemu versions names its subject qemu-img by path
  const subjectProgram = subject.dialect === 'instar' ? '"$INSTAR"' : shellQuote(subject.program);
  const layout = caseLayout(c);
  const { reference: ref, subject: sub } = layout;
  const checks = verdict(finding, layout, c.image);
  const needs =
    subject.dialect === 'instar'
      ? 'Needs qemu-img, qemu-io and instar: INSTAR=/path/to/instar bash repro.sh'
      : subject.program === qemuImg.program
        ? 'A control run (qemu-img on both sides): a harness bug.'
        : `A control run across versions: ${subject.program} as the subject, the qemu-img on PATH as the reference.`;
  const lines = [
    '#!/usr/bin/env bash',
    `# Reproduces ${signatureOf(finding)}: ${finding.message.replace(/\n/g, ' ')}`,
    `# Found by the instar resize fuzzer (${origin}). ${needs}`,
    '# Exit 1: it reproduces. Exit 0: it does not. Exit 2: the image could not be built.',
    PRELUDE,
    ...(checks.some((l) => l.includes('fields ')) ? [fields(c.image.format)] : []),
    ...(checks.some((l) => l.includes('! same ')) ? [SAME] : []),
  ];
  // a finding about an applied snapshot's content needs the content it was taken with
  const appliedStep = c.steps[finding.step];
  const applied =
    finding.kind === 'snapshot-content-differs' && appliedStep?.op === 'snapshot' ? appliedStep.name : null;
  let copied = false;
  lines.push(...buildLines(c, layout, applied, damage));
  copied = applied !== null && buildCreates(c, applied);
  // each step's kind as the run observed it; qemu's rules predict it from the case alone only for
  // reports that did not record it (it picks vhdx, vmdk and vpc grows' route through raw)
  const observed = new Map(steps.map((s) => [s.index, s.plan.kind]));
  for (const [index, predicted] of plannedSizes(c)
    .slice(0, finding.step + 1)
    .entries()) {
    const step = c.steps[index]!;
    const plan = { kind: observed.get(index) ?? predicted.plan.kind };
    const last = index === finding.step;
    // the guest writes the harness makes into both images before the step
    const sizeBefore = steps.find((s) => s.index === index)?.sizeBefore ?? predicted.before;
    const writes = operationOf(step).guestWrites?.(step, sizeBefore) ?? [];
    if (writes.length > 0)
      for (const side of [ref, sub])
        lines.push(`${at(side, command(['qemu-io', ...qemuIoArgs(writes, side.image, c.image)]))} >/dev/null`);
    // and the files it moves or removes in both directories (a rebase -u's old backing)
    for (const { file, movedTo } of operationOf(step).fileMoves?.(step) ?? [])
      for (const side of [ref, sub])
        lines.push(`${at(side, movedTo === null ? command(['rm', file]) : command(['mv', file, movedTo]))} || exit 2`);
    if (last && finding.oracle === 'structure') lines.push(`cp ${imagePath(sub)} ${SUBJECT_BEFORE}`);
    if (last && finding.oracle === 'unchanged-on-refusal') {
      const side = finding.side === 'subject' ? sub : ref;
      const data = sideExtras(layout)
        .map((f) =>
          layout.chain.includes(f)
            ? ` && { [ ! -e ${side.dir}/${f} ] || cp --sparse=always ${side.dir}/${f} before.${f}; }`
            : ` && cp --sparse=always ${side.dir}/${f} before.${f}`,
        )
        .join('');
      lines.push(`cp ${imagePath(side)} before.qcow2${data}`);
    }
    // qemu-img's side by the step's operation: for a vhdx, vmdk or vpc grow its resize of a raw conversion
    const op = operationOf(step);
    const reference = op.reference(step, ref.image, c.image, plan);
    const timed = reference.commands.map((args) => `timeout -k 5 "$TIMEOUT" ${command(['qemu-img', ...args])}`);
    const refResize = reference.scratch
      ? `{ ${timed.join(' && ')}; r=$?; rm -f ${shellQuote(reference.scratch)}; (exit $r); }`
      : timed[0]!;
    const subResize = `${subjectProgram} ${command(op.subject(subject, step, sub.image, c.image))}`;
    const heading = shellQuote(`== step ${index + 1}, ${op.describe(step)} (${plan.kind}):`);
    // the output oracle judges what the last step printed: both sides' stdout kept in files
    const keep = last && (finding.oracle === 'output' || finding.oracle === 'repair');
    const accepted = op.acceptedExits ? ` ${shellQuote(op.acceptedExits.join(' '))}` : '';
    lines.push(`${at(ref, refResize)}${keep ? ' >ref.out' : ''}; rc_ref=$?; ref=$(outcome $rc_ref${accepted})`);
    // the in-place oracle judges the subject's image and directory against right before its resize
    if (last && finding.oracle === 'in-place')
      lines.push(`before_id=$(stat -c '%i %a %u:%g' ${imagePath(sub)}); before_files=$(ls -A ${sub.dir})`);
    lines.push(
      `${at(sub, `timeout -k 5 "$TIMEOUT" ${subResize}`)}${keep ? ' >sub.out' : ''}; rc_sub=$?; ` +
        `sub=$(outcome $rc_sub${accepted})`,
      `echo ${heading} "qemu-img $ref, subject $sub"`,
    );
    // the content a snapshot that the finding's apply restores was taken with, kept as the harness keeps it
    const created = op.snapshotContent?.(step);
    if (applied !== null && created && 'keeps' in created && created.keeps === applied && !copied) {
      lines.push(`[ "$ref" = ok ] && cp ${imagePath(ref)} ${SNAPSHOT_COPY}`);
      copied = true;
    }
  }
  lines.push('reproduced=0', ...checks);
  // every oracle but outcome and unchanged-on-refusal judges two results both sides made
  const judgesResults =
    !['outcome', 'unchanged-on-refusal', 'output', 'in-place'].includes(finding.oracle) &&
    !/^(refused|accepted)$/.test(finding.kind);
  const alone = (finding.evidence as { alone?: boolean } | undefined)?.alone === true;
  if (judgesResults) lines.push(alone ? ONLY_SUBJECT_OK : BOTH_OK);
  lines.push(`if [ "$reproduced" = 1 ]; then echo ${shellQuote(`REPRODUCED: ${signatureOf(finding)}`)}; exit 1; fi`);
  lines.push(`echo 'did not reproduce'; exit 0`, '');
  return lines.join('\n');
}

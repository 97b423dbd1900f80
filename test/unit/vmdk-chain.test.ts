import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CaseFormatError, parseCase, type Case } from '../../model/case.ts';
import { buildCommands, qemuImg, withoutBacking, type Resizer } from '../../model/commands.ts';
import { caseLayout, chainFileFormat, chainFiles } from '../../model/layout.ts';
import { plannedStates } from '../../model/plan.ts';
import { caseAt } from '../../generators/cases.ts';
import { formatsOf } from '../../cli/fuzz-args.ts';
import { commitArgs } from '../../operations/commit/step.ts';
import { planRebase, rebaseArgs, type RebaseStep } from '../../operations/rebase/step.ts';
import { contentOracle, unreadableSide } from '../../oracles/content.ts';
import { signatureOf, type Finding } from '../../oracles/finding.ts';
import { ORACLES, type StepObservation } from '../../oracles/table.ts';
import { normaliseMessage } from '../../oracles/message.ts';
import { cidOf, parentNameOf } from '../../formats/vmdk.ts';
import { initialState } from '../../model/state.ts';

// vmdk chains for commit and rebase, the pure parts: the case model, the build, qemu's rules, the
// command lines, the formats a run takes, and who a compare that could not read is laid to.

const instar: Resizer = { dialect: 'instar', program: 'instar' };

const vmdkImage = (backing: unknown, subformat = 'monolithicSparse') => ({
  format: 'vmdk',
  virtualSize: 4 << 20,
  clusterSize: 65536,
  refcountBits: 16,
  compat: '1.1',
  lazyRefcounts: false,
  extendedL2: false,
  options: { subformat, adapter_type: 'ide' },
  backing,
});
const lower = { format: 'vmdk', virtualSize: 4 << 20, data: [{ offset: 0, length: 512, pattern: 1 }] };
const vmdkCase = (backing: unknown, steps: unknown[] = [{ op: 'commit', base: null }], subformat?: string): Case =>
  parseCase({
    image: vmdkImage(backing, subformat),
    data: [{ op: 'write', offset: 65536, length: 512, pattern: 2 }],
    steps,
  });
const refused = (json: () => unknown, field: RegExp) =>
  assert.throws(json, (e: unknown) => e instanceof CaseFormatError && field.test(e.message));

describe('vmdk chains in the case model', () => {
  test('a monolithicSparse top over two vmdk levels: created over each other and written by qemu-io', () => {
    const c = vmdkCase({ ...lower, backing: lower, directory: 'chain' });
    const lines = buildCommands(c, 'base.vmdk').map((b) => `${b.program} ${b.args.join(' ')}`);
    assert.deepEqual(lines, [
      'qemu-img create -q -f vmdk chain/lower.vmdk 4194304',
      'qemu-io -f vmdk -c write -q -P 1 0 512 chain/lower.vmdk',
      'qemu-img create -q -f vmdk -b lower.vmdk -F vmdk chain/backing.vmdk 4194304',
      'qemu-io -f vmdk -c write -q -P 1 0 512 chain/backing.vmdk',
      'qemu-img create -q -f vmdk -o subformat=monolithicSparse,adapter_type=ide ' +
        '-b chain/backing.vmdk -F vmdk base.vmdk 4194304',
      'qemu-io -f vmdk -c write -q -P 2 65536 512 base.vmdk',
    ]);
    assert.deepEqual(chainFiles(c), ['chain/backing.vmdk', 'chain/lower.vmdk']);
    assert.equal(chainFileFormat('chain/lower.vmdk'), 'vmdk');
    // each side has its own chain: a commit writes into it
    assert.equal(caseLayout(c).chainWritten, true);
    assert.deepEqual(initialState(c).chain, [
      { name: 'chain/backing.vmdk', path: 'chain/backing.vmdk' },
      { name: 'lower.vmdk', path: 'chain/lower.vmdk' },
    ]);
  });

  test('refused, naming the field: mixed formats, an absolute vmdk name, another subformat, a vhdx top', () => {
    refused(() => vmdkCase({ ...lower, format: 'qcow2' }), /image\.backing\.format must be vmdk/);
    refused(() => vmdkCase({ ...lower, backing: { ...lower, format: 'raw' } }), /image\.backing\.backing\.format/);
    refused(() => vmdkCase({ ...lower, absolute: true }), /image\.backing\.absolute must be absent/);
    refused(() => vmdkCase(lower, undefined, 'streamOptimized'), /image\.options\.subformat must be monolithicSparse/);
    refused(() => vmdkCase({ ...lower, clusterSize: 4096 }), /image\.backing\.clusterSize is for a qcow2 level/);
    refused(
      () =>
        parseCase({
          image: { ...vmdkImage(lower), format: 'vhdx', options: { subformat: 'dynamic' } },
          data: [],
          steps: [{ op: 'commit', base: null }],
        }),
      /image\.backing must be null for a vhdx image/,
    );
    refused(
      () =>
        parseCase({
          image: { ...vmdkImage(null), format: 'qcow2', options: undefined, backing: lower },
          data: [],
          steps: [{ op: 'commit', base: null }],
        }),
      /image\.backing\.format must be qcow2 or raw below a qcow2 image/,
    );
  });
});

describe("qemu's rules and the command lines for a vmdk top", () => {
  test('every vmdk rebase is refused by qemu-img, its kind saying the mode', () => {
    const c = vmdkCase(lower);
    const state = initialState(c);
    const step = (unsafe: boolean): RebaseStep => ({
      op: 'rebase',
      backing: 'new0.vmdk',
      backingFormat: 'vmdk',
      unsafe,
    });
    assert.deepEqual(
      [true, false].map((u) => {
        const p = planRebase(step(u), state, 'vmdk');
        return [p.kind, p.accepted];
      }),
      [
        ['vmdk-unsafe', false],
        ['vmdk-safe', false],
      ],
    );
    // a qcow2 top's plan is unchanged by the format argument's default
    assert.equal(planRebase({ ...step(true), backing: 'backing.vmdk' }, state).kind, 'unsafe-same-backing');
  });

  test('-f vmdk in both dialects', () => {
    assert.deepEqual(commitArgs(qemuImg, { op: 'commit', base: null }, 't.vmdk', 'human', 'vmdk'), [
      'commit',
      '-f',
      'vmdk',
      't.vmdk',
    ]);
    const step: RebaseStep = { op: 'rebase', backing: 'b.vmdk', backingFormat: 'vmdk', unsafe: true };
    assert.deepEqual(rebaseArgs(instar, step, 't.vmdk', 'quiet', 'vmdk'), [
      'rebase',
      '-b',
      'b.vmdk',
      '-F',
      'vmdk',
      '-u',
      '-f',
      'vmdk',
      '-q',
      't.vmdk',
    ]);
    assert.match(withoutBacking('t.vmdk', 'vmdk'), /^json:\{"driver":"vmdk","backing":null/);
  });

  test('a descriptor names its parent and both CIDs', () => {
    const d =
      '# Disk DescriptorFile\nversion=1\nCID=60eef758\nparentCID=70b3bbd2\n' +
      'createType="monolithicSparse"\nparentFileNameHint="chain/backing.vmdk"\n';
    assert.deepEqual(
      [parentNameOf(d), cidOf(d, 'CID'), cidOf(d, 'parentCID')],
      ['chain/backing.vmdk', '60eef758', '70b3bbd2'],
    );
    assert.equal(parentNameOf('CID=1\nparentCID=ffffffff\n'), null);
  });
});

describe('vmdk chain cases as generated', () => {
  test('with commit and rebase, vmdk cases are vmdk chains qemu can build, and qemu commits most', () => {
    let [commits, accepted, rebases] = [0, 0, 0];
    for (let i = 0; i < 80; i++) {
      const c = parseCase(caseAt(11, i, ['vmdk'], null, ['commit', 'rebase']));
      assert.equal(c.image.options?.subformat, 'monolithicSparse', `case ${i}`);
      let level = c.image.backing;
      assert.ok(level !== null, `case ${i}`);
      for (; level; level = level.backing ?? null) assert.equal(level.format, 'vmdk', `case ${i}`);
      // qemu refuses every vmdk rebase: an old backing moved away before a later step would be gone
      c.steps.slice(0, -1).forEach((s, k) => assert.equal((s as RebaseStep).oldBacking, undefined, `case ${i} ${k}`));
      for (const [k, { plan }] of plannedStates(c).entries()) {
        const op = (c.steps[k] as { op: string }).op;
        if (op === 'rebase') rebases++;
        else if (op === 'commit') {
          commits++;
          if (plan.accepted) accepted++;
        } else assert.fail(`case ${i}: a ${op} step`);
      }
    }
    assert.ok(commits > 15 && rebases > 15, `${commits} commits, ${rebases} rebases`);
    assert.ok(accepted / commits > 0.6, `${accepted}/${commits}`);
  });

  test('a resize-only run draws the vmdk cases it always did', () => {
    const a = caseAt(4, 7, ['vmdk'], null, ['resize']);
    assert.equal(a.image.backing, null);
    assert.ok(a.steps.every((s) => (s as { op?: string }).op === undefined));
  });
});

describe('the formats a run takes', () => {
  test('by default the formats of its operations; a control run those qemu-img gives a reference for', () => {
    assert.deepEqual(formatsOf(undefined, false, ['commit', 'rebase']), ['qcow2', 'vmdk']);
    assert.deepEqual(formatsOf(undefined, true, ['commit', 'rebase']), ['qcow2', 'vmdk']);
    assert.deepEqual(formatsOf(undefined, true, ['resize', 'commit']), ['qcow2', 'raw']);
    assert.deepEqual(formatsOf(undefined, false, ['amend']), ['qcow2']);
    assert.deepEqual(formatsOf('vmdk', true, ['rebase']), ['vmdk']);
  });
});

describe('who a failed compare is laid to', () => {
  test("qemu's result where it opened but could not be read; the subject for anything else", () => {
    const cases: [string, 'reference' | 'subject'][] = [
      ['qemu-img: Error while reading offset 15269888 of reference/reference.vmdk: Invalid argument', 'reference'],
      ['qemu-img: Error while reading offset 0 of reference.qcow2: Input/output error', 'reference'],
      ['qemu-img: Error while reading offset 0 of subject/subject.vmdk: Invalid argument', 'subject'],
      ["qemu-img: Could not open 'reference/reference.qcow2': Image is not in qcow2 format", 'subject'],
      ['qemu-img: Error while reading offset 0 of references.qcow2: Invalid argument', 'subject'],
      ['', 'subject'],
    ];
    assert.deepEqual(
      cases.map(([stderr]) => unreadableSide(stderr)),
      cases.map(([, side]) => side),
    );
  });
});

describe('signatures of vmdk chain findings', () => {
  test('one signature per cause: image names and sector or offset numbers are not the cause', () => {
    const same = (a: string, b: string) => assert.equal(normaliseMessage(a), normaliseMessage(b));
    same(
      "qemu-img: Could not change the backing file to 'backing.vmdk': Operation not supported",
      "qemu-img: Could not change the backing file to 'chain/backing.vmdk': Operation not supported",
    );
    same(
      'ERROR: cluster offset for sector 0 points after EOF',
      'ERROR: cluster offset for sector 4096 points after EOF',
    );
    assert.equal(
      normaliseMessage('qemu-img: Error while reading offset 0 of reference/reference.vmdk: Invalid argument'),
      'qemu-img: Error while reading offset <n> of <path>: Invalid argument',
    );
    // a short number that is not where the damage lies stays: a guest error's code
    assert.equal(normaliseMessage('rebase: guest reported error 11: x'), 'rebase: guest reported error 11: x');
  });

  test("qemu's own vmdk top that cannot be read is a reference-side content finding", () => {
    const [f] = contentOracle({
      exitCode: 2,
      stdout: '',
      stderr: 'qemu-img: Error while reading offset 15269888 of reference/reference.vmdk: Invalid argument',
      referenceSize: 16 << 20,
      subjectSize: 16 << 20,
    });
    assert.equal(
      signatureOf({ ...f!, operation: 'commit' }),
      'commit:content/compare-failed/reference/qemu-img: Error while reading offset <n> of <path>: Invalid argument',
    );
  });
});

describe('a result only the subject made', () => {
  test('is checked alone: its finding says so, and carries what repro.sh needs', () => {
    const row = ORACLES.find((o) => o.name === 'check')!;
    const check = {
      exitCode: 1,
      stdout: '',
      stderr: 'ERROR: cluster offset for sector 0 points after EOF',
      report: null,
    };
    const o = { results: null, accepted: { before: 1, target: null, after: 1, check } } as unknown as StepObservation;
    assert.ok(row.stage === 'step' && row.runs(o));
    const [f] = (row.judge as (o: StepObservation) => Finding[])(o);
    assert.deepEqual([f!.kind, f!.side, (f!.evidence as { alone?: boolean }).alone], ['check-failed', 'subject', true]);
    assert.match(f!.message, /qemu-img refused the step: the subject's result is judged alone/);
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseCase, CaseFormatError, type Case } from '../../model/case.ts';
import { buildCommands, qemuImg, retargetCommands, type Resizer } from '../../model/commands.ts';
import { caseLayout, chainFiles, CWD, sideFilesOf } from '../../model/layout.ts';
import { portableBackingName } from '../../qcow2/reader.ts';
import { initialState, type ImageState } from '../../model/state.ts';
import { commitArgs, planCommit, type CommitStep } from '../../operations/commit/step.ts';
import { planRebase, rebaseArgs, type RebaseStep } from '../../operations/rebase/step.ts';
import { chainOracle, type ChainMemberObservation } from '../../oracles/chain.ts';
import { reproScript } from '../../reporting/repro.ts';
import { caseAt } from '../../generators/cases.ts';
import { plannedStates } from '../../model/plan.ts';

// commit and rebase, the pure parts: chains in the case model and where their files live, qemu's
// rules for both steps, both command lines, and the chain oracle.

const instar: Resizer = { dialect: 'instar', program: 'instar' };
const state = (chain: string[]): ImageState => ({
  size: 4 << 20,
  compat: '1.1',
  refcountBits: 16,
  lazyRefcounts: false,
  extendedL2: false,
  dataFile: false,
  snapshots: [],
  chain: chain.map((name) => ({ name, path: name })),
});
const THREE = ['backing.qcow2', 'lower.qcow2'];

const chainCase = (steps: unknown[]): Case =>
  parseCase({
    image: {
      format: 'qcow2',
      virtualSize: 4 << 20,
      clusterSize: 65536,
      refcountBits: 16,
      compat: '1.1',
      lazyRefcounts: false,
      extendedL2: false,
      backing: {
        format: 'qcow2',
        virtualSize: 2 << 20,
        data: [{ offset: 0, length: 65536, pattern: 1 }],
        clusterSize: 4096,
        refcountBits: 2,
        backing: { format: 'raw', virtualSize: 4 << 20, data: [] },
      },
    },
    data: [{ op: 'write', offset: 65536, length: 512, pattern: 2 }],
    steps,
  });

describe('chains in the case model', () => {
  test('three levels: built deepest first, each over the one below, with its own options', () => {
    const c = chainCase([{ op: 'commit', base: null }]);
    const creates = buildCommands(c, 'base.qcow2')
      .filter((b) => b.args[0] === 'create')
      .map((b) => b.args.join(' '));
    assert.deepEqual(creates, [
      'create -q -f raw lower.raw 4194304',
      'create -q -f qcow2 -o cluster_size=4096,refcount_bits=2 -b lower.raw -F raw backing.qcow2 2097152',
      'create -q -f qcow2 -o cluster_size=65536,refcount_bits=16,compat=1.1 -b backing.qcow2 -F qcow2 ' +
        'base.qcow2 4194304',
    ]);
    assert.deepEqual(initialState(c).chain, [
      { name: 'backing.qcow2', path: 'backing.qcow2' },
      { name: 'lower.raw', path: 'lower.raw' },
    ]);
  });
  test('a step that writes the chain gives each side its own, which a refused step must leave alone', () => {
    const c = chainCase([
      {
        op: 'rebase',
        backing: 'new0.qcow2',
        backingFormat: 'qcow2',
        unsafe: false,
        newBacking: { format: 'qcow2', virtualSize: 1 << 20, data: [] },
      },
    ]);
    assert.deepEqual(chainFiles(c), ['backing.qcow2', 'lower.raw', 'new0.qcow2']);
    const layout = caseLayout(c);
    assert.equal(layout.subject.dir, 'subject');
    assert.deepEqual(sideFilesOf(layout, layout.subject), [
      'subject/subject.qcow2',
      'subject/backing.qcow2',
      'subject/lower.raw',
      'subject/new0.qcow2',
    ]);
    assert.ok(buildCommands(c, 'base.qcow2').some((b) => b.args.join(' ') === 'create -q -f qcow2 new0.qcow2 1048576'));
  });
  test('bad chains are refused with the field named', () => {
    const bad = (backing: unknown, why: RegExp) => {
      const json = JSON.parse(JSON.stringify(chainCase([{ op: 'commit', base: null }])));
      json.image.backing = backing;
      assert.throws(
        () => parseCase(json),
        (e: Error) => e instanceof CaseFormatError && why.test(e.message),
      );
    };
    const level = { format: 'qcow2', virtualSize: 1 << 20, data: [] };
    bad({ ...level, backing: { ...level, backing: level } }, /image\.backing\.backing\.backing must be absent/);
    bad({ format: 'raw', virtualSize: 1 << 20, data: [], clusterSize: 4096 }, /clusterSize is for a qcow2 level only/);
    bad({ ...level, refcountBits: 3 }, /refcountBits must be one of/);
    bad({ ...level, clusterSize: 3000 }, /clusterSize must be a power of two/);
  });
});

describe('levels named by their absolute paths', () => {
  const absolute = () => {
    const json = JSON.parse(JSON.stringify(chainCase([{ op: 'commit', base: 'lower.raw' }])));
    json.image.backing.absolute = true;
    json.image.backing.directory = 'chain';
    json.image.backing.backing.absolute = true;
    return parseCase(json);
  };
  test('built with the directory the build runs in; each side retargets its copy to its own files', () => {
    const c = absolute();
    const creates = buildCommands(c, 'base.qcow2')
      .filter((b) => b.args[0] === 'create')
      .map((b) => b.args.slice(-6).join(' '));
    assert.deepEqual(creates, [
      'create -q -f raw chain/lower.raw 4194304',
      `-b ${CWD}/chain/lower.raw -F raw chain/backing.qcow2 2097152`,
      `-b ${CWD}/chain/backing.qcow2 -F qcow2 base.qcow2 4194304`,
    ]);
    assert.deepEqual(
      retargetCommands(c, 'subject.qcow2').map((b) => b.args.join(' ')),
      [
        `rebase -u -f qcow2 -b ${CWD}/chain/backing.qcow2 -F qcow2 subject.qcow2`,
        `rebase -u -f qcow2 -b ${CWD}/chain/lower.raw -F raw chain/backing.qcow2`,
      ],
    );
    assert.deepEqual(retargetCommands(chainCase([{ op: 'commit', base: null }]), 'subject.qcow2'), []);
    // commit -b names a member relative to the level above, whichever way it is stored
    assert.deepEqual(initialState(c).chain, [
      { name: 'chain/backing.qcow2', path: 'chain/backing.qcow2' },
      { name: 'lower.raw', path: 'chain/lower.raw' },
    ]);
  });
  test('repro.sh builds with "$PWD" and retargets each side after its copy', () => {
    const script = reproScript({
      finding: {
        oracle: 'chain',
        kind: 'member-backing-differs',
        side: 'subject',
        detail: 'written',
        message: 'm',
        step: 0,
        evidence: { file: 'chain/backing.qcow2' },
      },
      case: absolute(),
      subject: instar,
      origin: 'test',
    });
    assert.match(script, / -b "\$PWD"\/chain\/backing\.qcow2 -F qcow2 base\.qcow2 /);
    assert.match(
      script,
      /\(cd subject && qemu-img rebase -u -f qcow2 -b "\$PWD"\/chain\/lower\.raw -F raw chain\/backing\.qcow2\)/,
    );
    // the sides' backing names compared with their own directories taken out
    assert.match(script, /sed "s\|\$PWD\/subject\/\|\|"/);
    assert.ok(script.indexOf('for s in reference subject') < script.indexOf('(cd reference && qemu-img rebase'));
  });
  test("a name below the image's own directory compares alike in every copy; others are kept", () => {
    const cases: [string | null, string, string | null][] = [
      ['/w/reference/chain/backing.qcow2', '/w/reference/reference.qcow2', '<image dir>/chain/backing.qcow2'],
      ['/w/subject/chain/backing.qcow2', '/w/subject/subject.qcow2', '<image dir>/chain/backing.qcow2'],
      ['/w/subject/lower.qcow2', '/w/subject/chain/backing.qcow2', '/w/subject/lower.qcow2'],
      ['/elsewhere/base.qcow2', '/w/subject/subject.qcow2', '/elsewhere/base.qcow2'],
      ['chain/backing.qcow2', '/w/subject/subject.qcow2', 'chain/backing.qcow2'],
      [null, '/w/subject/subject.qcow2', null],
    ];
    for (const [name, image, want] of cases)
      assert.equal(portableBackingName(name, image), want, `${name} of ${image}`);
  });
  test('absolute must be a boolean', () => {
    const json = JSON.parse(JSON.stringify(chainCase([{ op: 'commit', base: null }])));
    json.image.backing.absolute = 'yes';
    assert.throws(() => parseCase(json), /image\.backing\.absolute must be true/);
  });
});

describe("qemu's rules", () => {
  const commit = (base: string | null): CommitStep => ({ op: 'commit', base });
  test('commit: into the parent, an explicit member, through the middle; refused without a chain or member', () => {
    const kinds = [null, 'backing.qcow2', 'lower.qcow2', 'elsewhere.qcow2'].map((b) => {
      const p = planCommit(commit(b), state(THREE));
      return `${p.kind}:${p.accepted}`;
    });
    assert.deepEqual(kinds, ['into-parent:true', 'explicit-parent:true', 'through-middle:true', 'not-in-chain:false']);
    assert.equal(planCommit(commit(null), state([])).kind, 'no-backing');
  });
  const rebase = (backing: string, unsafe = false, backingFormat: 'qcow2' | 'raw' | null = 'qcow2'): RebaseStep => ({
    op: 'rebase',
    backing,
    backingFormat,
    unsafe,
  });
  test('rebase: its target and mode, and the chain it leaves', () => {
    const cases: [RebaseStep, string, string[] | null][] = [
      [rebase('', false, null), 'safe-detach', []],
      [rebase('backing.qcow2', true), 'unsafe-same-backing', THREE],
      [rebase('lower.qcow2'), 'safe-skip-middle', ['lower.qcow2']],
      [
        { ...rebase('new1.raw', false, 'raw'), newBacking: { format: 'raw', virtualSize: 512, data: [] } },
        'safe-new-backing',
        ['new1.raw'],
      ],
      [rebase('lower.qcow2', true, null), 'no-format', null],
      [rebase('gone.qcow2'), 'not-found', null],
      [
        { ...rebase('moved.qcow2', true), oldBacking: { file: 'backing.qcow2', movedTo: 'moved.qcow2' } },
        'unsafe-moved-backing',
        ['moved.qcow2', 'lower.qcow2'],
      ],
      [
        { ...rebase('new2.qcow2', true), oldBacking: { file: 'backing.qcow2', movedTo: null } },
        'unsafe-missing-backing',
        ['new2.qcow2'],
      ],
      // safe mode opens the old chain: gone, qemu-img refuses
      [
        { ...rebase('moved.qcow2'), oldBacking: { file: 'backing.qcow2', movedTo: 'moved.qcow2' } },
        'safe-moved-backing',
        null,
      ],
    ];
    for (const [step, kind, chain] of cases) {
      const p = planRebase(step, state(THREE));
      assert.equal(p.kind, kind, JSON.stringify(step));
      assert.equal(p.accepted, chain !== null);
      if (chain)
        assert.deepEqual(
          p.next.chain?.map((l) => l.path),
          chain,
        );
    }
  });
});

describe('a rebase -u after the old backing moved', () => {
  test('the moved file is a chain member, not built: each side moves its own, and repro.sh does too', () => {
    const c = chainCase([
      {
        op: 'rebase',
        backing: 'moved.qcow2',
        backingFormat: 'qcow2',
        unsafe: true,
        oldBacking: { file: 'backing.qcow2', movedTo: 'moved.qcow2' },
      },
    ]);
    const layout = caseLayout(c);
    assert.deepEqual(layout.chain, ['backing.qcow2', 'lower.raw', 'moved.qcow2']);
    assert.deepEqual(layout.chainBuilt, ['backing.qcow2', 'lower.raw']);
    const script = reproScript({
      finding: {
        oracle: 'chain',
        kind: 'member-missing',
        side: 'subject',
        detail: 'moved-backing',
        message: 'm',
        step: 0,
        evidence: { file: 'moved.qcow2' },
      },
      case: c,
      subject: instar,
      origin: 'test',
    });
    assert.match(script, /\(cd reference && mv backing\.qcow2 moved\.qcow2\) \|\| exit 2/);
    assert.match(script, /\(cd subject && mv backing\.qcow2 moved\.qcow2\) \|\| exit 2/);
    assert.match(script, /\[ -e reference\/moved\.qcow2 \] && \[ ! -e subject\/moved\.qcow2 \] && reproduced=1/);
    assert.doesNotMatch(script, /base\/moved\.qcow2/);
  });
  test('a bad oldBacking is refused with the field named', () => {
    const step = {
      op: 'rebase',
      backing: 'x.qcow2',
      backingFormat: 'qcow2',
      unsafe: true,
      oldBacking: { file: '', movedTo: null },
    };
    assert.throws(() => chainCase([step]), /steps\[0\]\.oldBacking\.file must be/);
  });
});

describe('command lines', () => {
  test('commit: the same options in both dialects; instar alone is asked for JSON', () => {
    assert.deepEqual(commitArgs(qemuImg, { op: 'commit', base: 'b.qcow2' }, 'top.qcow2', 'human'), [
      'commit',
      '-f',
      'qcow2',
      '-b',
      'b.qcow2',
      'top.qcow2',
    ]);
    assert.deepEqual(commitArgs(instar, { op: 'commit', base: null }, 'top.qcow2', 'json'), [
      'commit',
      '-f',
      'qcow2',
      '--output',
      'json',
      'top.qcow2',
    ]);
    assert.deepEqual(commitArgs(qemuImg, { op: 'commit', base: null }, 't', 'quiet'), [
      'commit',
      '-f',
      'qcow2',
      '-q',
      't',
    ]);
  });
  test('rebase: qemu-img\'s order, instar\'s (-b first), -b "" kept as an empty word', () => {
    const step: RebaseStep = { op: 'rebase', backing: '', backingFormat: null, unsafe: true };
    assert.deepEqual(rebaseArgs(qemuImg, step, 't', 'human'), ['rebase', '-f', 'qcow2', '-u', '-b', '', 't']);
    const onto: RebaseStep = { op: 'rebase', backing: 'n.raw', backingFormat: 'raw', unsafe: false };
    assert.deepEqual(rebaseArgs(instar, onto, 't', 'json'), [
      'rebase',
      '-b',
      'n.raw',
      '-F',
      'raw',
      '-f',
      'qcow2',
      '--output',
      'json',
      't',
    ]);
  });
});

describe('the chain oracle', () => {
  const member = (over: Partial<ChainMemberObservation>): ChainMemberObservation => ({
    file: 'backing.qcow2',
    role: 'parent',
    present: { reference: true, subject: true },
    identical: false,
    compare: { exitCode: 0, stdout: 'Images are identical.', stderr: '' },
    ...over,
  });
  const clean = { exitCode: 0, report: { 'check-errors': 0 }, stderr: '' };
  const leaky = { exitCode: 3, report: { 'check-errors': 0, leaks: 2 }, stderr: '' };
  const signatures = (members: ChainMemberObservation[], topExit = 0) =>
    chainOracle({ members, topAlone: { exitCode: topExit, stdout: 'Content mismatch at offset 0!', stderr: '' } }).map(
      (f) => `${f.kind}/${f.detail}`,
    );
  test('identical members and tops say nothing', () => {
    assert.deepEqual(
      signatures([member({ identical: true, compare: undefined }), member({ subjectCheck: clean })]),
      [],
    );
  });
  test('each way a member differs is a finding of its own, named by whether the step writes it', () => {
    assert.deepEqual(signatures([member({ present: { reference: true, subject: false } })]), ['member-missing/other']);
    assert.deepEqual(signatures([member({ role: 'new-backing', present: { reference: false, subject: true } })]), [
      'member-extra/other',
    ]);
    assert.deepEqual(signatures([member({ written: true, subjectCheck: leaky, referenceCheck: clean })]), [
      'member-check-failed/written:leaks',
    ]);
    // the same damage to whichever member a case's commit went into: one signature
    for (const role of ['parent', 'grandparent', 'new-backing'] as const)
      assert.deepEqual(
        signatures([
          member({
            role,
            written: true,
            compare: { exitCode: 1, stdout: 'Content mismatch at offset 512!', stderr: '' },
          }),
        ]),
        ['member-content-differs/written'],
      );
    assert.deepEqual(signatures([member({ backing: { reference: 'lower.qcow2', subject: null } })]), [
      'member-backing-differs/other',
    ]);
    assert.deepEqual(signatures([], 1), ['top-alone-differs/']);
  });
  test("damage qemu's own member has too is not the subject's", () => {
    assert.deepEqual(signatures([member({ subjectCheck: leaky, referenceCheck: leaky })]), []);
  });
});

describe('chain cases as generated', () => {
  test('commit and rebase cases are chains of small images, without resizes, and qemu takes most steps', () => {
    let [chains, steps, accepted] = [0, 0, 0];
    for (let i = 0; i < 60; i++) {
      const c = caseAt(3, i, ['qcow2'], null, ['resize', 'commit', 'rebase']);
      if (!c.steps.some((s) => ['commit', 'rebase'].includes((s as { op?: string }).op ?? ''))) continue;
      chains++;
      assert.ok(c.image.backing !== null, `case ${i}`);
      assert.ok(c.image.virtualSize <= 32 << 20, `case ${i}`);
      assert.ok(
        c.steps.every((s) => (s as { op?: string }).op !== undefined),
        `case ${i}: no resize`,
      );
      for (const { plan } of plannedStates(c)) {
        steps++;
        if (plan.accepted) accepted++;
      }
    }
    assert.ok(chains > 20, `${chains} chain cases`);
    assert.ok(accepted / steps > 0.7, `${accepted}/${steps}`);
  });
});

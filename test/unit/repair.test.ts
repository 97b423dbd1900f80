// The repair oracle on recorded command outcomes: qemu-img check -r's exit codes and JSON against a
// subject's, in each output mode; damage that makes no case valid without its repair; and the
// coverage of damage kind x refcount width x tier, from what the run wrote.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { damageUnrepaired, parseCase, CaseFormatError, type Case } from '../../model/case.ts';
import type { CommandRecord } from '../../model/commands.ts';
import { remainingCounts, repairOracle } from '../../operations/repair/judge.ts';
import type { StepRecord } from '../../exec/run-case.ts';
import { addCase, coverageTable, emptyCoverage, REPAIR_CELLS } from '../../triage/coverage.ts';

const ran = (exitCode: number | null, stdout = '', extra: Partial<CommandRecord> = {}): CommandRecord => ({
  argv: [],
  exitCode,
  signal: null,
  timedOut: false,
  spawnError: null,
  stdout,
  stderr: '',
  durationMs: 1,
  ...extra,
});

// qemu-img check -r all --output=json after a repair that left one corruption and mended a leak
const QEMU_LEFT_ONE = '{"check-errors": 0, "corruptions": 1, "leaks-fixed": 1, "filename": "reference.qcow2"}';
const QEMU_CLEAN = '{"check-errors": 0, "corruptions-fixed": 1, "filename": "reference.qcow2"}';
const instarJson = (corruptions: number, leaks: number) =>
  JSON.stringify({
    corruptions,
    leaks,
    'refcount-errors': 0,
    dirty: false,
    corrupt: false,
    'repair-incomplete': false,
  });

const CASES: {
  name: string;
  output: 'human' | 'json' | 'quiet';
  reference: CommandRecord;
  subject: CommandRecord;
  findings: string[];
}[] = [
  {
    name: 'same exit, words of its own',
    output: 'human',
    reference: ran(0, QEMU_CLEAN),
    subject: ran(0, 'Repaired 0 leaked cluster(s)'),
    findings: [],
  },
  {
    name: 'exit 2 where qemu re-checks clean',
    output: 'human',
    reference: ran(0, QEMU_CLEAN),
    subject: ran(2, 'Repaired ...'),
    findings: ['exit-differs/tier=all,qemu=0,subject=2'],
  },
  {
    name: 'JSON counting what qemu counts',
    output: 'json',
    reference: ran(2, QEMU_LEFT_ONE),
    subject: ran(2, instarJson(1, 0)),
    findings: [],
  },
  {
    name: 'JSON counting a leak qemu mended',
    output: 'json',
    reference: ran(2, QEMU_LEFT_ONE),
    subject: ran(2, instarJson(1, 1)),
    findings: ['counts-differ/tier=all,leaks'],
  },
  {
    name: 'JSON counting a corruption qemu mended, and exiting so',
    output: 'json',
    reference: ran(0, QEMU_CLEAN),
    subject: ran(2, instarJson(1, 0)),
    findings: ['exit-differs/tier=all,qemu=0,subject=2'],
  },
  {
    name: 'JSON that is not',
    output: 'json',
    reference: ran(0, QEMU_CLEAN),
    subject: ran(0, 'done'),
    findings: ['json-invalid/not-an-object'],
  },
  {
    name: '-q printing',
    output: 'quiet',
    reference: ran(0, QEMU_CLEAN),
    subject: ran(0, 'Repaired'),
    findings: ['quiet-printed/Repaired'],
  },
  // a check that failed or did not run is the outcome oracle's
  {
    name: 'qemu-img check failed (exit 1)',
    output: 'json',
    reference: ran(1),
    subject: ran(2, instarJson(1, 0)),
    findings: [],
  },
  {
    name: 'subject killed',
    output: 'human',
    reference: ran(0),
    subject: ran(null, '', { signal: 'SIGKILL' }),
    findings: [],
  },
];

describe('the repair oracle', () => {
  for (const c of CASES)
    test(c.name, () => {
      const found = repairOracle({ tier: 'all', output: c.output, reference: c.reference, subject: c.subject });
      assert.deepEqual(
        found.map((f) => `${f.kind}/${f.detail}`),
        c.findings,
      );
      for (const f of found) assert.equal(f.oracle, 'repair');
    });

  test("qemu-img's missing counters are zero", () => {
    assert.deepEqual(remainingCounts(QEMU_CLEAN), { corruptions: 0, leaks: 0 });
    assert.deepEqual(remainingCounts('[1]'), null);
  });
});

const BASE_IMAGE: Case['image'] = {
  format: 'qcow2',
  virtualSize: 1048576,
  clusterSize: 65536,
  refcountBits: 16,
  compat: '1.1',
  lazyRefcounts: false,
  extendedL2: false,
  compressionType: 'zlib',
  createdWithRefcountBits: null,
  bitmaps: 0,
  dirty: false,
  backing: null,
  dataFile: 'none',
  createdPreallocation: 'off',
  encrypted: false,
};

describe('damage in a case', () => {
  const base: Case = {
    image: BASE_IMAGE,
    data: [{ op: 'damage', kind: 'leak', pick: 3 }],
    steps: [{ op: 'repair', tier: 'leaks' }],
  };
  test('is valid with a repair first', () => {
    assert.equal(damageUnrepaired(base), false);
    assert.doesNotThrow(() => parseCase(structuredClone(base)));
  });
  test('is refused without one: any other step would meet a broken image', () => {
    const resizeFirst = { ...base, steps: [{ size: '2M', shrink: false, preallocation: null }, ...base.steps] };
    assert.equal(damageUnrepaired(resizeFirst), true);
    assert.throws(() => parseCase(structuredClone(resizeFirst)), CaseFormatError);
  });
  test('names a kind the writer knows', () => {
    const unknown = { ...base, data: [{ op: 'damage', kind: 'refcount-sideways', pick: 0 }] };
    assert.throws(() => parseCase(unknown), /data\[0\]\.kind must be one of leak/);
  });
});

describe('repair coverage', () => {
  const c: Case = {
    image: { ...BASE_IMAGE, refcountBits: 4 },
    data: [
      { op: 'damage', kind: 'refcount-zero', pick: 1 },
      { op: 'damage', kind: 'refcount-high', pick: 2 },
    ],
    steps: [{ op: 'repair', tier: 'all' }],
  };
  const step = {
    index: 0,
    operation: 'repair',
    sizeBefore: 1048576,
    plan: { kind: 'all', target: null, accepted: true },
    stateBefore: { compat: '1.1', refcountBits: 4, lazyRefcounts: false, snapshots: 0 },
    reference: 'ok',
    subject: 'ok',
    subjectStderr: '',
    oracles: [],
  } satisfies StepRecord;
  const applied = (kind: 'refcount-zero' | 'refcount-high', hit: string | null) => ({
    kind,
    hit,
    role: null,
    patches: [],
  });

  test('counts the cells the written damage met, not a damage that found no place', () => {
    const cov = emptyCoverage();
    addCase(cov, c, {
      steps: [step],
      afterUse: null,
      baseReader: null,
      damage: [applied('refcount-zero', 'cluster 5 (data) refcount 1 -> 0'), applied('refcount-high', null)],
    });
    assert.deepEqual(cov.repairDamage, { 'refcount-zero/4/all': 1 });
    assert.match(
      coverageTable(cov),
      new RegExp(`repair damage x refcount width x tier: 1 of ${REPAIR_CELLS.length} cells`),
    );
  });
  test('has no cell for a 1-bit refcount one too high', () => {
    assert.ok(!REPAIR_CELLS.includes('refcount-high/1/leaks'));
    assert.equal(REPAIR_CELLS.length, 7 * 7 * 2 - 2);
  });
});

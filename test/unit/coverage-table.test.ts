// The run's coverage as the console shows it: a row per operation driven, and the gaps it warns of
// (only those of what the run aimed at).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { coverageGaps, coverageTable, emptyCoverage, type CoverageSummary } from '../../triage/coverage.ts';

function coverage(edit: (c: CoverageSummary) => void): CoverageSummary {
  const c = emptyCoverage();
  c.formats.qcow2!.cases = 10;
  c.formats.qcow2!.grow = 4;
  edit(c);
  return c;
}

test('a row per operation with steps: steps, accepted, per refcount width, kinds', () => {
  const c = coverage((c) => {
    c.operations.snapshot = { steps: 7, accepted: 5, kinds: { create: 4, apply: 3 } };
    c.operationByRefcount.snapshot = { '16': 4, '64': 1 };
  });
  const lines = coverageTable(c).split('\n');
  assert.match(lines[0]!, /^ {2}operation {2}steps {2}accepted {2}1-bit .* 64-bit {3}kinds$/);
  assert.deepEqual(
    lines.filter((l) => /^ {2}(resize|amend|snapshot) /.test(l)),
    ['  snapshot       7         5      0      0      0      0      4      0      1   create 4, apply 3'],
  );
});

test('no operation table for a summary without steps', () => {
  assert.doesNotMatch(coverageTable(emptyCoverage()), /operation/);
});

test('gaps: an operation qemu-img never took; shrinks only where the run drove them', () => {
  const snapshotsOnly = coverage((c) => {
    c.operations.snapshot = { steps: 7, accepted: 5, kinds: { create: 7 } };
    c.operations.resize = { steps: 2, accepted: 2, kinds: { grow: 2 } };
  });
  assert.deepEqual(coverageGaps(snapshotsOnly), []);
  const amendRefused = coverage((c) => {
    c.operations.amend = { steps: 3, accepted: 0, kinds: { invalid: 3 } };
    c.operations.resize = { steps: 5, accepted: 4, kinds: { grow: 4, shrink: 1 } };
  });
  const gaps = coverageGaps(amendRefused);
  assert.equal(gaps[0], 'amend x accepted');
  assert.ok(gaps.includes('qcow2 x shrink') && gaps.includes('refcount_bits=16 x grow'), gaps.join(', '));
  // resize alone: every refcount x step gap, as before other operations existed
  const resizeOnly = coverage((c) => (c.operations.resize = { steps: 4, accepted: 4, kinds: { grow: 4 } }));
  assert.ok(coverageGaps(resizeOnly).includes('refcount_bits=1 x shrinkDiscarding'));
});

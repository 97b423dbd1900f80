// What the testdata corpus covers: every oracle of the table and every finding kind the oracles can
// produce appears in at least one case's expectation. A new kind without a case fails here.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ORACLE_NAMES } from '../../oracles/table.ts';
import { caseFiles, JSON_KINDS, ORACLE_DIRS, readCase, type FindingView, type JsonKindName } from './testdata.ts';

// Read off the oracles (oracles/*.ts): the kinds each can report. After-use repeats the check and
// content kinds (oracles/after-use.ts) besides its own; stale-bytes-after-regrow needs a regrow
// probe, which after-use never has.
const CHECK_KINDS = ['check-failed', 'corruptions', 'check-errors', 'leaks'];
const CONTENT_KINDS = ['size-differs', 'content-differs', 'compare-failed'];
const KINDS: Record<string, string[]> = {
  'size-grammar': ['refused', 'accepted', 'read-differently'],
  outcome: ['crashed', 'timed-out', 'refused', 'accepted'],
  repair: ['exit-differs', 'counts-differ', 'json-invalid', 'quiet-printed'],
  'unchanged-on-refusal': ['image-modified-on-refusal'],
  bitmaps: ['bitmap-directory-differs', 'bitmap-bits-differ'],
  chain: [
    'member-missing',
    'member-extra',
    'member-unreadable',
    'member-check-failed',
    'member-backing-differs',
    'member-content-differs',
    'top-alone-differs',
  ],
  check: CHECK_KINDS,
  structure: [
    'unreadable',
    'header-inconsistent',
    'metadata-invalid',
    'refcount-mismatch',
    'copied-flag-mismatch',
    'beyond-eof',
    'mapping-beyond-end',
    'refcount-order-changed',
    'header-field-changed',
    'extension-lost',
    'extension-changed',
    'extension-added',
    'spec-violation',
    'structure-dropped',
  ],
  info: ['info-failed', 'info-mismatch'],
  output: ['quiet-printed', 'stdout-differs', 'json-invalid', 'json-incomplete', 'json-wrong'],
  'in-place': ['replaced', 'attributes-changed', 'files-left'],
  allocation: ['grown-range-differs', 'host-blow-up'],
  content: [...CONTENT_KINDS, 'stale-bytes-after-regrow'],
  'after-use': ['workload-failed', ...CHECK_KINDS, ...CONTENT_KINDS],
};

/** Oracles whose kinds are held by a table test of their own on recorded outputs, not yet by
 * testdata/ files: repair (test/unit/repair.test.ts). */
const OWN_TABLE_TESTS = ['repair'];

/** The directories whose expectations list findings. */
const FINDING_DIRS: JsonKindName[] = [...ORACLE_DIRS, 'images', 'format-images'];

async function findingsInTestdata(): Promise<FindingView[]> {
  const out: FindingView[] = [];
  for (const dir of FINDING_DIRS)
    for (const file of await caseFiles(dir))
      out.push(...(await readCase<unknown, { findings: FindingView[] }>(file)).expected.findings);
  return out;
}

test('every kind the oracles can report has a testdata case', async () => {
  const seen = new Set((await findingsInTestdata()).map((f) => `${f.oracle}/${f.kind}`));
  const wanted = Object.entries(KINDS)
    .filter(([oracle]) => !OWN_TABLE_TESTS.includes(oracle))
    .flatMap(([oracle, kinds]) => kinds.map((k) => `${oracle}/${k}`));
  assert.deepEqual(
    wanted.filter((k) => !seen.has(k)),
    [],
  );
  assert.deepEqual(
    [...seen].filter((k) => !wanted.includes(k)),
    [],
    'a kind testdata shows that the list above lacks: add it',
  );
});

test('the list of kinds names every oracle of the table, and each shows up in testdata', async () => {
  assert.deepEqual(Object.keys(KINDS).sort(), [...ORACLE_NAMES].sort());
  const oracles = new Set((await findingsInTestdata()).map((f) => f.oracle));
  assert.deepEqual(
    ORACLE_NAMES.filter((o) => !oracles.has(o) && !OWN_TABLE_TESTS.includes(o)),
    [],
  );
});

test('both sides of the findings qemu-img can be blamed for are covered', async () => {
  const sides = new Set((await findingsInTestdata()).map((f) => `${f.oracle}/${f.kind}/${f.side}`));
  for (const k of ['structure/unreadable', 'structure/refcount-mismatch', 'check/corruptions', 'info/info-failed'])
    for (const side of ['subject', 'reference']) assert.ok(sides.has(`${k}/${side}`), `${k}/${side}`);
});

test('the images cover every class of refcount mismatch', async () => {
  const classes = new Set<string>();
  for (const file of await caseFiles('images')) {
    const { expected } = await readCase<unknown, { subject: { mismatchCounts?: Record<string, number> } }>(file);
    for (const [cls, n] of Object.entries(expected.subject.mismatchCounts ?? {})) if (n > 0) classes.add(cls);
  }
  assert.deepEqual([...classes].sort(), ['leaked', 'overcounted', 'undercounted']);
});

test('every kind of case has cases', async () => {
  for (const dir of Object.keys(JSON_KINDS) as JsonKindName[])
    assert.ok((await caseFiles(dir)).length > 0, `testdata/${dir} has no case`);
});

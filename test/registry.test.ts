import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { caseAt } from '../generators/cases.ts';
import {
  CASE_FIELDS,
  ENTRY_FIELDS,
  MATCH_FIELDS,
  caseFacts,
  loadRegistry,
  matchKnown,
  parseRegistry,
  type KnownDivergence,
} from '../triage/registry.ts';
import { type Case } from '../model/case.ts';
import { planStep } from '../model/plan.ts';
import { type StepRecord } from '../exec/run-case.ts';
import { type StepFinding } from '../oracles/finding.ts';

const entry = (match: Record<string, unknown>, id = 'e1') => ({ id, description: 'd', link: 'l', match });
const parse = (divergences: unknown[]) => parseRegistry(JSON.stringify({ divergences }), 'reg.json');

describe('registry validation', () => {
  it('loads the shipped registry', async () => {
    const entries = await loadRegistry('known-divergences.json');
    assert.ok(entries.length >= 3);
  });
  it('names the entry and the field of every mistake', () => {
    assert.throws(
      () => parse([entry({ kind: 'x', case: { refcountBits: [3] } }, 'bad-width')]),
      /divergences\[0\] \("bad-width"\)\.match\.case\.refcountBits has an element that must be one of 1, 2, 4/,
    );
    assert.throws(
      () => parse([entry({ kind: 'x', detail: '(' })]),
      /divergences\[0\] \("e1"\)\.match\.detail is not a valid regular expression/,
    );
    assert.throws(() => parse([entry({ kind: 'x', colour: 'red' })]), /match\.colour is not a known field/);
    assert.throws(() => parse([{ id: 'e2', description: 'd', match: { kind: 'x' } }]), /\("e2"\)\.link is missing/);
    assert.throws(() => parse([entry({ oracle: 'outcome' })]), /match\.kind is missing/);
    assert.throws(
      () => parse([entry({ kind: 'x' }), entry({ kind: 'y' })]),
      /divergences\[1\] \("e1"\)\.id is used by an earlier entry/,
    );
    assert.throws(() => parseRegistry('{"divergences": [', 'reg.json'), /reg\.json is not valid JSON/);
    assert.throws(() => parseRegistry('[]', 'reg.json'), /must be an object \{"divergences"/);
  });
  it('matches the JSON schema field for field', async () => {
    const schema = JSON.parse(await readFile('known-divergences.schema.json', 'utf8'));
    const item = schema.properties.divergences.items;
    const keys = (o: object) =>
      Object.keys(o)
        .filter((k) => k !== '$comment' && k !== 'match' && k !== 'case')
        .sort();
    assert.deepEqual(keys(item.properties), keys(ENTRY_FIELDS));
    assert.deepEqual(keys(item.properties.match.properties), keys(MATCH_FIELDS));
    assert.deepEqual(
      Object.keys(item.properties.match.properties.case.properties).sort(),
      Object.keys(CASE_FIELDS).sort(),
    );
  });
});

describe('registry matching', () => {
  const c: Case = {
    ...caseAt(1, 0),
    image: { ...caseAt(1, 0).image, refcountBits: 4, clusterSize: 512, extendedL2: false },
    steps: [{ size: '1048576', shrink: true, preallocation: null }],
  };
  const step: StepRecord = {
    index: 0,
    sizeBefore: 16 * 2 ** 20,
    plan: planStep(c.steps[0]!, 16 * 2 ** 20),
    reference: 'ok',
    subject: 'refused',
    subjectStderr: 'too many L2 tables to stage',
    oracles: [],
  };
  const finding: StepFinding = {
    oracle: 'outcome',
    kind: 'outcome-mismatch',
    side: 'subject',
    detail: 'reference=ok,subject=refused,step=shrink',
    message: '',
    step: 0,
  };
  const registry = (match: Record<string, unknown>): KnownDivergence[] => parse([entry(match)]);
  const facts = caseFacts(c, step);

  it('computes how many L2 tables a shrink discards', () =>
    assert.equal(facts.shrinkL2Tables, (15 * 2 ** 20) / (512 * 64)));
  it('matches on kind, detail, stderr and case predicates together', () => {
    assert.ok(
      matchKnown(
        registry({
          kind: 'outcome-mismatch',
          detail: 'subject=refused',
          subjectStderr: 'stage',
          case: { refcountBits: [4], shrinkL2TablesAtLeast: 257 },
        }),
        finding,
        facts,
        step.subjectStderr,
      ),
    );
  });
  it('does not match a different kind of failure on the same input', () => {
    const reg = registry({ kind: 'outcome-mismatch', case: { refcountBits: [4] } });
    assert.equal(
      matchKnown(reg, { ...finding, oracle: 'check', kind: 'corruptions', detail: 'corruptions' }, facts, ''),
      null,
    );
  });
  it('states backing images (against the size before the step) and data files as facts', () => {
    const neither = caseFacts({ ...c, image: { ...c.image, backing: null, dataFile: 'none' } }, step);
    const backed: Case = {
      ...c,
      image: { ...c.image, backing: { virtualSize: 8 * 2 ** 20, data: [] }, dataFile: 'data_file' },
    };
    assert.equal(neither.backingFile, 'none');
    assert.equal(neither.dataFile, 'none');
    assert.equal(caseFacts(backed, step).backingFile, 'shorter');
    assert.equal(caseFacts(backed, { ...step, sizeBefore: 4 * 2 ** 20 }).backingFile, 'longer');
    assert.equal(caseFacts(backed, step).dataFile, 'data_file');
  });
  it("the shipped registry knows instar's refusal of backing images and data files, and qemu's v2 grow over a longer backing image", async () => {
    const shipped = await loadRegistry('known-divergences.json');
    const refused = { ...finding, detail: 'reference=ok,subject=refused,step=grow' };
    const plain: Case = {
      ...c,
      image: { ...c.image, bitmaps: 0, dirty: false, compressionType: 'zlib', backing: null, dataFile: 'none' },
      steps: [{ size: '32M', shrink: false, preallocation: null }],
    };
    const grow: StepRecord = { ...step, plan: planStep(plain.steps[0]!, 16 * 2 ** 20) };
    const id = (x: Case, f: StepFinding = refused, s: StepRecord = grow) =>
      matchKnown(shipped, f, caseFacts(x, s), '')?.id ?? null;
    assert.equal(id(plain), null);
    assert.equal(
      id({ ...plain, image: { ...plain.image, backing: { virtualSize: 2 ** 20, data: [] } } }),
      'instar-refuses-backing-files',
    );
    assert.equal(
      id({ ...plain, image: { ...plain.image, dataFile: 'data_file_raw' } }),
      'instar-refuses-external-data-files',
    );
    const modified: StepFinding = {
      oracle: 'unchanged-on-refusal',
      kind: 'image-modified-on-refusal',
      side: 'reference',
      detail: 'hash-changed',
      message: '',
      step: 0,
    };
    const v2 = {
      ...plain,
      image: {
        ...plain.image,
        compat: '0.10' as const,
        refcountBits: 16 as const,
        backing: { virtualSize: 32 * 2 ** 20, data: [] },
      },
    };
    assert.equal(
      id(v2, modified, { ...grow, reference: 'refused', subject: 'refused' }),
      'qemu-v2-grow-over-longer-backing',
    );
    assert.equal(id({ ...v2, image: { ...v2.image, compat: '1.1' } }, modified, grow), null, 'only version 2 images');
  });
  it('does not match when any predicate fails', () => {
    for (const match of [
      { kind: 'outcome-mismatch', case: { refcountBits: [16] } },
      { kind: 'outcome-mismatch', subjectStderr: 'bitmap' },
      { kind: 'outcome-mismatch', side: 'reference' },
      { kind: 'outcome-mismatch', case: { shrinkL2TablesAtLeast: 1000 } },
    ]) {
      assert.equal(matchKnown(registry(match), finding, facts, step.subjectStderr), null, JSON.stringify(match));
    }
  });
});

// The known-divergence registry on written cases (testdata/registry, testdata/registry-invalid):
// which entry of the shipped known-divergences.json (or of a case's own entries) explains a
// finding, the case facts entries test, and the message that rejects a malformed registry.
import assert from 'node:assert/strict';
import { ALL_STEP_KINDS, OPERATIONS } from '../../operations/table.ts';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  byQemuVersion,
  CASE_FIELDS,
  ENTRY_FIELDS,
  MATCH_FIELDS,
  loadRegistry,
  parseRegistry,
  qemuVersionOf,
  type CaseFacts,
} from '../../triage/registry.ts';
import { caseFiles, judged, ROOT, UPDATE_HINT, type JsonKindName, type RegistryInput } from './testdata.ts';

for (const dir of ['registry', 'registry-invalid'] as JsonKindName[]) {
  const files = await caseFiles(dir);
  describe(`testdata/${dir}: stored expectations are what the inputs give`, () => {
    for (const file of files) {
      test(file, async () => {
        const { stored, computed } = await judged(dir, file);
        assert.deepEqual(computed, stored, `${file}: ${UPDATE_HINT}`);
      });
    }
  });
}

type Matched = { facts: CaseFacts; known: string | null; messageDiffers: string[] };
const registry = (name: string) => judged<RegistryInput, Matched>('registry', `registry/${name}.json`);
const known = async (name: string) => (await registry(name)).computed.known;
const rejection = async (name: string) =>
  (await judged<unknown, { error: string | null }>('registry-invalid', `registry-invalid/${name}.json`)).computed.error;

describe('registry validation', () => {
  test('loads the shipped registry', async () => {
    assert.ok((await loadRegistry(join(ROOT, 'known-divergences.json'))).length >= 3);
  });
  test('names the entry and the field of every mistake', async () => {
    const cases: [string, RegExp][] = [
      [
        'bad-refcount-width',
        /divergences\[0\] \("bad-width"\)\.match\.case\.refcountBits has an element that must be one of 1, 2, 4/,
      ],
      ['bad-regex', /divergences\[0\] \("e1"\)\.match\.detail is not a valid regular expression/],
      ['unknown-field', /match\.colour is not a known field/],
      ['missing-link', /\("e2"\)\.link is missing/],
      ['missing-kind', /match\.kind is missing/],
      ['duplicate-id', /divergences\[1\] \("e1"\)\.id is used by an earlier entry/],
      ['not-json', /registry\.json is not valid JSON/],
      ['not-an-object', /must be an object \{"divergences"/],
    ];
    for (const [name, message] of cases) assert.match((await rejection(name)) ?? 'accepted', message, name);
  });
  test('accepts an entry with every optional field', async () => assert.equal(await rejection('valid'), null));
  test('matches the JSON schema field for field', async () => {
    const schema = JSON.parse(await readFile(join(ROOT, 'known-divergences.schema.json'), 'utf8'));
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
    // every operation's step kinds and names, as the operation table has them
    const predicates = item.properties.match.properties.case.properties;
    assert.deepEqual(predicates.stepKind.items.enum, ALL_STEP_KINDS);
    assert.deepEqual(predicates.operation.items.enum, Object.keys(OPERATIONS));
  });
});

describe('case facts', () => {
  test('count the L2 tables a shrink discards', async () => {
    // 512-byte clusters: one L2 table maps 64 clusters, 32 KiB
    assert.equal((await registry('shrink-staging-limit')).computed.facts.shrinkL2Tables, (15 * 2 ** 20) / (512 * 64));
    assert.equal((await registry('shrink-at-staging-limit')).computed.facts.shrinkL2Tables, 256);
  });
  test('state backing images against the size before the step, and data files', async () => {
    const facts = async (name: string) => (await registry(name)).computed.facts;
    assert.equal((await facts('plain-refusal')).backingFile, 'none');
    assert.equal((await facts('plain-refusal')).dataFile, 'none');
    assert.equal((await facts('backing-shorter')).backingFile, 'shorter');
    assert.equal((await facts('backing-longer')).backingFile, 'longer');
    assert.equal((await facts('data-file-raw')).dataFile, 'data_file_raw');
  });
});

describe('registry matching', () => {
  test('matches on kind, detail, stderr and case predicates together', async () =>
    assert.equal(await known('custom-all-predicates'), 'e1'));
  test('does not match when any predicate fails', async () => {
    for (const name of [
      'refcount-bits-differ',
      'stderr-differs',
      'side-differs',
      'too-few-l2-tables',
      'detail-differs',
    ])
      assert.equal(await known(`custom-${name}`), null, name);
  });
  test('does not match a different kind of failure on the same input', async () => {
    assert.equal(await known('bitmaps'), 'instar-refuses-persistent-bitmaps');
    assert.equal(await known('other-kind-same-input'), null);
    assert.equal(await known('accepted-not-refused'), null);
  });
  test("knows instar's documented refusals, only past the staging limit for shrinks", async () => {
    assert.equal(await known('plain-refusal'), null);
    assert.equal(await known('backing-shorter'), 'instar-refuses-backing-files');
    assert.equal(await known('data-file-raw'), 'instar-refuses-external-data-files');
    assert.equal(await known('shrink-staging-limit'), 'instar-shrink-staging-limit');
    assert.equal(await known('shrink-at-staging-limit'), null);
  });
  test("knows qemu-img's own behaviour, on the reference side only; v2 grows over longer backing only", async () => {
    assert.equal(await known('qemu-repairs-dirty'), 'qemu-repairs-dirty-image-before-refusing');
    assert.equal(await known('subject-modified-dirty'), null);
    assert.equal(await known('qemu-v2-grow-over-longer-backing'), 'qemu-v2-grow-over-longer-backing');
    assert.equal(await known('v3-grow-over-longer-backing'), null);
    assert.equal(await known('regrow-quirk'), 'qemu-regrow-shows-old-bytes');
  });
});

describe("instar's messages", () => {
  test('a documented refusal is known by its message, in either wording instar has used', async () => {
    assert.equal(await known('zstd'), 'instar-refuses-zstd');
    assert.equal(await known('bitmaps-docs-message'), 'instar-refuses-persistent-bitmaps');
    assert.equal(await known('shrink-below-one-cluster'), 'instar-refuses-shrink-below-one-cluster');
    assert.equal(await known('shrink-rounded-down'), 'instar-shrink-rounds-down-to-cluster');
    assert.equal(await known('grow-smaller-at-boundary'), null);
  });
  test('a refusal for another reason is new, and names the entry whose message it missed', async () => {
    const reworded = (await registry('zstd-reworded')).computed;
    assert.deepEqual([reworded.known, reworded.messageDiffers], [null, ['instar-refuses-zstd']]);
    const older = (await registry('dirty-old-double')).computed;
    assert.deepEqual([older.known, older.messageDiffers], [null, ['instar-refuses-dirty-images']]);
  });
});

describe('qemu version ranges', () => {
  const entries = parseRegistry(
    JSON.stringify({
      divergences: [
        { id: 'any', description: 'd', link: 'l', match: { kind: 'k' } },
        { id: 'old', description: 'd', link: 'l', qemuVersions: { below: '8.0' }, match: { kind: 'k' } },
        { id: 'new', description: 'd', link: 'l', qemuVersions: { from: '10.0' }, match: { kind: 'k' } },
        {
          id: 'mid',
          description: 'd',
          link: 'l',
          qemuVersions: { from: '7.2', below: '10.0.2' },
          match: { kind: 'k' },
        },
      ],
    }),
    'registry.json',
  );
  const active = (line: string) => byQemuVersion(entries, qemuVersionOf(line)).active.map((e) => e.id);
  test("apply by the reference's version line, from inclusive, below exclusive", () => {
    assert.deepEqual(active('qemu-img version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)'), ['any', 'old', 'mid']);
    assert.deepEqual(active('qemu-img version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)'), ['any', 'new']);
    assert.deepEqual(active('qemu-img version 10.0.0'), ['any', 'new', 'mid']);
    assert.deepEqual(active('qemu-img version 6.2.0'), ['any', 'old']);
  });
  test('keep every entry when the version cannot be read', () =>
    assert.deepEqual(active('unknown (qemu-img --version exited 1)'), ['any', 'old', 'new', 'mid']));
});

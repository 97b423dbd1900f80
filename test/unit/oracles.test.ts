// The step and after-use oracles on recorded observations (testdata/check, info, compare, outcome,
// unchanged, after-use, steps): every case's stored expectation is what its input gives, and the
// behaviours each oracle promises hold on the cases recorded to show them.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { rawGrownCounts } from '../../oracles/allocation.ts';
import { readableWindow, regrowWindows } from '../../oracles/content.ts';
import { infoOracle, parseInfo } from '../../oracles/info.ts';
import { classifyOutcome } from '../../oracles/outcome.ts';
import { snapshotTableDifferences } from '../../oracles/structure.ts';
import { ORACLES } from '../../oracles/table.ts';
import {
  caseFiles,
  judged,
  kindsOf,
  ORACLE_DIRS,
  UPDATE_HINT,
  type CheckInput,
  type CompareInput,
  type FindingView,
  type InfoInput,
  type JsonKindName,
  type OutcomeInput,
  type UnchangedInput,
} from './testdata.ts';

for (const dir of ORACLE_DIRS) {
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

type Findings = { findings: FindingView[] };
/** The `oracle/kind/side` of the findings a case's input gives now. */
const kinds = async (dir: JsonKindName, name: string) =>
  kindsOf((await judged<unknown, Findings>(dir, `${dir}/${name}.json`)).computed);
const details = async (dir: JsonKindName, name: string) =>
  (await judged<unknown, Findings>(dir, `${dir}/${name}.json`)).computed.findings.map((f) => f.detail);

describe('size-grammar oracle', () => {
  test('names a refusal, an acceptance or a reading that follows from how SIZE is written', async () => {
    assert.deepEqual(await kinds('size-grammar', 'grammar-refused'), ['size-grammar/refused/subject']);
    assert.deepEqual(await details('size-grammar', 'grammar-refused'), ['form=fraction-upper']);
    assert.deepEqual(await kinds('size-grammar', 'grammar-accepted'), ['size-grammar/accepted/subject']);
    assert.deepEqual(await kinds('size-grammar', 'grammar-read-differently'), [
      'size-grammar/read-differently/subject',
    ]);
  });
  test('leaves sizes in plain bytes to the outcome oracle', async () =>
    assert.deepEqual(await kinds('size-grammar', 'grammar-plain'), []));
});

describe('output oracle', () => {
  test('checks a JSON report against the images, field by field', async () => {
    assert.deepEqual(await kinds('output', 'json-faithful'), []);
    assert.deepEqual(await kinds('output', 'json-old-size-from-file'), ['output/json-wrong/subject']);
    assert.deepEqual(await details('output', 'json-old-size-from-file'), ['old_virtual_size']);
    assert.deepEqual(await details('output', 'json-incomplete'), ['action,new_file_size']);
    assert.deepEqual(await kinds('output', 'json-invalid'), ['output/json-invalid/subject']);
  });
  test('judges a JSON report by the size read from the image, not by what the case predicts', async () =>
    // qemu's rules predict 3072 before this step (a grow before it that both tools refused)
    assert.deepEqual(await kinds('output', 'json-after-refused-step'), []));
  test("holds human output to qemu-img's words and -q to silence", async () => {
    assert.deepEqual(await kinds('output', 'human-faithful'), []);
    assert.deepEqual(await kinds('output', 'human-output-differs'), ['output/stdout-differs/subject']);
    assert.deepEqual(await kinds('output', 'quiet-faithful'), []);
    assert.deepEqual(await kinds('output', 'quiet-printed'), ['output/quiet-printed/subject']);
  });
});

describe('allocation oracle', () => {
  test('compares the grown range by allocation status, and host space against a tolerance', async () => {
    assert.deepEqual(await kinds('allocation', 'grow-sparse-alike'), []);
    assert.deepEqual(await details('allocation', 'full-ignored'), ['preallocation=full,subject=none,qemu=data']);
    assert.deepEqual(await details('allocation', 'metadata-as-data'), [
      'preallocation=metadata,subject=data,qemu=metadata',
      'preallocation=metadata',
    ]);
    assert.deepEqual(await details('allocation', 'sparse-grow-allocates'), [
      'preallocation=none,subject=mixed,qemu=none',
    ]);
    assert.deepEqual(await kinds('allocation', 'host-blow-up'), ['allocation/host-blow-up/subject']);
    assert.deepEqual(await kinds('allocation', 'host-within-tolerance'), []);
  });

  // a raw grow is read from how many host bytes each side's file grew by
  const KIB = 1024;
  const rawGrows: [string, number, number, number, { normal: number; unallocated: number }][] = [
    ['a grow inside one host block is not judged', 512, 1024, 4 * KIB, { normal: 0, unallocated: 0 }],
    ['a sparse grow allocates nothing', 512, 64 * KIB, 0, { normal: 0, unallocated: 60 * KIB }],
    ['the blocks at its ends count for nothing', 512, 64 * KIB, 8 * KIB, { normal: 0, unallocated: 60 * KIB }],
    ['a falloc grow allocates the blocks inside', 512, 64 * KIB, 64 * KIB, { normal: 60 * KIB, unallocated: 0 }],
    ['a part of them is a part', 0, 64 * KIB, 40 * KIB, { normal: 32 * KIB, unallocated: 32 * KIB }],
  ];
  for (const [why, from, to, grewBy, expected] of rawGrows)
    test(`raw grown range: ${why}`, () => {
      const { normal, unallocated } = rawGrownCounts(from, to, grewBy);
      assert.deepEqual({ normal, unallocated }, expected);
    });
});

describe('in-place oracle', () => {
  test('names a replaced image, changed attributes and files left, each apart', async () => {
    assert.deepEqual(await kinds('in-place', 'in-place'), []);
    assert.deepEqual(await kinds('in-place', 'replaced'), ['in-place/replaced/subject']);
    assert.deepEqual(await details('in-place', 'mode-changed'), ['mode']);
    assert.deepEqual(await details('in-place', 'owner-changed'), ['owner']);
    assert.deepEqual(await details('in-place', 'files-left'), ['<image>.journal-<n>']);
  });
  test('leaves an image that is gone to the structure oracle', async () =>
    assert.deepEqual(await kinds('in-place', 'image-gone'), []));
});

describe('outcome oracle', () => {
  const outcome = (name: string) => judged<OutcomeInput, Findings>('outcome', `outcome/${name}.json`);
  test('classifies exit codes, signals and timeouts', async () => {
    const classes = async (name: string) => {
      const { input } = await outcome(name);
      return [classifyOutcome(input.reference), classifyOutcome(input.subject)];
    };
    assert.deepEqual(await classes('faithful-shrink'), ['ok', 'ok']);
    assert.deepEqual(await classes('both-refused'), ['refused', 'refused']);
    assert.deepEqual(await classes('crashed'), ['ok', 'crashed']);
    assert.deepEqual(await classes('killed'), ['ok', 'crashed']);
    assert.deepEqual(await classes('timed-out'), ['ok', 'timed-out']);
    assert.deepEqual(await classes('spawn-error'), ['ok', 'refused'], 'a subject that cannot start refused');
  });
  test('treats any two refusals as agreement, whatever the codes and messages', async () => {
    const a = (await outcome('both-refused')).input;
    const b = (await outcome('both-refused-other-code')).input;
    assert.notEqual(a.subject.exitCode, b.subject.exitCode);
    assert.notEqual(a.subject.stderr, b.subject.stderr);
    for (const name of ['both-refused', 'both-refused-other-code', 'invalid-size', 'dirty-repaired'])
      assert.deepEqual(await kinds('outcome', name), [], name);
  });
  test('names a refusal only the subject makes by its message', async () => {
    assert.deepEqual(await kinds('outcome', 'subject-refused'), ['outcome/refused/subject']);
    assert.match((await details('outcome', 'subject-refused'))[0]!, /^instar-double: refusing to shrink/);
    const [silent] = await details('outcome', 'touched-reference-accepted');
    assert.match(silent!, /without a message/);
  });
  test("names an acceptance by qemu-img's refusal alone, wherever the subject's size landed", async () => {
    assert.deepEqual(await kinds('outcome', 'subject-accepted-unchanged'), ['outcome/accepted/subject']);
    // one cause, one signature: the size landing (unchanged, as asked) is a second behaviour
    const [unchanged] = await details('outcome', 'subject-accepted-unchanged');
    const [shrunk] = await details('outcome', 'subject-accepted-shrunk');
    assert.match(unchanged!, /--shrink/);
    assert.doesNotMatch(`${unchanged}${shrunk}`, /size (unchanged|as-asked)/);
  });
  test('reports a subject crash or timeout even when qemu-img refused or did the same', async () => {
    assert.deepEqual(await kinds('outcome', 'crashed-reference-refused'), ['outcome/crashed/subject']);
    assert.deepEqual(await kinds('outcome', 'timed-out-both'), [
      'outcome/timed-out/subject',
      'outcome/timed-out/reference',
    ]);
  });
});

describe('unchanged-on-refusal oracle', () => {
  test('is silent when the refusing sides left their files as they were', async () => {
    for (const name of ['both-refused', 'subject-refused', 'spawn-error'])
      assert.deepEqual(await kinds('unchanged', name), [], name);
  });
  test('reports a subject that changed the image where qemu-img did not, or accepted', async () => {
    assert.deepEqual(await kinds('unchanged', 'touched-on-refusal'), [
      'unchanged-on-refusal/image-modified-on-refusal/subject',
    ]);
    const accepted = await judged<UnchangedInput, Findings>('unchanged', 'unchanged/touched-reference-accepted.json');
    assert.equal(accepted.input.reference, null);
    assert.deepEqual(kindsOf(accepted.computed), ['unchanged-on-refusal/image-modified-on-refusal/subject']);
  });
  test('reports qemu-img changing an image it refused; a subject doing the same agrees', async () => {
    const { input, computed } = await judged<UnchangedInput, Findings>('unchanged', 'unchanged/dirty-repaired.json');
    assert.notEqual(input.reference!.before, input.reference!.after);
    assert.notEqual(input.subject!.before, input.subject!.after);
    assert.deepEqual(kindsOf(computed), ['unchanged-on-refusal/image-modified-on-refusal/reference']);
  });
});

describe('check oracle', () => {
  test('is silent on a clean subject, and qemu-img check of qemu result is not needed then', async () => {
    const { input, computed } = await judged<CheckInput, Findings>('check', 'check/faithful-shrink.json');
    assert.equal(input.reference, null);
    assert.deepEqual(computed.findings, []);
  });
  test('reports corruptions before the leaks of the same image', async () => {
    const { input } = await judged<CheckInput>('check', 'check/l2-offset-unaligned.json');
    const report = JSON.parse(input.subject.stdout) as { corruptions?: number; leaks?: number };
    assert.ok(report.corruptions && report.leaks, 'the image has both');
    assert.deepEqual(await kinds('check', 'l2-offset-unaligned'), ['check/corruptions/subject']);
  });
  test("reports leaks only when qemu-img's result has none", async () => {
    assert.deepEqual(await kinds('check', 'leak-on-shrink'), ['check/leaks/subject']);
    assert.deepEqual(await kinds('check', 'leaks-both'), []);
  });
  test('reports check errors, and images that cannot be checked', async () => {
    assert.deepEqual(await kinds('check', 'check-errors'), ['check/check-errors/subject']);
    for (const name of ['truncated-to-zero', 'deleted', 'check-failed-io-error', 'l1-size-too-small'])
      assert.deepEqual(await kinds('check', name), ['check/check-failed/subject'], name);
  });
  test('blames qemu-img, not the subject, when its own result is corrupt the same way', async () =>
    assert.deepEqual(await kinds('check', 'undercounted-both'), ['check/corruptions/reference']));
  test('names refcount damage by the structure it hit, #365 by the refcount width group', async () => {
    assert.deepEqual(await details('check', 'undercounted'), ['undercounted:data']);
    for (const bits of [1, 2, 4])
      assert.deepEqual(await details('check', `365-stride-${bits}bit`), ['refcount-blocks-garbled:sub-byte']);
  });
});

describe('info oracle', () => {
  test('ignores host layout such as actual-size', async () => {
    const { input, computed } = await judged<InfoInput, Findings>('info', 'info/same-fields.json');
    const actual = (s: string) => (JSON.parse(s) as { 'actual-size': number })['actual-size'];
    assert.notEqual(actual(input.reference.stdout), actual(input.subject.stdout));
    assert.deepEqual(computed.findings, []);
  });
  test('names every differing field, sorted, in the detail', async () => {
    assert.deepEqual(await details('info', 'two-fields'), ['refcount-bits']);
    assert.deepEqual(await details('info', 'compat'), ['compat,corrupt,extended-l2,lazy-refcounts']);
  });
  test('shows a field one side lacks as absent', async () => {
    const { input } = await judged<InfoInput, Findings>('info', 'info/compat.json');
    const observed = (o: InfoInput['reference']) => parseInfo(o.exitCode, o.stdout, '');
    const [finding] = infoOracle(observed(input.reference), observed(input.subject));
    assert.match(finding!.message, /lazy-refcounts \(qemu false, subject absent\)/);
  });
  test("leaves the virtual size to the content oracle's size-differs", async () =>
    assert.deepEqual(await kinds('info', 'virtual-size'), []));
  test('reports a result that qemu-img info cannot read, the subject first', async () => {
    assert.deepEqual(await kinds('info', 'truncated-to-zero'), ['info/info-failed/subject']);
    assert.deepEqual(await kinds('info', 'reference-failed'), ['info/info-failed/reference']);
    assert.deepEqual(await kinds('info', 'both-failed'), ['info/info-failed/subject']);
  });
});

describe('content oracle', () => {
  const compare = (name: string) =>
    judged<CompareInput, Findings & { firstMismatch: number | null }>('compare', `compare/${name}.json`);
  test('is silent on identical results', async () => assert.deepEqual(await kinds('compare', 'faithful-shrink'), []));
  test('reports a size difference that compare alone only warns about', async () => {
    const { input, computed } = await compare('size-differs');
    assert.equal(input.compare.exitCode, 0);
    assert.deepEqual(kindsOf(computed), ['content/size-differs/subject']);
  });
  test('reports differing content with the first offset, the same signature wherever it lies', async () => {
    const [a, b] = [await compare('differs-at-512'), await compare('differs-at-3m')];
    assert.equal(a.computed.firstMismatch, 512);
    assert.notEqual(a.computed.firstMismatch, b.computed.firstMismatch);
    assert.deepEqual(kindsOf(a.computed), ['content/content-differs/subject']);
    assert.equal(a.computed.findings[0]!.signature, b.computed.findings[0]!.signature);
  });
  test('leaves a missing size to the info oracle', async () =>
    assert.deepEqual(await kinds('compare', 'size-unknown'), []));
  test('reports a compare that fails', async () =>
    assert.deepEqual(await kinds('compare', 'deleted'), ['content/compare-failed/subject']));
});

describe('regrow quirk', () => {
  test('blames qemu when its result shows old bytes where the subject reads zeros', async () =>
    assert.deepEqual(await kinds('compare', 'regrow-quirk'), ['content/stale-bytes-after-regrow/reference']));
  test('leaves the difference to the content oracle otherwise', async () => {
    for (const name of ['regrow-subject-data', 'regrow-both-data']) {
      const { input } = await judged<CompareInput>('compare', `compare/${name}.json`);
      assert.ok(input.regrow && input.regrow.subjectReadsZero === false, `${name}: the subject shows bytes`);
      assert.deepEqual(await kinds('compare', name), ['content/content-differs/subject'], name);
    }
  });
});

describe('after-use oracle', () => {
  test('reports the workload failing on one side, on the side it failed', async () => {
    assert.deepEqual(await kinds('after-use', 'used-workload-failed'), ['after-use/workload-failed/subject']);
    assert.deepEqual(await kinds('after-use', 'used-workload-failed-reference'), [
      'after-use/workload-failed/reference',
    ]);
  });
  test('repeats the check and content oracles under its own name, their signatures as theirs', async () => {
    const { computed } = await judged<unknown, Findings>('after-use', 'after-use/used-leaks.json');
    assert.deepEqual(kindsOf(computed), ['after-use/leaks/subject']);
    assert.match(computed.findings[0]!.signature, /^check\/leaks\/subject\//);
    assert.deepEqual(await kinds('after-use', 'used-clean'), []);
  });
});

describe('the oracle table', () => {
  // in-place and allocation judge stats of the images and their grown ranges, which the recorded
  // steps do not hold (their own cases are in testdata/in-place/ and testdata/allocation/); repair
  // judges repair steps only (test/unit/repair.test.ts); bitmaps, images with bitmaps only
  // (testdata/images/bitmap-*); chain, commit and rebase steps only (testdata/chain/)
  const stepOracles: string[] = ORACLES.filter(
    (o) => o.stage === 'step' && !['in-place', 'allocation', 'repair', 'bitmaps', 'chain'].includes(o.name),
  ).map((o) => o.name);
  // the oracles of results, and output, which judges what a subject that accepted printed
  const onResults = ['check', 'structure', 'info', 'content', 'output'];
  test('judges a refused step without the oracles of results', async () => {
    const { computed } = await judged<unknown, { oracles: string[] }>('steps', 'steps/touched-on-refusal.json');
    assert.deepEqual(
      computed.oracles,
      stepOracles.filter((o) => !onResults.includes(o)),
    );
  });
  test('judges an accepted step by every step oracle but unchanged-on-refusal, from cause to symptom', async () => {
    const { computed } = await judged<unknown, Findings & { oracles: string[] }>('steps', 'steps/deleted.json');
    assert.deepEqual(
      computed.oracles,
      stepOracles.filter((o) => o !== 'unchanged-on-refusal'),
    );
    assert.equal(computed.findings[0]!.kind, 'unreadable', 'the missing image before what it causes');
  });
});

describe('regrow windows, from the sizes observed on qemu results', () => {
  test('open where a shrink inside a cluster is followed by a grow', () =>
    assert.deepEqual(
      regrowWindows(
        [
          { before: 1 << 20, after: 1536 },
          { before: 1536, after: 1 << 20 },
        ],
        65536,
      ),
      [{ start: 1536, end: 65536 }],
    ));
  test('stay closed for cluster-aligned shrinks, shrinks never followed by a grow, and refused steps', () => {
    const grow = { before: 65536, after: 1 << 20 };
    assert.deepEqual(regrowWindows([{ before: 1 << 20, after: 65536 }, grow], 65536), []);
    assert.deepEqual(regrowWindows([{ before: 1 << 20, after: 1536 }], 65536), []);
    // a shrink both tools refused (after: null) opens nothing, whatever the case asked for
    assert.deepEqual(regrowWindows([{ before: 1 << 20, after: null }, grow], 65536), []);
  });
  test('are read only as far as the image now reaches (seed 1, iteration 105: 512 to 1024 of 8 KiB)', () => {
    assert.deepEqual(readableWindow({ start: 512, end: 8192 }, 1024), { start: 512, end: 1024 });
    assert.deepEqual(readableWindow({ start: 512, end: 8192 }, 1 << 20), { start: 512, end: 8192 });
    assert.deepEqual(readableWindow({ start: 512, end: 8192 }, null), { start: 512, end: 8192 });
    assert.equal(readableWindow({ start: 512, end: 8192 }, 512), null);
  });
});

describe('the snapshot table, compared with qemu result', () => {
  const entry = { id: '1', name: 'base', l1Size: 1, diskSize: 1048576, vmStateSize: 0 };
  const table = (...entries: (typeof entry)[]) =>
    ({ snapshotTable: entries }) as unknown as Parameters<typeof snapshotTableDifferences>[0];
  test('names each field that differs, entry by entry', () => {
    const ref = table(entry, { ...entry, id: '3', name: 'step2' });
    assert.deepEqual(snapshotTableDifferences(ref, ref), []);
    assert.deepEqual(snapshotTableDifferences(ref, table(entry, { ...entry, id: '2', name: 'step2' })), ['id']);
    const other = table({ ...entry, l1Size: 2, diskSize: 2097152 }, { ...entry, id: '3', name: 'x' });
    assert.deepEqual(snapshotTableDifferences(ref, other), ['name', 'l1-size', 'disk-size']);
  });
  test('a snapshot more is "entries"', () =>
    assert.deepEqual(snapshotTableDifferences(table(entry), table(entry, entry)), ['entries']));
});

// parseConvertedInfo on what qemu-img 7.2 printed for a vmdk, a vhdx and a fixed vpc it made, and
// on that vmdk with its descriptor damaged as a resizer might leave it
// (testdata/converted-info.json: `qemu-img info --output=json -f FORMAT`, the vmdk's embedded
// descriptor as read at sector 1).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { infoOracle, parseConvertedInfo, type InfoObservation } from '../../oracles/info.ts';

interface Recorded {
  name: string;
  stdout: string;
  descriptor: string | null;
  expected: unknown;
}

const recorded = JSON.parse(
  readFileSync(new URL('../../testdata/converted-info.json', import.meta.url), 'utf8'),
) as Recorded[];

for (const r of recorded) {
  test(r.name, () => {
    // as stored: fields a format lacks are absent
    const parsed = JSON.parse(JSON.stringify(parseConvertedInfo(0, r.stdout, '', r.descriptor))) as unknown;
    assert.deepEqual(parsed, r.expected);
  });
}

test('the recorded expectations say what the damage is: an old extent size, no adapter type', () => {
  const fields = (r: Recorded) => (r.expected as { fields: Record<string, unknown> }).fields;
  const [made, damaged] = [recorded[0]!, recorded[3]!];
  assert.equal(fields(made)['descriptor-extents'], 'RW disk SPARSE');
  assert.equal(fields(made)['adapter-type'], 'lsilogic');
  assert.equal(fields(damaged)['descriptor-extents'], 'RW 8192 SPARSE');
  assert.equal(fields(damaged)['adapter-type'], null);
});

test('the info oracle names the vmdk descriptor as where the damaged fields were read', () => {
  const [made, damaged] = [recorded[0]!, recorded[3]!].map((r) => r.expected as InfoObservation);
  const [finding] = infoOracle(made!, damaged!);
  assert.equal(finding?.detail, 'adapter-type,descriptor-extents');
  assert.match(finding!.message, /^the vmdk descriptor differs in adapter-type \(qemu "lsilogic", subject null\)/);
});

test('an image qemu-img cannot open is no fields', () => {
  const failed = parseConvertedInfo(1, '', "qemu-img: Could not open 'x.vpc': Incorrect header checksum", null);
  assert.equal(failed.ok, false);
});

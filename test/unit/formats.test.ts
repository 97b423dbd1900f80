// The vpc, vhdx and vmdk readers (formats/) on recorded images (testdata/format-images): images as
// qemu makes them break no rule, and every rule of each format has an image that breaks it, which
// the structure oracle names by that rule alone.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VHDX_RULES } from '../../formats/vhdx.ts';
import { VMDK_RULES } from '../../formats/vmdk.ts';
import { VPC_RULES } from '../../formats/vpc.ts';
import { caseFiles, judged, UPDATE_HINT, type FindingView } from './testdata.ts';

type Expected = { virtualSize: number | null; checked: string[]; broken: { rule: string }[]; findings: FindingView[] };

const files = await caseFiles('format-images');
const view = (name: string) => judged<unknown, Expected>('format-images', `format-images/${name}.json`);

describe('testdata/format-images: stored expectations are what the inputs give', () => {
  for (const file of files)
    test(file, async () => {
      const { stored, computed } = await judged('format-images', file);
      assert.deepEqual(computed, stored, `${file}: ${UPDATE_HINT}`);
    });
});

const RULES = { vpc: VPC_RULES, vhdx: VHDX_RULES, vmdk: VMDK_RULES };
const AS_QEMU_MAKES_THEM = [
  'vpc-dynamic',
  'vpc-fixed',
  'vpc-force-size',
  'vhdx-dynamic',
  'vhdx-fixed',
  'vmdk-sparse',
  'vmdk-stream',
  'vmdk-flat',
  'vmdk-two-gb',
];

describe('format readers', () => {
  test('images as qemu makes them break no rule', async () => {
    for (const name of AS_QEMU_MAKES_THEM) {
      const { computed } = await view(name);
      assert.deepEqual(computed.broken, [], name);
      assert.ok(computed.checked.length > 0 && computed.virtualSize! > 0, name);
    }
  });
  for (const [format, rules] of Object.entries(RULES))
    test(`every ${format} rule is broken by an image of its own, and named by it`, async () => {
      for (const rule of rules) {
        const { computed } = await view(`${format}-${rule}`);
        assert.equal(computed.broken[0]?.rule, rule, `${format}-${rule} breaks ${rule} first`);
        assert.equal(computed.findings[0]?.signature, `structure/spec-violation/subject/${format}:${rule}`);
      }
    });
  test('each broken rule is a finding of its own', async () => {
    const { computed } = await view('vpc-footer-checksum');
    assert.deepEqual(
      computed.findings.map((f) => f.detail),
      ['vpc:footer-checksum', 'vpc:footer-copy'],
    );
  });
});

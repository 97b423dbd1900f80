import assert from 'node:assert/strict';
import { execa } from 'execa';
import { describe, it } from 'node:test';
import { fuzzCli, instarDouble, readReportIn, readSummary, reportsDir } from './helpers.ts';

// A subject at its worst: each misbehaviour is classified and reported (or, where the images agree,
// correctly left alone), the harness keeps what it stores bounded, and the run goes on.

/** Disk use of a directory in KiB. */
const diskUse = async (dir: string) => Number((await execa('du', ['-sk', dir])).stdout.split('\t')[0]);

const CASES = [
  { fault: 'exit0-untouched', signature: /^content\/size-differs\/subject\/subject-(smaller|larger)/ },
  { fault: 'delete-image', signature: /^structure\/unreadable\/subject\/missing$/ },
  { fault: 'truncate-zero', signature: /^structure\/unreadable\/subject\// },
  { fault: 'replace-image', signature: /^(structure|info|content)\// },
  { fault: 'sigkill-self', signature: /^outcome\/crashed\/subject\/signal=SIGKILL,/ },
  // appends 200 MiB even when qemu-img refused: the outcome differs, and the image is not stored
  { fault: 'huge-file', signature: /^outcome\/accepted\/subject\/qemu-img: / },
];

describe('a misbehaving subject', () => {
  for (const { fault, signature } of CASES) {
    it(`${fault} is reported as ${signature}`, async (t) => {
      const reports = await reportsDir(t);
      const r = await fuzzCli([
        '--instar',
        instarDouble(fault),
        '--iterations',
        '20',
        '--seed',
        '1',
        '--minimise-runs',
        '0',
        // what is filed is under test, not whether it reproduces
        '--confirm',
        '0',
        '--reports',
        reports,
      ]);
      assert.equal(r.exitCode, 1, r.all);
      const s = await readSummary(reports);
      assert.equal(s.iterations, 20, 'the run went on');
      // faults that exit 0 whatever qemu did also show as outcome mismatches on refused steps
      const sig = s.signatures.find((x) => signature.test(x.signature));
      assert.ok(sig, JSON.stringify(s.signatures.map((x) => x.signature)));
      const report = await readReportIn(reports, sig.folder);
      assert.ok(report.commands.length > 0);
      assert.ok((await diskUse(reports)) < 4096, 'a report stays small');
    });
  }
  it('that floods stderr is kept to a bound and, agreeing otherwise, reported as nothing', async (t) => {
    const reports = await reportsDir(t);
    const r = await fuzzCli([
      '--instar',
      instarDouble('stderr-flood'),
      '--iterations',
      '5',
      '--seed',
      '1',
      '--reports',
      reports,
    ]);
    assert.equal(r.exitCode, 0, r.all);
    assert.equal((await readSummary(reports)).iterations, 5);
    assert.ok((await diskUse(reports)) < 1024, 'the log keeps megabytes of stderr out');
  });
});

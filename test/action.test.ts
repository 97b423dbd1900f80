import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { dir } from 'tmp-promise';
import { ROOT } from './helpers.ts';

// The fuzzer as a step of instar's CI: action.yml (validated against GitHub's schema by `npm run
// lint`) hands its inputs to scripts/ci-fuzz.sh, run here as the action runs it, with temporary
// $GITHUB_STEP_SUMMARY and $GITHUB_OUTPUT files.

const SCRIPT = join(ROOT, 'scripts', 'ci-fuzz.sh');

/** ci-fuzz.sh with `env` as the action's step would set it; its summary and outputs. */
async function ciFuzz(env: Record<string, string>) {
  const d = await dir({ unsafeCleanup: true, prefix: 'ci-fuzz-' });
  const summary = join(d.path, 'summary.md');
  const outputs = join(d.path, 'outputs');
  const r = await execa('bash', [SCRIPT], {
    env: {
      WORKSPACE: ROOT,
      GITHUB_STEP_SUMMARY: summary,
      GITHUB_OUTPUT: outputs,
      REPORTS: join(d.path, 'reports'),
      ...env,
    },
    reject: false,
    all: true,
  });
  const read = (f: string) => readFile(f, 'utf8').catch(() => '');
  const out = Object.fromEntries(
    (await read(outputs))
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;
  return { r, summary: await read(summary), outputs: out, cleanup: d.cleanup };
}

describe('the GitHub Action', () => {
  it('hands every input to its script, and its outputs come from the script', async () => {
    const action = await readFile(join(ROOT, 'action.yml'), 'utf8');
    const section = action.slice(action.indexOf('\ninputs:'), action.indexOf('\noutputs:'));
    const declared = [...section.matchAll(/^ {2}([\w-]+):$/gm)].map((m) => m[1]!);
    assert.ok(declared.length >= 10, declared.join(', '));
    for (const name of declared) assert.ok(action.includes(`\${{ inputs.${name} }}`), `input ${name} is used`);
    assert.match(action, /run: bash "\$GITHUB_ACTION_PATH\/scripts\/ci-fuzz\.sh"/);
    for (const name of ['new-divergences', 'signatures', 'reports'])
      assert.ok(action.includes(`\${{ steps.fuzz.outputs.${name} }}`), `output ${name}`);
    // the reports are uploaded whatever the run found, before the verdict fails the step
    assert.ok(action.indexOf('uses: actions/upload-artifact@v4') < action.indexOf('name: Verdict'));
    assert.match(action, /- name: Upload the reports\n {6}if: always\(\)/);
  });

  it('refuses bad input before any work, saying which input and why', async () => {
    for (const [env, why] of [
      [{}, /input instar is required/],
      [{ INSTAR: 'test/doubles/instar-exact', SHARD: 'two' }, /input shard must be K\/N/],
      [{ INSTAR: 'test/doubles/instar-exact', ITERATIONS: '1e3' }, /input iterations must be a whole number/],
      [{ INSTAR: 'test/doubles/instar-exact', QEMU_VERSION: '9' }, /input qemu-version must be 7\.2/],
      [{ INSTAR: 'test/doubles/no-such-instar' }, /no-such-instar is not an executable file/],
    ] as const) {
      const { r, cleanup } = await ciFuzz(env);
      assert.equal(r.exitCode, 2, r.all);
      assert.match(r.all ?? '', why);
      assert.doesNotMatch(r.all ?? '', /cases in/, 'no case ran');
      await cleanup();
    }
  });

  it('against the faithful double: a run, no new divergence, a summary that says so', async () => {
    const { r, summary, outputs, cleanup } = await ciFuzz({
      INSTAR: 'test/doubles/instar-exact',
      ITERATIONS: '8',
      SEED: '7',
      ARTIFACT: 'reports-faithful',
    });
    assert.equal(r.exitCode, 0, r.all);
    assert.equal(outputs['new-divergences'], '0');
    assert.equal(outputs['signatures'], '0');
    assert.match(summary, /^## instar fuzz: no new divergences$/m);
    assert.match(summary, /8 cases of seed 7 .*Reports: artifact `reports-faithful`\./);
    await cleanup();
  });

  it('against a faulty double: the step still ends 0 for the upload; outputs and summary name the bug', async () => {
    const { r, summary, outputs, cleanup } = await ciFuzz({
      INSTAR: 'test/doubles/instar-365-stride',
      ITERATIONS: '30',
      SEED: '1',
      FORMATS: 'qcow2',
      OPS: 'resize',
    });
    assert.equal(r.exitCode, 0, r.all);
    assert.ok(Number(outputs['new-divergences']) > 0, JSON.stringify(outputs));
    assert.equal(outputs['exit-code'], '1');
    assert.match(summary, /\| `check\/corruptions\/subject\/refcount-blocks-garbled:sub-byte` \| \d+ \|/);
    assert.match(summary, /```sh\n#!\/usr\/bin\/env bash\n# Reproduces check\/corruptions/);
    await cleanup();
  });
});

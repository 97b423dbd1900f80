import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkOracle, parseCheck } from '../oracles/check.ts';
import { contentOracle, type RegrowProbe } from '../oracles/content.ts';
import { signatureOf } from '../oracles/finding.ts';
import { infoOracle, parseInfo } from '../oracles/info.ts';
import { classifyOutcome, outcomeOracle } from '../oracles/outcome.ts';
import { unchangedOnRefusalOracle } from '../oracles/unchanged-on-refusal.ts';
import { type CommandRecord } from '../model/commands.ts';

/** The content oracle's finding on a mismatch, given the regrow probe: the quirk, or null. */
const quirk = (probe: RegrowProbe | null) => {
  const [f] = contentOracle(
    { exitCode: 1, stdout: 'Content mismatch at offset 5!', stderr: '', referenceSize: 9, subjectSize: 9 },
    probe,
  );
  return f?.kind === 'stale-bytes-after-regrow' ? f : null;
};

const cmd = (over: Partial<CommandRecord>): CommandRecord => ({
  argv: [],
  exitCode: 0,
  signal: null,
  timedOut: false,
  spawnError: null,
  stdout: '',
  stderr: '',
  durationMs: 1,
  ...over,
});

describe('outcome oracle', () => {
  it('classifies exit codes, signals and timeouts', () => {
    assert.equal(classifyOutcome(cmd({})), 'ok');
    assert.equal(classifyOutcome(cmd({ exitCode: 1 })), 'refused');
    assert.equal(classifyOutcome(cmd({ exitCode: null, signal: 'SIGSEGV' })), 'crashed');
    assert.equal(classifyOutcome(cmd({ exitCode: null, signal: 'SIGKILL', timedOut: true })), 'timed-out');
  });
  it('treats any two refusals as agreement, whatever the codes and messages', () => {
    assert.deepEqual(outcomeOracle(cmd({ exitCode: 1, stderr: 'a' }), cmd({ exitCode: 3, stderr: 'b' }), 'shrink'), []);
  });
  it('reports different classes with a detail that names both and the step kind', () => {
    const [f, ...rest] = outcomeOracle(cmd({}), cmd({ exitCode: 1 }), 'shrink');
    assert.equal(rest.length, 0);
    assert.equal(f!.kind, 'outcome-mismatch');
    assert.equal(f!.detail, 'reference=ok,subject=refused,step=shrink');
  });
  it('reports a subject crash or timeout even when qemu-img did the same', () => {
    const crash = outcomeOracle(cmd({ exitCode: 1 }), cmd({ exitCode: null, signal: 'SIGSEGV' }), 'grow');
    assert.deepEqual(
      crash.map((f) => [f.kind, f.side]),
      [['crashed', 'subject']],
    );
    const both = outcomeOracle(
      cmd({ exitCode: null, signal: 'SIGKILL', timedOut: true }),
      cmd({ exitCode: null, signal: 'SIGKILL', timedOut: true }),
      'grow',
    );
    assert.deepEqual(
      both.map((f) => [f.kind, f.side]),
      [
        ['timed-out', 'subject'],
        ['timed-out', 'reference'],
      ],
    );
  });
});

describe('unchanged-on-refusal oracle', () => {
  const same = { before: 'aa', after: 'aa' };
  const changed = { before: 'aa', after: 'bb' };
  it('is silent when the hashes are the same', () =>
    assert.deepEqual(unchangedOnRefusalOracle({ reference: same, subject: same }), []));
  it('reports a subject that changed the image where qemu-img did not', () => {
    assert.deepEqual(
      unchangedOnRefusalOracle({ reference: same, subject: changed }).map((f) => f.side),
      ['subject'],
    );
    assert.deepEqual(
      unchangedOnRefusalOracle({ reference: null, subject: changed }).map((f) => f.side),
      ['subject'],
    );
  });
  it('reports qemu-img changing an image it refused, and a subject doing the same agrees', () => {
    assert.deepEqual(
      unchangedOnRefusalOracle({ reference: changed, subject: changed }).map((f) => f.side),
      ['reference'],
    );
  });
});

describe('check oracle', () => {
  const clean = parseCheck(0, JSON.stringify({ 'check-errors': 0, filename: 'x', format: 'qcow2' }), '');
  const leaky = parseCheck(3, JSON.stringify({ 'check-errors': 0, leaks: 4 }), '');
  it('is silent on a clean subject', () => assert.deepEqual(checkOracle(clean, null), []));
  it('reports corruptions first', () => {
    const corrupt = parseCheck(2, JSON.stringify({ 'check-errors': 0, corruptions: 3, leaks: 2 }), '');
    assert.deepEqual(
      checkOracle(corrupt, clean).map((f) => f.kind),
      ['corruptions'],
    );
  });
  it('reports leaks only when qemu-img left none', () => {
    assert.deepEqual(
      checkOracle(leaky, clean).map((f) => f.kind),
      ['leaks'],
    );
    assert.deepEqual(checkOracle(leaky, leaky), []);
  });
  it('reports an image that cannot be checked', () => {
    const [f] = checkOracle(parseCheck(1, '', 'qemu-img: Could not open'), clean);
    assert.equal(f!.kind, 'check-failed');
  });
  it('blames qemu-img when its own result is corrupt', () => {
    const corrupt = parseCheck(2, JSON.stringify({ 'check-errors': 0, corruptions: 1 }), '');
    assert.deepEqual(
      checkOracle(corrupt, corrupt).map((f) => f.side),
      ['subject', 'reference'],
    );
  });
});

describe('info oracle', () => {
  const info = (over: Record<string, unknown> = {}, data: Record<string, unknown> = {}) =>
    parseInfo(
      0,
      JSON.stringify({
        'virtual-size': 1024,
        'dirty-flag': false,
        'actual-size': 5,
        'format-specific': {
          type: 'qcow2',
          data: {
            compat: '1.1',
            'refcount-bits': 16,
            'lazy-refcounts': false,
            corrupt: false,
            'extended-l2': false,
            'compression-type': 'zlib',
            ...data,
          },
        },
        ...over,
      }),
      '',
    );
  it('ignores host layout such as actual-size', () =>
    assert.deepEqual(infoOracle(info(), info({ 'actual-size': 99 })), []));
  it('names every differing field, sorted, in the detail', () => {
    const [f] = infoOracle(info(), info({ 'virtual-size': 2048 }, { 'refcount-bits': 1 }));
    assert.equal(f!.detail, 'refcount-bits,virtual-size');
  });
  it('reports a subject image that qemu-img info cannot read', () => {
    const [f] = infoOracle(info(), parseInfo(1, '', 'qemu-img: Could not open'));
    assert.equal(f!.kind, 'info-failed');
  });
});

describe('content oracle', () => {
  const same = { exitCode: 0, stdout: 'Images are identical.\n', stderr: '', referenceSize: 512, subjectSize: 512 };
  it('is silent on identical images', () => assert.deepEqual(contentOracle(same), []));
  it('reports a size difference that compare alone would only warn about', () => {
    assert.equal(contentOracle({ ...same, subjectSize: 1024 })[0]!.kind, 'size-differs');
  });
  it('reports differing content with the first offset', () => {
    const [f] = contentOracle({ ...same, exitCode: 1, stdout: 'Content mismatch at offset 4096!\n' });
    assert.equal(f!.kind, 'content-differs');
    assert.match(f!.message, /4096/);
  });
  it('leaves a missing size to the info oracle', () =>
    assert.deepEqual(contentOracle({ ...same, subjectSize: null }), []));
});

describe('regrow quirk', () => {
  const window = { start: 1536, end: 65536 };
  it('blames qemu when its result shows old bytes where the subject reads zeros', () => {
    assert.equal(quirk({ window, referenceReadsZero: false, subjectReadsZero: true })?.side, 'reference');
  });
  it('leaves the difference to the content oracle otherwise', () => {
    assert.equal(quirk(null), null);
    assert.equal(
      quirk({ window, referenceReadsZero: true, subjectReadsZero: false }),
      null,
      'the subject shows bytes qemu does not',
    );
    assert.equal(
      quirk({ window, referenceReadsZero: false, subjectReadsZero: false }),
      null,
      'both show old bytes, yet differ',
    );
  });
});

describe('signatures', () => {
  it('carry no case-specific numbers', () => {
    const [a] = contentOracle({
      exitCode: 1,
      stdout: 'Content mismatch at offset 1!',
      stderr: '',
      referenceSize: 1,
      subjectSize: 1,
    });
    const [b] = contentOracle({
      exitCode: 1,
      stdout: 'Content mismatch at offset 999!',
      stderr: '',
      referenceSize: 7,
      subjectSize: 7,
    });
    assert.equal(signatureOf(a!), signatureOf(b!));
  });
});

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { dir } from 'tmp-promise';
import { processesSpawned, runCommand } from '../exec/process.ts';
import { KEPT_TAIL, MAX_STORED_OUTPUT } from '../exec/spawn-local.ts';
import { ROOT } from './helpers.ts';

// runCommand hands every command to the spawner process (exec/spawner.ts). These tests hold it
// to what the harness relies on: output, bounds, timeouts and aborts that kill whole process
// trees, and no child left behind when the harness goes away, however it goes.

/** Process ids whose command line contains `marker`. */
async function running(marker: string): Promise<string[]> {
  const r = await execa('pgrep', ['-f', marker], { reject: false });
  return r.stdout.split('\n').filter(Boolean);
}

describe('runCommand', () => {
  it('runs a command and reports its exit code, output and duration, counting it', async () => {
    const before = processesSpawned();
    const r = await runCommand('sh', ['-c', 'echo out; echo err >&2; exit 3'], { timeoutMs: 10_000, cwd: '/tmp' });
    assert.deepEqual(
      [r.exitCode, r.signal, r.timedOut, r.spawnError, r.stdout, r.stderr],
      [3, null, false, null, 'out\n', 'err\n'],
    );
    assert.deepEqual(r.argv, ['sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.ok(r.durationMs >= 0);
    assert.equal(processesSpawned(), before + 1);
  });

  it('passes arguments as they are, without a shell', async () => {
    const word = `a b $HOME 'q' "d" \`id\`\nnl`;
    const r = await runCommand('printf', ['%s', word], { timeoutMs: 10_000 });
    assert.equal(r.stdout, word);
  });

  it('keeps a bounded amount of output, its last bytes, and says how much it dropped', async () => {
    // the last line is the verdict: kept after the bytes dropped
    const last = '\nthe last line\n';
    const script = `head -c ${3 * MAX_STORED_OUTPUT} /dev/zero; printf '${last.replace(/\n/g, '\\n')}'`;
    const r = await runCommand('sh', ['-c', script], { timeoutMs: 10_000 });
    assert.equal(r.exitCode, 0);
    const dropped = 3 * MAX_STORED_OUTPUT + last.length - MAX_STORED_OUTPUT - KEPT_TAIL;
    const marker = `\n[... ${dropped} more bytes not kept]\n`;
    assert.equal(r.stdout.indexOf(marker), MAX_STORED_OUTPUT);
    assert.ok(r.stdout.endsWith(last));
    assert.equal(r.stdout.length, MAX_STORED_OUTPUT + marker.length + KEPT_TAIL);
  });

  it('kills the whole process tree at the timeout', async () => {
    const marker = `sleep ${31 + Math.floor(Math.random() * 1000)}`;
    const started = performance.now();
    const r = await runCommand('sh', ['-c', `${marker} & ${marker}`], { timeoutMs: 500 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 'SIGKILL');
    assert.ok(performance.now() - started < 10_000);
    assert.deepEqual(await running(marker), [], 'the background child outlived the timeout');
  });

  it('kills the process tree when its abort signal fires', async () => {
    const marker = `sleep ${1031 + Math.floor(Math.random() * 1000)}`;
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 300);
    const r = await runCommand('sh', ['-c', `${marker} & ${marker}`], { timeoutMs: 60_000, signal: stop.signal });
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.timedOut, false);
    assert.deepEqual(await running(marker), []);
  });

  it('reports a program that cannot start instead of throwing', async () => {
    const r = await runCommand('/no/such/program', [], { timeoutMs: 10_000 });
    assert.equal(r.exitCode, null);
    assert.match(r.spawnError ?? '', /ENOENT/);
  });

  it('leaves no child behind when the harness dies, even by SIGKILL', async (t) => {
    const d = await dir({ unsafeCleanup: true, prefix: 'fuzz-process-' });
    t.after(() => d.cleanup());
    for (const death of ['exit', 'SIGKILL'] as const) {
      const marker = `sleep ${2031 + Math.floor(Math.random() * 1000)}`;
      // a harness that starts a long command and then dies
      const script = join(d.path, `harness-${death}.mts`);
      await writeFile(
        script,
        [
          `import { runCommand } from ${JSON.stringify(join(ROOT, 'exec', 'process.ts'))};`,
          `void runCommand('sh', ['-c', ${JSON.stringify(`${marker} & ${marker}`)}], { timeoutMs: 60_000 });`,
          `setTimeout(() => ${death === 'exit' ? 'process.exit(3)' : "process.kill(process.pid, 'SIGKILL')"}, 2000);`,
        ].join('\n'),
      );
      // no pipes: the spawner inherits the harness's stdio, and a pipe held open would tie it to us
      const harness = execa(process.execPath, ['--import', 'tsx', script], {
        cwd: ROOT,
        reject: false,
        stdio: 'ignore',
      });
      const poll = async (until: (pids: string[]) => boolean) => {
        for (let i = 0; i < 100 && !until(await running(marker)); i++) await new Promise((r) => setTimeout(r, 100));
        return running(marker);
      };
      assert.ok((await poll((p) => p.length > 0)).length > 0, 'the command never started');
      const r = await harness;
      assert.equal(death === 'exit' ? r.exitCode : r.signal, death === 'exit' ? 3 : 'SIGKILL');
      // the spawner notices the closed channel and kills what it started
      assert.deepEqual(await poll((p) => p.length === 0), [], `a child outlived a harness that died by ${death}`);
    }
  });
});

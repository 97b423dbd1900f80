import assert from 'node:assert/strict';
import { cp, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { type MergedSummary } from '../reporting/merge.ts';
import { mergeSummaries, sumCounts } from '../reporting/merge.ts';
import { type Report } from '../reporting/store.ts';
import { type RunSummary } from '../reporting/summary.ts';
import { caseIndexAt, casesInShard, parseShard } from '../model/shard.ts';
import { ROOT, fuzzCli, instarDouble, readSummary, reportsDir } from './helpers.ts';

// Sharding (--shard K/N), merging (npm run merge) and time budgets (--duration), end to end with
// the real qemu-img: N shards of a seed, merged, are the run one machine makes of that seed.

const MERGE = join(ROOT, 'cli', 'merge.ts');
const mergeCli = (args: string[]) =>
  execa(process.execPath, ['--import', 'tsx', MERGE, ...args], { cwd: ROOT, reject: false, all: true });

/** What must not depend on how a run was split: everything but timing and the split itself. */
/** A summary without what depends on how the run was split: timing, jobs, and the processes spent
 * confirming new findings (each shard confirms its own first sighting). */
function comparable(s: RunSummary | MergedSummary) {
  const { elapsedSeconds: _e, jobs: _j, shard: _s, processes, ...rest } = s;
  delete (rest as Partial<MergedSummary>).merged;
  return { ...rest, processesPerIteration: processes.perIteration };
}

async function reportsIn(dir: string): Promise<Map<string, Report>> {
  const out = new Map<string, Report>();
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory() && !e.name.startsWith('.'))
      out.set(e.name, JSON.parse(await readFile(join(dir, e.name, 'report.json'), 'utf8')) as Report);
  }
  return out;
}

/** What a report says about where and what: not dates, timings or image hashes (qemu stamps
 * snapshots with the time), which differ from run to run. */
const reportIdentity = (r: Report) => ({
  signature: r.signature,
  hits: r.hits,
  firstSeen: [r.firstSeen.seed, r.firstSeen.iteration],
  lastSeen: [r.lastSeen.seed, r.lastSeen.iteration],
  case: r.case,
  subject: r.subject,
  tools: r.tools,
  findings: r.findings.map((f) => [f.step, f.oracle, f.kind, f.side, f.detail]),
  commands: r.commands.map((c) => [c.argv, c.exitCode]),
});

describe('shards', () => {
  it('K/N parses and splits the case indices by residue', () => {
    assert.deepEqual(parseShard('2/3'), { index: 2, count: 3 });
    for (const bad of ['0/3', '4/3', '1/0', 'x', '1/', '/3', '1.5/3', '-1/3'])
      assert.throws(() => parseShard(bad), /--shard/);
    const shards = [1, 2, 3].map((index) => ({ index, count: 3 }));
    const indices = shards.flatMap((s) => Array.from({ length: casesInShard(s, 10) }, (_, p) => caseIndexAt(s, p)));
    assert.deepEqual(
      indices.sort((a, b) => a - b),
      [...Array(10).keys()],
    );
    assert.deepEqual(
      shards.map((s) => casesInShard(s, 10)),
      [4, 3, 3],
    );
    assert.equal(casesInShard({ index: 3, count: 4 }, 2), 0);
    assert.equal(casesInShard({ index: 1, count: 4 }, Infinity), Infinity);
  });

  it('shards 1/3, 2/3 and 3/3 of a seed, merged, are the unsharded run of that seed', async (t) => {
    const root = await reportsDir(t);
    // each shard minimises the first case it sees of a signature, and the merge keeps the smallest:
    // smaller than or equal to the whole run's, so minimisation is off for this exact comparison
    const common = [
      '--instar',
      instarDouble('msb-first'),
      '--seed',
      '140',
      '--iterations',
      '15',
      '--jobs',
      '1',
      '--timeout',
      '120',
      '--minimise-runs',
      '0',
    ];
    const dirs = ['whole', 's1', 's2', 's3'].map((d) => join(root, d));
    const runs = await Promise.all([
      fuzzCli([...common, '--reports', dirs[0]!]),
      ...[1, 2, 3].map((k) => fuzzCli([...common, '--shard', `${k}/3`, '--reports', dirs[k]!])),
    ]);
    // 1: new divergences; 0: none in that shard; 2: only cases that could not be built
    for (const r of runs) assert.ok([0, 1, 2].includes(r.exitCode!), r.all);
    const whole = await readSummary(dirs[0]!);
    assert.ok(whole.signatures.length > 0, 'the seed must find something for this test to mean anything');
    const shards = await Promise.all(dirs.slice(1).map(readSummary));
    shards.forEach((s, i) => {
      assert.deepEqual(s.shard, { index: i + 1, count: 3 });
      assert.equal(s.iterations, 5);
      assert.equal(s.iterationsRequested, 15);
    });
    // reports keep the real case index: shard K only ever sees indices i with i % 3 == K - 1
    for (const [k, dir] of dirs.slice(1).entries()) {
      for (const r of (await reportsIn(dir)).values()) assert.equal(r.firstSeen.iteration! % 3, k);
    }

    const merged = join(root, 'merged');
    const m = await mergeCli(['--out', merged, ...dirs.slice(1)]);
    assert.equal(m.exitCode, whole.newDivergences > 0 ? 1 : 0, m.all);
    const ms = (await readSummary(merged)) as MergedSummary;
    assert.deepEqual(comparable(ms), comparable(whole));
    assert.deepEqual(ms.merged.missingShards, []);
    const wholeReports = await reportsIn(dirs[0]!);
    const mergedReports = await reportsIn(merged);
    assert.deepEqual([...mergedReports.keys()].sort(), [...wholeReports.keys()].sort());
    for (const [folder, r] of wholeReports) {
      assert.deepEqual(reportIdentity(mergedReports.get(folder)!), reportIdentity(r), folder);
      const files = (d: string) => readdir(join(d, folder)).then((f) => f.sort());
      assert.deepEqual(await files(merged), await files(dirs[0]!));
    }

    // merging into one of the shards' directories gives the same
    const inPlace = join(root, 'in-place');
    await cp(dirs[1]!, inPlace, { recursive: true });
    const again = await mergeCli(['--out', inPlace, inPlace, dirs[2]!, dirs[3]!]);
    assert.equal(again.exitCode, m.exitCode, again.all);
    assert.deepEqual(comparable(await readSummary(inPlace)), comparable(whole));
    for (const [folder, r] of await reportsIn(inPlace))
      assert.deepEqual(reportIdentity(r), reportIdentity(wholeReports.get(folder)!));
    assert.deepEqual(
      (await readdir(inPlace)).filter((n) => n.startsWith('.')),
      [],
      'no staging folder left',
    );

    // bad merges: exit 2 and a message
    const bad = async (args: string[], message: RegExp) => {
      const r = await mergeCli(args);
      assert.equal(r.exitCode, 2, r.all);
      assert.match(r.stderr, message);
    };
    await bad(['--out', join(root, 'x1'), dirs[1]!, dirs[1]!], /named twice/);
    const dup = join(root, 'dup');
    await cp(dirs[1]!, dup, { recursive: true });
    await bad(['--out', join(root, 'x2'), dirs[1]!, dup], /both shard 1\/3/);
    await bad(['--out', join(root, 'x3'), dirs[0]!, dirs[1]!], /whole run/);
    await bad(['--out', dirs[0]!, dirs[2]!, dirs[3]!], /not empty/);
    await bad(['--out', join(root, 'x4'), join(root, 'nothing')], /not a directory/);
    await bad(['--out', join(root, 'x5'), merged, root], /cannot read .*summary\.json/);
  });

  it('merges summaries: counts summed, coverage summed recursively, unused entries unused everywhere', () => {
    assert.deepEqual(sumCounts({ a: 1, b: { c: 2, d: { e: 3 } } }, { a: 4, b: { c: 5, f: 6 } }), {
      a: 5,
      b: { c: 7, d: { e: 3 }, f: 6 },
    });
    const base = {
      seed: 1,
      iterationsRequested: 10,
      durationSeconds: null,
      iterations: 5,
      stoppedEarly: null,
      elapsedSeconds: 3,
      jobs: 2,
      subject: { dialect: 'qemu-img', program: 'qemu-img' },
      tools: { qemuImg: 'q', subject: 'q' },
      newDivergences: 1,
      knownDivergences: 1,
      setupErrors: [],
      processes: { total: 50, perIteration: 10, filing: 0 },
      coverage: { refcountBits: { '1': 2 }, outcomes: { reference: { ok: 1 }, subject: {} } },
    } as unknown as RunSummary;
    const a = {
      ...base,
      shard: { index: 1, count: 2 },
      knownByEntry: { x: 1, y: 0, z: 0 },
      signatures: [
        {
          signature: 's2',
          folder: 'f2',
          hitsThisRun: 1,
          filedThisRun: true,
          firstIteration: 4,
          firstCorpusCase: null,
          confirmation: null,
          minimised: null,
        },
      ],
      setupErrors: [{ iteration: 2, message: 'm' }],
    };
    const b = {
      ...base,
      shard: { index: 2, count: 2 },
      elapsedSeconds: 7,
      stoppedEarly: 'duration' as const,
      knownByEntry: { x: 0, y: 2, z: 0 },
      signatures: [
        {
          signature: 's2',
          folder: 'f2',
          hitsThisRun: 2,
          filedThisRun: false,
          firstIteration: 5,
          firstCorpusCase: null,
          confirmation: null,
          minimised: null,
        },
        {
          signature: 's1',
          folder: 'f1',
          hitsThisRun: 1,
          filedThisRun: true,
          firstIteration: 1,
          firstCorpusCase: null,
          confirmation: null,
          minimised: null,
        },
      ],
      setupErrors: [{ iteration: 1, message: 'n' }],
    };
    const m = mergeSummaries(['a', 'b'], [a, b]);
    assert.equal(m.iterations, 10);
    assert.equal(m.elapsedSeconds, 7);
    assert.equal(m.stoppedEarly, 'duration');
    assert.deepEqual(m.knownByEntry, { x: 1, y: 2, z: 0 });
    assert.deepEqual(m.unusedKnown, ['z']);
    assert.deepEqual(
      m.signatures.map((s) => [s.signature, s.hitsThisRun, s.filedThisRun, s.firstIteration]),
      [
        ['s1', 1, true, 1],
        ['s2', 3, true, 4],
      ],
    );
    assert.deepEqual(
      m.setupErrors.map((e) => e.iteration),
      [1, 2],
    );
    assert.deepEqual(m.processes, { total: 100, perIteration: 10, filing: 0 });
    assert.deepEqual(m.coverage, { refcountBits: { '1': 4 }, outcomes: { reference: { ok: 2 }, subject: {} } });
    assert.deepEqual(mergeSummaries(['a'], [a]).merged.missingShards, [2]);
    assert.throws(() => mergeSummaries(['a', 'b'], [a, { ...b, seed: 2 }]), /seed/);
    assert.throws(() => mergeSummaries(['a', 'b'], [a, { ...b, iterationsRequested: 11 }]), /--iterations/);
    assert.throws(() => mergeSummaries(['a', 'b'], [a, { ...b, shard: { index: 2, count: 3 } }]), /share N/);
  });
});

describe('--duration', () => {
  it('stops a run when its time is spent: no new case starts, the summary says why', async (t) => {
    const reports = await reportsDir(t);
    const workdir = join(reports, 'work');
    await mkdir(workdir);
    const started = Date.now();
    const r = await fuzzCli([
      '--control',
      '--duration',
      '3',
      '--seed',
      '140',
      '--timeout',
      '10',
      '--reports',
      join(reports, 'r'),
      '--workdir',
      workdir,
    ]);
    const elapsed = (Date.now() - started) / 1000;
    assert.ok([0, 1, 2].includes(r.exitCode!), r.all); // the exit code of the cases that ran
    assert.match(r.stdout, /iterations unbounded, for at most 3 s/);
    const s = await readSummary(join(reports, 'r'));
    assert.equal(s.stoppedEarly, 'duration');
    assert.equal(s.iterationsRequested, null);
    assert.equal(s.durationSeconds, 3);
    assert.ok(s.iterations + s.setupErrors.length >= 1, JSON.stringify(s));
    // running cases finish or are stopped within one --timeout of the deadline
    assert.ok(elapsed < 3 + 10 + 10, `${elapsed} s`);
    assert.deepEqual(await readdir(workdir), [], 'work directories were left behind');
  });
  it('with --iterations, the run that finishes first is not stopped early', async (t) => {
    const reports = await reportsDir(t);
    const r = await fuzzCli([
      '--control',
      '--iterations',
      '2',
      '--duration',
      '600',
      '--seed',
      '140',
      '--reports',
      reports,
    ]);
    assert.ok([0, 1, 2].includes(r.exitCode!), r.all);
    const s = await readSummary(reports);
    assert.equal(s.stoppedEarly, null);
    assert.equal(s.iterations + s.setupErrors.length, 2);
    assert.equal(s.iterationsRequested, 2);
  });
});

describe('the nightly workflow', () => {
  it('runs N shards of one seed against two qemu versions through the action, merges each version', async () => {
    const text = await readFile(join(ROOT, '.github', 'workflows', 'nightly-fuzz.yml'), 'utf8');
    assert.doesNotMatch(text, /\t/, 'YAML must not contain tabs');
    for (const line of [
      'image: node:20-bookworm',
      'options: --device /dev/kvm',
      // each shard is a call of the repository's own action (action.yml, test/action.test.ts)
      'uses: ./',
      "qemu: ['7.2', '10.0']",
      'shard: [1, 2, 3, 4]',
      'SHARDS: 4',
      'seed: ${{ needs.plan.outputs.seed }}',
      'shard: ${{ matrix.shard }}/${{ env.SHARDS }}',
      'qemu-version: ${{ matrix.qemu }}',
      'reports: reports-${{ matrix.qemu }}-${{ matrix.shard }}',
      'artifact-name: reports-${{ matrix.qemu }}-${{ matrix.shard }}',
      "fail-on-new: 'false'",
      'needs: [plan, fuzz]',
      'if: ${{ !cancelled() }}',
      'pattern: reports-${{ matrix.qemu }}-*',
      'npm run merge -- --out reports-merged "${dirs[@]}"',
      'name: reports-merged-${{ matrix.qemu }}',
    ]) {
      assert.ok(text.includes(line), `missing: ${line}`);
    }
    // every upload runs even when the step before it failed (the shards' is the action's)
    const uploads = [
      ...text.matchAll(/\n(\s*)- name: Upload[^\n]*\n\1 {2}if: always\(\)\n\1 {2}uses: actions\/upload-artifact@v4/g),
    ];
    assert.equal(uploads.length, 1, 'the merged upload must be `if: always()`');
    // a real YAML parser where there is one (PyYAML), else the checks above
    const py = await execa(
      'python3',
      ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))'],
      { input: text, reject: false },
    );
    if (py.exitCode !== 0) return;
    const wf = JSON.parse(py.stdout) as {
      jobs: Record<
        string,
        {
          needs?: string | string[];
          if?: string;
          env?: Record<string, unknown>;
          strategy?: { matrix: { shard?: number[]; qemu: string[] } };
          steps: { run?: string; uses?: string; if?: string }[];
        }
      >;
    };
    assert.deepEqual(Object.keys(wf.jobs), ['plan', 'fuzz', 'merge']);
    const shards = wf.jobs.fuzz!.strategy!.matrix.shard!;
    assert.deepEqual(shards, [1, 2, 3, 4]);
    assert.equal(wf.jobs.fuzz!.env!.SHARDS, shards.length, 'SHARDS is the number of shards');
    assert.deepEqual(wf.jobs.fuzz!.strategy!.matrix.qemu, ['7.2', '10.0']);
    assert.deepEqual(wf.jobs.merge!.strategy!.matrix.qemu, ['7.2', '10.0']);
    assert.deepEqual(wf.jobs.merge!.needs, ['plan', 'fuzz']);
    for (const job of Object.values(wf.jobs))
      for (const step of job.steps) assert.ok(step.run || step.uses, JSON.stringify(step));
  });
});

describe('bad --shard and --duration values', () => {
  it('exit 2 with a clear message, before any work', async () => {
    const cases: [string[], RegExp][] = [
      [['--shard', '0/3'], /--shard 0\/3: K must be between 1 and N \(3\)/],
      [['--shard', '4/3'], /K must be between 1 and N/],
      [['--shard', '1/0'], /N must be at least 1/],
      [['--shard', 'two'], /--shard must be K\/N/],
      [['--duration', '0'], /--duration must be a positive number of seconds, at most 2147483, not 0/],
      [['--duration', '-5'], /--duration must be a positive number of seconds/],
      [['--duration', 'soon'], /--duration must be a positive number of seconds/],
      [['--duration', '9999999999'], /--duration must be a positive number of seconds, at most 2147483/],
    ];
    await Promise.all(
      cases.map(async ([args, message]) => {
        const r = await fuzzCli(['--control', ...args]);
        assert.equal(r.exitCode, 2, r.all);
        assert.match(r.stderr, message);
        assert.doesNotMatch(r.stdout, /cases in/, 'no work was done');
      }),
    );
  });
});

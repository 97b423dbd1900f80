import { execFile } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { execa } from 'execa';
import { hideBin } from 'yargs/helpers';
import { commandLine } from '../cli/args.ts';
import { compareContent } from '../exec/content-compare.ts';
import { runCommand } from '../exec/process.ts';
import type { RunSummary } from '../reporting/summary.ts';

// `npm run bench [-- --quick]`: how fast the harness is, as ratios measured in one invocation, and
// whether it meets the targets of issue 5. Prints a table and appends it to docs/benchmarks.md.
//  (a) cases per second at --jobs 1 and --jobs 2, same seed, control run and the faithful double;
//  (b) overhead at --jobs 1: the run's wall time over the summed wall time of its child processes
//      (from the run log's "run timing" line), and the harness's own CPU time per wall second;
//  (c) content-oracle time for the same data in 16 MiB, 1 GiB and 1 TiB virtual images;
//  (d) the harness's peak RSS over a long control run, sampled every 200 ms: first quarter of
//      the run against the last.

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'cli', 'fuzz.ts');
/** The node options of `npm run fuzz`, so that the runs measured are the runs people make. */
const FUZZ_NODE_OPTIONS = (
  JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: { fuzz: string } }
).scripts.fuzz
  .split(/\s+/)
  .slice(1, -1);
const NONE = join(ROOT, 'test', 'doubles', 'instar-none');

const args = await commandLine(
  hideBin(process.argv),
  'npm run bench --',
  '$0 [options]\n\nHow fast the harness is; appends the results to docs/benchmarks.md.',
)
  .options({
    quick: { type: 'boolean', default: false, describe: 'A short smoke version (few cases, few repetitions)' },
    seed: { type: 'number', default: 1, describe: 'Seed of the fuzz runs' },
    iterations: { type: 'number', describe: 'Cases per throughput run (default 60; 8 with --quick)' },
    rounds: {
      type: 'number',
      describe: 'Throughput runs per subject and --jobs value, alternated (default 2; 1 with --quick)',
    },
    'rss-iterations': { type: 'number', describe: 'Cases of the RSS run (default 1000; 60 with --quick)' },
    reps: { type: 'number', describe: 'Repetitions of each content comparison (default 21; 5 with --quick)' },
    out: { type: 'string', default: join(ROOT, 'docs', 'benchmarks.md'), describe: 'File the table is appended to' },
    append: { type: 'boolean', default: true, describe: 'Append to --out (--no-append: print only)' },
  })
  .parseAsync();

const quick = args.quick;
const iterations = args.iterations ?? (quick ? 8 : 60);
const rounds = args.rounds ?? (quick ? 1 : 2);
const rssIterations = args['rss-iterations'] ?? (quick ? 60 : 1000);
const reps = args.reps ?? (quick ? 5 : 21);
const CLK_TCK = Number((await promisify(execFile)('getconf', ['CLK_TCK'])).stdout.trim()) || 100;

const say = (line: string) => process.stderr.write(`${line}\n`);

interface Sample {
  t: number;
  rssKiB: number;
  cpuSeconds: number;
}

/** A process's own CPU seconds (utime + stime, fields 14 and 15 of /proc/PID/stat). */
async function cpuOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** The harness's RSS, and the CPU time of the harness and of its spawner process (exec/spawner.ts,
 * which starts the child processes for it): both are the harness's cost. */
async function sampleProc(pid: number, started: number): Promise<Sample | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
    let cpuSeconds = await cpuOf(pid);
    const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => ''))
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
    for (const child of children) {
      const cmdline = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes('spawner.ts')) cpuSeconds += await cpuOf(child).catch(() => 0);
    }
    return Number.isFinite(rssKiB) ? { t: performance.now() - started, rssKiB, cpuSeconds } : null;
  } catch {
    return null; // the process has exited
  }
}

interface FuzzRun {
  summary: RunSummary;
  childSeconds: number;
  samples: Sample[];
}

/** Runs the fuzz CLI as a child, sampling its RSS and CPU time every 200 ms. */
async function fuzzRun(extra: string[]): Promise<FuzzRun> {
  const reports = await mkdtemp(join(tmpdir(), 'fuzz-bench-'));
  try {
    const started = performance.now();
    const child = execa(
      process.execPath,
      // generated qcow2 resize cases only: the repository's corpus would change the mix as it
      // grows, and raw cases (cheap, hashed whole by the harness) or steps of other operations would
      // change it from the entries before them
      [
        ...FUZZ_NODE_OPTIONS,
        CLI,
        '--seed',
        String(args.seed),
        '--reports',
        reports,
        '--corpus',
        join(ROOT, 'test', 'empty-corpus'),
        '--formats',
        'qcow2',
        '--ops',
        'resize',
        ...extra,
      ],
      { cwd: ROOT, reject: false, all: true },
    );
    const samples: Sample[] = [];
    const timer = setInterval(() => {
      if (child.pid) void sampleProc(child.pid, started).then((s) => s && samples.push(s));
    }, 200);
    const r = await child;
    clearInterval(timer);
    const summary = JSON.parse(
      await readFile(join(reports, 'summary.json'), 'utf8').catch(() => {
        throw new Error(`the fuzz run wrote no summary (exit ${r.exitCode}):\n${r.all}`);
      }),
    ) as RunSummary;
    const log = (await readdir(reports)).find((n) => n.startsWith('fuzz-') && n.endsWith('.log'));
    const timing = log
      ? (await readFile(join(reports, log), 'utf8')).split('\n').find((l) => l.includes('"run timing"'))
      : undefined;
    const childSeconds = timing ? (JSON.parse(timing) as { childSeconds: number }).childSeconds : NaN;
    return { summary, childSeconds, samples };
  } finally {
    await rm(reports, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

interface Row {
  metric: string;
  value: string;
  target: string;
  verdict: string;
}
const rows: Row[] = [];
const row = (metric: string, value: string, target = '', pass?: boolean) =>
  rows.push({ metric, value, target, verdict: pass === undefined ? '' : pass ? 'pass' : '**miss**' });

// (a) and (b): each subject alternates --jobs 1 and --jobs 2 runs over `rounds` rounds, and the
// rates come from the totals: one run of 60 cases varies by about 10% on a shared machine.
interface Totals {
  cases: number;
  elapsed: number;
  child: number;
  cpu: number;
  perCase: number;
}
const totals: Record<string, Totals> = {};
for (const [name, subject] of [
  ['control', ['--control']],
  ['none double', ['--instar', NONE]],
] as const) {
  for (let round = 1; round <= rounds; round++) {
    for (const jobs of [1, 2]) {
      say(`(a) ${name}, --jobs ${jobs}, ${iterations} cases, round ${round} of ${rounds} ...`);
      const r = await fuzzRun([...subject, '--iterations', String(iterations), '--jobs', String(jobs)]);
      const t = (totals[`${name}/${jobs}`] ??= { cases: 0, elapsed: 0, child: 0, cpu: 0, perCase: 0 });
      t.cases += r.summary.iterations;
      t.elapsed += r.summary.elapsedSeconds;
      t.child += r.childSeconds;
      t.cpu += r.samples.at(-1)?.cpuSeconds ?? NaN;
      t.perCase = r.summary.processes.perIteration;
    }
  }
  const [one, two] = [totals[`${name}/1`]!, totals[`${name}/2`]!].map((t) => t.cases / t.elapsed) as [number, number];
  row(`(a) ${name}: cases/s at --jobs 1 / --jobs 2`, `${fmt(one)} / ${fmt(two)}`);
  row(`(a) ${name}: --jobs 2 speed-up`, `${fmt(two / one)}x`, '>= 1.7x', two / one >= 1.7);
}
const c1 = totals['control/1']!;
row(
  '(b) control --jobs 1: run wall / summed child wall',
  `${fmt(c1.elapsed)} s / ${fmt(c1.child)} s = ${fmt(c1.elapsed / c1.child)}`,
  '<= 1.15',
  c1.elapsed / c1.child <= 1.15,
);
row(
  '(b) control --jobs 1: harness and spawner CPU / run wall',
  `${fmt(c1.cpu)} s / ${fmt(c1.elapsed)} s = ${fmt(c1.cpu / c1.elapsed)}`,
);
row('(b) control: processes per case', `${c1.perCase}`);

// (c)
say(`(c) content comparison, ${reps} repetitions ...`);
const dir = await mkdtemp(
  join(
    (await stat('/dev/shm').then(
      (s) => s.isDirectory(),
      () => false,
    ))
      ? '/dev/shm'
      : tmpdir(),
    'fuzz-bench-cmp-',
  ),
);
const compareMs: Record<string, { content: number; plain: number; processes: number }> = {};
try {
  const data = ['write -P 1 0 1M', 'write -P 2 3M 2M', 'write -P 3 7M 1M', 'write -P 4 15M 64k'];
  for (const size of ['16M', '1G', '1T']) {
    const [a, b] = [join(dir, `a-${size}.qcow2`), join(dir, `b-${size}.qcow2`)];
    for (const f of [a, b]) {
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', f, size]);
      await execa('qemu-io', ['-f', 'qcow2', ...data.flatMap((c) => ['-c', c]), f]);
    }
    const run = (program: string, argv: string[]) => runCommand(program, argv, { timeoutMs: 60_000 });
    const content: number[] = [];
    const plain: number[] = [];
    let processes = 0;
    for (let i = 0; i < reps; i++) {
      let t = performance.now();
      const r = await compareContent(a, b, { timeoutMs: 60_000, run });
      content.push(performance.now() - t);
      if (r.exitCode !== 0) throw new Error(`compareContent says the ${size} images differ: ${r.stdout}${r.stderr}`);
      processes = r.processes;
      t = performance.now();
      await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', a, b]);
      plain.push(performance.now() - t);
    }
    compareMs[size] = { content: median(content), plain: median(plain), processes };
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
const cm = (s: string) => compareMs[s]!;
row(
  '(c) compareContent ms: 16 MiB / 1 GiB / 1 TiB (processes)',
  ['16M', '1G', '1T'].map((s) => `${fmt(cm(s).content, 1)} (${cm(s).processes})`).join(' / '),
);
row(
  '(c) compareContent: 1 TiB over 16 MiB',
  `${fmt(cm('1T').content / cm('16M').content)}x`,
  '<= 2x',
  cm('1T').content / cm('16M').content <= 2,
);
row(
  '(c) plain qemu-img compare ms: 16 MiB / 1 GiB / 1 TiB',
  ['16M', '1G', '1T'].map((s) => fmt(cm(s).plain, 1)).join(' / '),
);
row('(c) plain qemu-img compare: 1 TiB over 16 MiB', `${fmt(cm('1T').plain / cm('16M').plain)}x`);

// (d)
say(`(d) peak RSS over a ${rssIterations}-case control run ...`);
const long = await fuzzRun(['--control', '--iterations', String(rssIterations)]);
const span = long.samples.at(-1)?.t ?? 0;
const peak = (from: number, to: number) =>
  Math.max(...long.samples.filter((s) => s.t >= from * span && s.t <= to * span).map((s) => s.rssKiB)) / 1024;
const [q1, q4] = [peak(0, 0.25), peak(0.75, 1)];
row(
  `(d) peak RSS, ${long.summary.iterations} control cases in ${fmt(long.summary.elapsedSeconds, 0)} s: ` +
    'first / last quarter',
  `${fmt(q1, 1)} / ${fmt(q4, 1)} MiB (${fmt((q4 / q1 - 1) * 100, 1)}%)`,
  'last within 10% of first',
  q4 <= q1 * 1.1,
);

// report
const qemu = (await execa('qemu-img', ['--version'])).stdout.split('\n')[0];
const cores = `${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'})`;
const machine = `${cores}, ${qemu}, node ${process.version}`;
const plan =
  `seed ${args.seed}, ${rounds} x ${iterations} cases per subject and --jobs value, ` +
  `${rssIterations} in the RSS run, ${reps} repetitions per comparison.`;
const header = [`## ${new Date().toISOString()}${quick ? ' (--quick)' : ''}`, '', `${machine}; ${plan}`, ''];
const widths = [0, 1, 2, 3].map((i) =>
  Math.max(
    ...[['metric', 'value', 'target', 'verdict'], ...rows.map((r) => [r.metric, r.value, r.target, r.verdict])].map(
      (cells) => cells[i]!.length,
    ),
  ),
);
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
const table = [
  line(['metric', 'value', 'target', 'verdict']),
  line(widths.map((w) => '-'.repeat(w))),
  ...rows.map((r) => line([r.metric, r.value, r.target, r.verdict])),
];
const text = [...header, ...table, ''].join('\n');
console.log(text);
if (args.append) {
  await mkdir(join(args.out, '..'), { recursive: true });
  const exists = await stat(args.out).then(
    () => true,
    () => false,
  );
  if (!exists)
    await writeFile(
      args.out,
      '# Benchmarks\n\nAppended by `npm run bench` (see README, "Benchmarks"). Newest last.\n\n',
    );
  await appendFile(args.out, `${text}\n`);
  say(`appended to ${args.out}`);
}

import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { dir } from 'tmp-promise';
import { type RunSummary } from '../reporting/summary.ts';
import { type Report } from '../reporting/store.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLI = join(ROOT, 'cli', 'fuzz.ts');

/** The test double of instar that injects `fault` (see test/doubles/instar-double.ts). */
export const instarDouble = (fault: string) => join(ROOT, 'test', 'doubles', `instar-${fault}`);

const BUNDLE_DIR = join(ROOT, 'test', '.bundle-cli');
const HARNESS_DIRS = [
  'model',
  'qcow2',
  'formats',
  'generators',
  'oracles',
  'exec',
  'triage',
  'reporting',
  'run',
  'cli',
];

/** cli/fuzz.ts and the modules it starts in other processes and threads (exec/spawner.ts,
 * exec/reader-worker.ts), bundled with esbuild into test/.bundle-cli/ when a harness source is
 * newer than the bundle; each build goes to its own directory, renamed into place. */
function bundledCli(): Promise<string> {
  // runs started together (Promise.all) share one check and one build: two builds of one process
  // would share its build directory
  return (bundling ??= bundleIfStale().finally(() => (bundling = undefined)));
}
let bundling: Promise<string> | undefined;

async function bundleIfStale(): Promise<string> {
  const cli = join(BUNDLE_DIR, 'fuzz.mjs');
  const built = await stat(cli).then(
    (s) => s.mtimeMs,
    () => 0,
  );
  const newer = await Promise.all(
    HARNESS_DIRS.map(async (d) =>
      (await readdir(join(ROOT, d), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => join(ROOT, d, f)),
    ),
  ).then(async (lists) => {
    for (const f of lists.flat()) if ((await stat(f)).mtimeMs > built) return true;
    return false;
  });
  if (!newer) return cli;
  const tmp = `${BUNDLE_DIR}.build-${process.pid}`;
  const entries = ['cli/fuzz.ts', 'exec/spawner.ts', 'exec/reader-worker.ts'].map((e) => join(ROOT, e));
  await execa(join(ROOT, 'node_modules', '.bin', 'esbuild'), [
    ...entries,
    '--bundle',
    '--platform=node',
    '--format=esm',
    '--target=node20',
    '--packages=external',
    '--out-extension:.js=.mjs',
    '--entry-names=[name]',
    `--outdir=${tmp}`,
    '--log-level=warning',
  ]);
  await rm(BUNDLE_DIR, { recursive: true, force: true });
  await rename(tmp, BUNDLE_DIR);
  return cli;
}

/** The tests' runs do not replay the repository's corpus/ unless they pass --corpus: an empty one
 * (test/empty-corpus). */
const withTestCorpus = (args: string[]) => {
  const corpus = args.includes('--corpus') ? args : [...args, '--corpus', join(ROOT, 'test', 'empty-corpus')];
  return withTestFormats(corpus);
};

/** The tests' seeds and the cases they name were chosen on qcow2 cases: their runs generate qcow2
 * cases alone unless they pass --formats (the raw tests and the control run do). */
const withTestFormats = (args: string[]) =>
  withTestOps(args.includes('--formats') ? args : [...args, '--formats', 'qcow2']);

/** And on resizes alone, the one operation there was: runs of other operations pass --ops. */
const withTestOps = (args: string[]) => (args.includes('--ops') ? args : [...args, '--ops', 'resize']);

/** Runs `npm run fuzz -- ARGS` the way a user would, without npm in between: the same sources,
 * bundled (bundledCli), since node with the tsx loader takes 0.7 s longer to start and the tests
 * start the CLI over a hundred times. */
export async function fuzzCli(args: string[], env: Record<string, string> = {}) {
  return execa(process.execPath, [await bundledCli(), ...withTestCorpus(args)], {
    cwd: ROOT,
    reject: false,
    env,
    all: true,
    timeout: 15 * 60 * 1000,
  });
}

/** A reports directory that is removed after the test. */
export async function reportsDir(t: { after: (fn: () => Promise<void>) => void }) {
  const d = await dir({ unsafeCleanup: true, prefix: 'fuzz-test-' });
  t.after(() => d.cleanup());
  return d.path;
}

export async function readSummary(reports: string): Promise<RunSummary> {
  return JSON.parse(await readFile(join(reports, 'summary.json'), 'utf8')) as RunSummary;
}

export async function readReportIn(reports: string, folder: string): Promise<Report> {
  return JSON.parse(await readFile(join(reports, folder, 'report.json'), 'utf8')) as Report;
}

/** Runs a report's repro.sh on its own, from another directory, with INSTAR set. */
export function runRepro(reports: string, folder: string, instar: string, env: Record<string, string> = {}) {
  return execa('bash', [join(reports, folder, 'repro.sh')], {
    cwd: '/',
    reject: false,
    env: { INSTAR: instar, ...env },
    all: true,
  });
}

/** Starts the fuzzer in the background; `line(re)` resolves at the first output line matching re. */
export function startFuzz(args: string[]) {
  const child = execa(process.execPath, ['--import', 'tsx', CLI, ...withTestCorpus(args)], {
    cwd: ROOT,
    reject: false,
    all: true,
  });
  let output = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  child.all?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    for (const w of [...waiters]) if (w.re.test(output)) w.resolve();
  });
  const line = (re: RegExp) =>
    new Promise<void>((resolve, reject) => {
      if (re.test(output)) return resolve();
      waiters.push({ re, resolve });
      void child.then(() =>
        re.test(output) ? resolve() : reject(new Error(`the run ended without printing ${re}:\n${output}`)),
      );
    });
  return { child, line, output: () => output };
}

/** Every report.json below dir, hidden folders included. */
export async function allReportFiles(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile() && e.name === 'report.json').map((e) => join(e.parentPath ?? e.path, e.name));
}

import { readdir, readFile } from 'node:fs/promises';
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

/** An empty corpus: the tests' runs do not replay the repository's corpus/ unless they ask. */
const NO_CORPUS = join(ROOT, 'test', 'no-corpus');

/** Runs `npm run fuzz -- ARGS` the way a user would, without npm in between. */
export function fuzzCli(args: string[], env: Record<string, string> = {}) {
  const corpus = args.includes('--corpus') ? [] : ['--corpus', NO_CORPUS];
  return execa(process.execPath, ['--import', 'tsx', CLI, ...args, ...corpus], {
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
  const corpus = args.includes('--corpus') ? [] : ['--corpus', NO_CORPUS];
  const child = execa(process.execPath, ['--import', 'tsx', CLI, ...args, ...corpus], {
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

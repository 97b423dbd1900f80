import { availableParallelism } from 'node:os';
import {
  IMAGE_FORMATS,
  OPERATION_NAMES,
  OUTPUT_MODES,
  QEMU_RESIZED_FORMATS,
  type ImageFormat,
  type OperationName,
} from '../model/case.ts';
import { parseShard, type Shard } from '../model/shard.ts';
import { commandLine, usageFail } from './args.ts';
import { OPERATIONS } from '../operations/table.ts';

// The command line of `npm run fuzz` (cli/fuzz.ts): its options, and the checks of their values.

/** The regression corpus of this repository, replayed when --corpus names no other. */
export const CORPUS_DEFAULT = 'corpus';

export async function parseArgs(argv: string[]) {
  return commandLine(
    argv,
    'npm run fuzz --',
    '$0 [options]\n\nDifferential fuzzer: qcow2 resize in instar against qemu-img.',
  )
    .options({
      iterations: {
        type: 'number',
        describe:
          'Cases to run: the case indices below N, across all shards (default: 250; unbounded with --duration alone)',
      },
      duration: {
        type: 'number',
        describe:
          'Time budget in seconds: no case starts after it, running ones finish (or are stopped after --timeout)',
      },
      shard: {
        type: 'string',
        describe:
          'K/N: run shard K of N (1-based), the case indices i with i % N == K-1; ' +
          'N machines with one seed run the cases of one',
      },
      seed: { type: 'number', describe: 'Seed of the case sequence (default: random, always printed)' },
      instar: {
        type: 'string',
        default: 'instar',
        describe: 'The instar binary under test (a path, or a name on PATH)',
      },
      formats: {
        type: 'string',
        describe:
          `Image formats of the generated cases, comma-separated, from ${IMAGE_FORMATS.join(', ')} ` +
          `(default: all of them; in a control run ${QEMU_RESIZED_FORMATS.join(', ')}, which qemu-img resizes)`,
      },
      ops: {
        type: 'string',
        describe:
          `Operations of the generated steps, comma-separated, from ${OPERATION_NAMES.join(', ')} ` +
          '(default: all of them); amend, snapshot, repair and bitmap are qcow2 operations, commit and rebase ' +
          'qcow2 and vmdk ones',
      },
      output: {
        choices: OUTPUT_MODES,
        describe:
          'What the subject is asked to print in every generated step: human (its words), json ' +
          '(--output json) or quiet (-q) (default: a mix of the three)',
      },
      control: {
        type: 'boolean',
        default: false,
        describe: 'Self-test: qemu-img on both sides; any divergence is a harness bug',
      },
      'qemu-img': {
        type: 'string',
        describe:
          'The reference qemu-img (a path; its directory must hold the matching qemu-io), ' +
          'e.g. the one scripts/install-qemu.sh prints (default: qemu-img on PATH)',
      },
      'control-qemu-img': {
        type: 'string',
        describe:
          'Self-test across versions: this qemu-img as the subject (qemu-img command line) ' +
          'against the reference qemu-img',
      },
      timeout: {
        type: 'number',
        default: 30,
        describe: 'Seconds before any child process is killed with its children',
      },
      reports: { type: 'string', default: 'reports', describe: 'Directory for reports, summary.json and the run log' },
      known: { type: 'string', default: 'known-divergences.json', describe: 'Known-divergence registry' },
      'fail-fast': { type: 'boolean', default: false, describe: 'Stop at the first new divergence' },
      jobs: {
        type: 'number',
        default: availableParallelism(),
        describe: 'Cases run at the same time (default: the number of cores); results do not depend on it',
      },
      workdir: {
        type: 'string',
        describe: 'Where cases build their images (default: /dev/shm when present, else the system temp dir)',
      },
      replay: { type: 'string', describe: 'Re-run the case of a report folder; exit 1 if its signature reproduces' },
      recheck: {
        type: 'boolean',
        default: false,
        describe:
          'Re-run every report in --reports against the subject and mark each still reproducing or fixed; ' +
          'exit 1 if any still reproduces',
      },
      promote: { type: 'string', describe: "Copy a report folder's smallest case into --corpus as a regression case" },
      corpus: {
        type: 'string',
        default: CORPUS_DEFAULT,
        describe: 'Regression cases, replayed before the generated cases of every run',
      },
      'corpus-share': {
        type: 'number',
        default: 0.2,
        describe: 'The corpus takes at most this share of the run: of --iterations in cases, of --duration in time',
      },
      confirm: {
        type: 'number',
        default: 2,
        describe:
          'Re-runs of a new finding in fresh directories before it is filed; ' +
          'none reproducing files it as flaky (0: no confirmation)',
      },
      'minimise-runs': {
        type: 'number',
        default: 100,
        describe: "Cases tried at most while shrinking a new finding's case (0: file cases as generated)",
      },
      'minimise-time': { type: 'number', default: 300, describe: 'Seconds at most spent shrinking one new finding' },
      'strict-known': {
        type: 'boolean',
        default: false,
        describe: 'Exit 1 when a registry entry matched nothing (a strict expected failure)',
      },
      'file-issues': {
        type: 'boolean',
        default: false,
        describe:
          'Write an issue (issue.md, issue-title.txt) for each signature new in this run, ' +
          'and file it with gh when gh is installed and logged in, ' +
          'skipping signatures an open issue already carries',
      },
      'max-issues': { type: 'number', default: 5, describe: 'Issues filed at most per run with --file-issues' },
    })
    .check((a) => {
      if (a.iterations !== undefined && (!Number.isSafeInteger(a.iterations) || a.iterations < 1))
        usageFail(`--iterations must be a whole number of at least 1, not ${a.iterations}`);
      // node's timers hold at most 2^31-1 ms (24.8 days)
      if (
        a.duration !== undefined &&
        (!Number.isFinite(a.duration) || a.duration <= 0 || a.duration * 1000 > 2 ** 31 - 1)
      )
        usageFail(
          `--duration must be a positive number of seconds, ` +
            `at most ${Math.floor((2 ** 31 - 1) / 1000)}, not ${a.duration}`,
        );
      if (a.shard !== undefined) shardOf(a.shard);
      if (a.seed !== undefined && (!Number.isSafeInteger(a.seed) || a.seed < -(2 ** 31) || a.seed >= 2 ** 31))
        usageFail(`--seed must be a 32-bit integer, not ${a.seed}`);
      if (!Number.isFinite(a.timeout) || a.timeout <= 0)
        usageFail(`--timeout must be a positive number of seconds, not ${a.timeout}`);
      if (!Number.isSafeInteger(a.jobs) || a.jobs < 1)
        usageFail(`--jobs must be a whole number of at least 1, not ${a.jobs}`);
      if (!Number.isSafeInteger(a['max-issues']) || a['max-issues'] < 0)
        usageFail(`--max-issues must be a whole number of at least 0, not ${a['max-issues']}`);
      if (!Number.isSafeInteger(a.confirm) || a.confirm < 0)
        usageFail(`--confirm must be a whole number of at least 0, not ${a.confirm}`);
      if (!Number.isSafeInteger(a['minimise-runs']) || a['minimise-runs'] < 0)
        usageFail(`--minimise-runs must be a whole number of at least 0, not ${a['minimise-runs']}`);
      if (!Number.isFinite(a['minimise-time']) || a['minimise-time'] <= 0)
        usageFail(`--minimise-time must be a positive number of seconds, not ${a['minimise-time']}`);
      if (!Number.isFinite(a['corpus-share']) || a['corpus-share'] < 0 || a['corpus-share'] > 1)
        usageFail(`--corpus-share must be a number from 0 to 1, not ${a['corpus-share']}`);
      formatsOf(a.formats, a.control || a['control-qemu-img'] !== undefined, opsOf(a.ops));
      if (a.control && a['control-qemu-img'] !== undefined)
        usageFail('--control and --control-qemu-img cannot be combined: pick one');
      const modes = ['replay', 'recheck', 'promote'].filter((m) => a[m] !== undefined && a[m] !== false);
      if (modes.length > 1) usageFail(`--${modes.join(' and --')} cannot be combined: pick one`);
      return true;
    })
    .parseAsync();
}

export type Args = Awaited<ReturnType<typeof parseArgs>>;

/** The operations of --ops, each once, in the order given; by default every one. */
export function opsOf(text: string | undefined): OperationName[] {
  if (text === undefined) return [...OPERATION_NAMES];
  const names = [...new Set(text.split(',').map((o) => o.trim()))];
  for (const name of names)
    if (!(OPERATION_NAMES as readonly string[]).includes(name))
      usageFail(
        `--ops: ${JSON.stringify(name)} is not an operation the harness drives; ` +
          `pick from ${OPERATION_NAMES.join(', ')}`,
      );
  return names as OperationName[];
}

/** The formats of --formats, each once, in the order given; by default every format the
 * operations are generated on (OPERATIONS' rows: resize takes all, commit and rebase qcow2 and
 * vmdk, the others qcow2), and in a control run those qemu-img gives a reference for: qcow2 and
 * raw where a case may be a resize (qemu-img resizes no other format), and every format of the
 * operations without resize. */
export function formatsOf(text: string | undefined, control: boolean, ops: readonly OperationName[]): ImageFormat[] {
  const resized = QEMU_RESIZED_FORMATS as readonly string[];
  const resizing = ops.includes('resize');
  const taken = IMAGE_FORMATS.filter((f) => ops.some((o) => OPERATIONS[o].formats.includes(f)));
  const referenced = (f: string) => resized.includes(f) || !resizing;
  if (text === undefined) return control ? taken.filter(referenced) : taken;
  const names = [...new Set(text.split(',').map((f) => f.trim()))];
  const unresized = names.filter((f) => !referenced(f) && (IMAGE_FORMATS as readonly string[]).includes(f));
  if (control && unresized.length > 0)
    usageFail(
      `--formats: qemu-img does not resize ${unresized.join(', ')}, so a control run has no reference to ` +
        `compare them with; pick from ${resized.join(', ')}, or leave resize out of --ops`,
    );
  for (const name of names) {
    if ((IMAGE_FORMATS as readonly string[]).includes(name)) continue;
    usageFail(
      `--formats: ${JSON.stringify(name)} is not a format the harness generates; pick from ${IMAGE_FORMATS.join(', ')}`,
    );
  }
  const untaken = names.filter((f) => !(taken as readonly string[]).includes(f));
  if (untaken.length > 0)
    usageFail(
      `--formats ${names.join(',')} with --ops ${ops.join(',')}: ` +
        `no operation of those runs on ${untaken.join(', ')} images; add resize or pick from ${taken.join(', ')}`,
    );
  return names as ImageFormat[];
}

export function shardOf(text: string): Shard {
  try {
    return parseShard(text);
  } catch (err) {
    return usageFail((err as Error).message);
  }
}

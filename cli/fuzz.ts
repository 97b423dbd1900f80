import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { destination, pino } from 'pino';
import { hideBin } from 'yargs/helpers';
import { IMAGE_FORMATS, QEMU_RESIZED_FORMATS, type ImageFormat } from '../model/case.ts';
import { parseShard, type Shard } from '../model/shard.ts';
import { loadCorpus, promote } from '../reporting/corpus.ts';
import { writeReportsIndex } from '../reporting/index-page.ts';
import { openIssues } from '../reporting/issues.ts';
import { registryNotes, type RunSummary } from '../reporting/summary.ts';
import { fuzz } from '../run/fuzz.ts';
import { recheckReports } from '../run/recheck.ts';
import { replay } from '../run/replay.ts';
import { coverageGaps, coverageTable } from '../triage/coverage.ts';
import { byExpiry, byQemuVersion, loadRegistry, qemuVersionOf } from '../triage/registry.ts';
import { commandLine, runMain, usageFail } from './args.ts';
import {
  checkQemu,
  defaultWorkdir,
  stopOnSignals,
  subjectFrom,
  subjectVersion,
  useQemuFrom,
  writableDir,
} from './preflight.ts';

// `npm run fuzz -- [options]`: a fuzz run, or one of --replay, --recheck and --promote.
// Exit codes: 0 no new divergence, 1 new divergences (or a replay that reproduced), 2 usage or
// setup error, before any work is done.

async function parseArgs(argv: string[]) {
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
        default: 'corpus',
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
      formatsOf(a.formats, a.control || a['control-qemu-img'] !== undefined);
      if (a.control && a['control-qemu-img'] !== undefined)
        usageFail('--control and --control-qemu-img cannot be combined: pick one');
      const modes = ['replay', 'recheck', 'promote'].filter((m) => a[m] !== undefined && a[m] !== false);
      if (modes.length > 1) usageFail(`--${modes.join(' and --')} cannot be combined: pick one`);
      return true;
    })
    .parseAsync();
}

type Args = Awaited<ReturnType<typeof parseArgs>>;

/** The formats of --formats, each once, in the order given; by default every format, and in a
 * control run the ones qemu-img resizes. */
function formatsOf(text: string | undefined, control: boolean): ImageFormat[] {
  const resized = QEMU_RESIZED_FORMATS as readonly string[];
  if (text === undefined) return control ? [...QEMU_RESIZED_FORMATS] : [...IMAGE_FORMATS];
  const names = [...new Set(text.split(',').map((f) => f.trim()))];
  const unresized = names.filter((f) => !resized.includes(f) && (IMAGE_FORMATS as readonly string[]).includes(f));
  if (control && unresized.length > 0)
    usageFail(
      `--formats: qemu-img does not resize ${unresized.join(', ')}, so a control run has no reference to ` +
        `compare them with; pick from ${resized.join(', ')}`,
    );
  for (const name of names) {
    if ((IMAGE_FORMATS as readonly string[]).includes(name)) continue;
    usageFail(
      `--formats: ${JSON.stringify(name)} is not a format the harness generates; pick from ${IMAGE_FORMATS.join(', ')}`,
    );
  }
  return names as ImageFormat[];
}

function shardOf(text: string): Shard {
  try {
    return parseShard(text);
  } catch (err) {
    return usageFail((err as Error).message);
  }
}

async function main(): Promise<number> {
  const args = await parseArgs(hideBin(process.argv));
  if (args.promote !== undefined) {
    const file = await promote(args.promote, args.corpus);
    console.log(`promoted to ${file}: every run replays it before its generated cases`);
    return 0;
  }
  const timeoutMs = args.timeout * 1000;
  if (args['qemu-img'] !== undefined) await useQemuFrom(args['qemu-img']);
  const qemuVersion = await checkQemu(timeoutMs);
  const subject = await subjectFrom(args);
  const workdir = resolve(args.workdir ?? (await defaultWorkdir()));
  await writableDir(workdir, '--workdir', false);
  const setup = { timeoutMs, qemuVersion, subject, workdir };
  if (args.replay !== undefined) return replayMode(args.replay, setup);
  if (args.recheck) return recheckMode(args, setup);
  return fuzzMode(args, setup);
}

type Setup = {
  timeoutMs: number;
  qemuVersion: string;
  subject: Awaited<ReturnType<typeof subjectFrom>>;
  workdir: string;
};

async function replayMode(folder: string, { subject, timeoutMs, workdir }: Setup): Promise<number> {
  const r = await replay(folder, subject, timeoutMs, workdir);
  console.log(r.reproduced ? `REPRODUCED: ${r.expected}` : `did not reproduce: ${r.expected}`);
  if (!r.reproduced)
    console.log(r.signatures.length ? `findings this time: ${r.signatures.join('; ')}` : 'no findings this time');
  return r.reproduced ? 1 : 0;
}

async function recheckMode(args: Args, { subject, timeoutMs, workdir, qemuVersion }: Setup): Promise<number> {
  await writableDir(args.reports, '--reports', false);
  const version = await subjectVersion(subject, qemuVersion, timeoutMs);
  const results = await recheckReports({
    reportsDir: args.reports,
    subject,
    subjectVersion: version,
    timeoutMs,
    workdir,
    signal: stopOnSignals(),
    say: (l) => console.log(l),
  });
  const still = results.filter((r) => r.reproduced).length;
  console.log(
    `${results.length} reports rechecked against ${version}: ${still} still reproduce, ${results.length - still} fixed`,
  );
  console.log(`index: ${(await writeReportsIndex(args.reports)).html}`);
  return still > 0 ? 1 : 0;
}

async function fuzzMode(args: Args, { subject, timeoutMs, workdir, qemuVersion }: Setup): Promise<number> {
  const today = new Date().toISOString().slice(0, 10);
  const { active: current, expired } = byExpiry(await loadRegistry(args.known), today);
  const { active: registry, otherVersions } = byQemuVersion(current, qemuVersionOf(qemuVersion));
  if (otherVersions.length)
    console.log(`registry entries for other qemu versions, not applied: ${otherVersions.map((e) => e.id).join(', ')}`);
  for (const e of expired) {
    console.log(
      `registry entry ${e.id} expired on ${e.expires}: ` +
        `it no longer suppresses anything${e.issue ? ` (${e.issue})` : ''}; renew or remove it in ${args.known}`,
    );
  }
  const corpus = await loadCorpus(args.corpus);
  await writableDir(args.reports, '--reports', true);
  const seed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
  // --duration alone: unbounded iterations, the clock ends the run
  const iterations = args.iterations ?? (args.duration !== undefined ? Infinity : 250);
  const shard = args.shard === undefined ? null : shardOf(args.shard);
  const formats = formatsOf(args.formats, args.control || args['control-qemu-img'] !== undefined);
  const logFile = join(args.reports, `fuzz-${new Date().toISOString().replace(/[:.]/g, '-')}.log`);
  const log = pino({ base: { seed } }, destination({ dest: logFile, sync: true }));
  const tools = { qemuImg: qemuVersion, subject: await subjectVersion(subject, qemuVersion, timeoutMs) };
  const budget = [
    Number.isFinite(iterations) ? `${iterations} iterations` : 'iterations unbounded',
    args.duration !== undefined ? `for at most ${args.duration} s` : null,
    shard ? `shard ${shard.index}/${shard.count} (case indices i with i % ${shard.count} == ${shard.index - 1})` : null,
    `formats ${formats.join(', ')}`,
  ].filter(Boolean);
  const who =
    subject.dialect === 'instar'
      ? subject.program
      : `${subject.program === 'qemu-img' ? 'qemu-img' : tools.subject} (control run)`;
  console.log(
    `seed ${seed} (same cases again: --seed ${seed}); ${budget.join(', ')}; ${args.jobs} at a time; subject ${who}`,
  );
  console.log(`reference: ${qemuVersion}`);
  console.log(`log: ${logFile}`);
  log.info({ args, tools, subject }, 'run started');

  const s = await fuzz({
    seed,
    iterations,
    formats,
    durationMs: args.duration === undefined ? null : args.duration * 1000,
    shard,
    jobs: args.jobs,
    subject,
    timeoutMs,
    workdir,
    reportsDir: args.reports,
    registry,
    failFast: args['fail-fast'],
    tools,
    log,
    stop: stopOnSignals(),
    say: (l) => console.log(l),
    confirmRuns: args.confirm,
    minimise: args['minimise-runs'] > 0 ? { runs: args['minimise-runs'], timeMs: args['minimise-time'] * 1000 } : null,
    corpus,
    corpusShare: args['corpus-share'],
    expiredKnown: expired.map((e) => e.id),
  });
  log.info({ summary: s }, 'run finished');
  printSummary(s, args.reports);
  console.log(`index: ${(await writeReportsIndex(args.reports)).html}`);
  if (args['file-issues']) {
    const fresh = s.signatures.filter((x) => x.filedThisRun).map((x) => x.folder);
    if (fresh.length === 0) console.log('--file-issues: no signature is new in this run, nothing to file');
    else
      await openIssues(args.reports, fresh, { maxIssues: args['max-issues'], timeoutMs, say: (l) => console.log(l) });
  }
  if (s.newDivergences > 0 || s.corpus.newDivergences > 0 || s.flaky.length > 0) return 1;
  if (args['strict-known'] && s.unusedKnown.length > 0 && !s.stoppedEarly) {
    console.error(
      `--strict-known: ${s.unusedKnown.length} registry entries matched nothing in this run: ` +
        `${s.unusedKnown.join(', ')}; remove them from ${args.known} or fix their match`,
    );
    return 1;
  }
  if (s.setupErrors.length > 0) {
    console.error(`${s.setupErrors.length} generated cases could not be built: a harness bug, see ${logFile}`);
    return 2;
  }
  return 0;
}

/** The end of a run on the console: counts, signatures, coverage, registry entries unused. */
function printSummary(s: RunSummary, reports: string) {
  const early = s.stoppedEarly ? ` (stopped early: ${s.stoppedEarly})` : '';
  console.log(
    `\n${s.iterations} cases in ${s.elapsedSeconds} s${early} ` +
      `(${s.processes.perIteration} processes per case); seed ${s.seed}`,
  );
  if (s.corpus.available > 0) {
    console.log(
      `corpus: ${s.corpus.run} of ${s.corpus.available} regression cases run; ` +
        `new divergences ${s.corpus.newDivergences}, known ${s.corpus.knownDivergences}`,
    );
  }
  console.log(`new divergences: ${s.newDivergences} (${s.signatures.length} signatures); known: ${s.knownDivergences}`);
  for (const sig of s.signatures)
    console.log(
      `  ${sig.filedThisRun ? 'NEW  ' : 'AGAIN'} x${sig.hitsThisRun} ${sig.signature}\n` +
        `        ${join(reports, sig.folder)}`,
    );
  for (const sig of s.flaky)
    console.log(
      `  FLAKY x${sig.hitsThisRun} ${sig.signature} (did not reproduce when re-run)\n` +
        `        ${join(reports, sig.folder)}`,
    );
  console.log(`\ncoverage (steps qemu-img accepted):\n${coverageTable(s.coverage)}`);
  const gaps = coverageGaps(s.coverage);
  // a run stopped early has gaps by construction
  if (gaps.length && !s.stoppedEarly) console.log(`warning: no cases for ${gaps.join(', ')}`);
  for (const note of registryNotes(s)) console.log(note);
  console.log(`summary: ${join(reports, 'summary.json')}`);
}

runMain(main);

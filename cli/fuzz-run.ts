import { join } from 'node:path';
import { destination, pino } from 'pino';
import { loadCorpus, promote } from '../reporting/corpus.ts';
import { PICTURE_FILE } from '../reporting/damage-picture.ts';
import { writeReportsIndex } from '../reporting/index-page.ts';
import { openIssues } from '../reporting/issues.ts';
import { registryNotes, type RunSummary } from '../reporting/summary.ts';
import { fuzz } from '../run/fuzz.ts';
import { recheckReports } from '../run/recheck.ts';
import { replay } from '../run/replay.ts';
import { coverageGaps, coverageTable } from '../triage/coverage.ts';
import { byExpiry, byQemuVersion, loadRegistry, qemuVersionOf } from '../triage/registry.ts';
import { CORPUS_DEFAULT, formatsOf, opsOf, shardOf, type Args } from './fuzz-args.ts';
import { writableDir } from './paths.ts';
import { checkQemu, stopOnSignals, subjectFrom, subjectVersion, useQemuFrom } from './preflight.ts';

// What `npm run fuzz` does once its arguments and paths are checked (cli/fuzz.ts loads this module
// only then): a fuzz run, --replay, --recheck or --promote.

/** Runs the mode the arguments name; its exit code. */
export async function runMode(args: Args, workdir: string): Promise<number> {
  if (args.promote !== undefined) {
    const file = await promote(args.promote, args.corpus);
    console.log(`promoted to ${file}: every run replays it before its generated cases`);
    return 0;
  }
  const timeoutMs = args.timeout * 1000;
  const inputs = args.replay === undefined && !args.recheck ? await fuzzInputs(args) : null;
  if (args['qemu-img'] !== undefined) await useQemuFrom(args['qemu-img']);
  const qemuVersion = await checkQemu(timeoutMs);
  const subject = await subjectFrom(args);
  const setup = { timeoutMs, qemuVersion, subject, workdir };
  if (args.replay !== undefined) return replayMode(args.replay, setup);
  if (args.recheck) return recheckMode(args, setup);
  return fuzzMode(args, setup, inputs!);
}

/** What a fuzz run reads and writes besides images: the registry, the corpus and the reports
 * directory, each checked before any work. */
async function fuzzInputs(args: Args) {
  const registry = await loadRegistry(args.known);
  // the default corpus may be absent (a checkout without one); a directory the user named must be there
  const corpus = await loadCorpus(args.corpus, args.corpus !== CORPUS_DEFAULT);
  return { registry, corpus };
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
  if (r.picture) console.log(`picture of the damage: ${join(folder, PICTURE_FILE)}`);
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

async function fuzzMode(
  args: Args,
  { subject, timeoutMs, workdir, qemuVersion }: Setup,
  inputs: Awaited<ReturnType<typeof fuzzInputs>>,
): Promise<number> {
  const today = new Date().toISOString().slice(0, 10);
  const { active: current, expired } = byExpiry(inputs.registry, today);
  const { active: registry, otherVersions } = byQemuVersion(current, qemuVersionOf(qemuVersion));
  if (otherVersions.length)
    console.log(`registry entries for other qemu versions, not applied: ${otherVersions.map((e) => e.id).join(', ')}`);
  for (const e of expired) {
    console.log(
      `registry entry ${e.id} expired on ${e.expires}: ` +
        `it no longer suppresses anything${e.issue ? ` (${e.issue})` : ''}; renew or remove it in ${args.known}`,
    );
  }
  const { corpus } = inputs;
  const seed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
  // --duration alone: unbounded iterations, the clock ends the run
  const iterations = args.iterations ?? (args.duration !== undefined ? Infinity : 250);
  const shard = args.shard === undefined ? null : shardOf(args.shard);
  const ops = opsOf(args.ops);
  const formats = formatsOf(args.formats, args.control || args['control-qemu-img'] !== undefined, ops);
  const logFile = join(args.reports, `fuzz-${new Date().toISOString().replace(/[:.]/g, '-')}.log`);
  const log = pino({ base: { seed } }, destination({ dest: logFile, sync: true }));
  const tools = { qemuImg: qemuVersion, subject: await subjectVersion(subject, qemuVersion, timeoutMs) };
  const budget = [
    Number.isFinite(iterations) ? `${iterations} iterations` : 'iterations unbounded',
    args.duration !== undefined ? `for at most ${args.duration} s` : null,
    shard ? `shard ${shard.index}/${shard.count} (case indices i with i % ${shard.count} == ${shard.index - 1})` : null,
    `formats ${formats.join(', ')}`,
    `operations ${ops.join(', ')}`,
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
    ops,
    output: args.output ?? null,
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

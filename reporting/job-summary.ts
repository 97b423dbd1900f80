import { codeBlock, inlineCode } from './render.ts';
import type { RunSummary, SignatureSeen } from './summary.ts';

// The job summary a CI step writes ($GITHUB_STEP_SUMMARY, GitHub-flavoured markdown) from a run's
// summary.json: what a maintainer reads on the workflow's page before opening any artifact. New
// signatures with their hits, the most frequent one's repro.sh inline (pasteable into a bug), and
// the registry entries that matched nothing.

/** A table cell: a pipe would end it. */
const cell = (text: string) => text.replace(/\|/g, '\\|');

/** The signature a maintainer should look at first: the most hits, then the first seen. */
export function topSignature(s: Pick<RunSummary, 'signatures'>): SignatureSeen | null {
  return [...s.signatures].sort((a, b) => b.hitsThisRun - a.hitsThisRun)[0] ?? null;
}

export interface JobSummaryInput {
  summary: RunSummary;
  /** The top signature's repro.sh, when its report folder has one. */
  topRepro: string | null;
  /** Where the reports are uploaded (the artifact's name), for the reader to fetch them. */
  artifact: string | null;
}

/** The job summary of one run, as markdown. */
export function jobSummaryMarkdown({ summary: s, topRepro, artifact }: JobSummaryInput): string {
  const sigs = [...s.signatures].sort((a, b) => b.hitsThisRun - a.hitsThisRun);
  const headline =
    s.newDivergences > 0 || sigs.length > 0
      ? `${s.newDivergences} new divergences, ${sigs.length} signatures`
      : 'no new divergences';
  const corpus = s.corpus.run > 0 ? ` and ${s.corpus.run} corpus cases` : '';
  const lines = [
    `## instar fuzz: ${headline}`,
    '',
    `${s.iterations} cases of seed ${s.seed}${corpus} in ${Math.round(s.elapsedSeconds)} s; ` +
      `subject ${inlineCode(s.subject.program)}, reference ${s.tools.qemuImg}; ` +
      `${s.knownDivergences} known divergences.` +
      (artifact ? ` Reports: artifact ${inlineCode(artifact)}.` : ''),
  ];
  if (sigs.length > 0) {
    lines.push('', '| new signature | hits | report folder |', '|---|---:|---|');
    for (const x of sigs)
      lines.push(`| ${cell(inlineCode(x.signature))} | ${x.hitsThisRun} | ${cell(inlineCode(x.folder))} |`);
  }
  const top = sigs[0];
  if (top && topRepro !== null)
    lines.push(
      '',
      `### Reproduce ${inlineCode(top.signature)}`,
      '',
      `\`INSTAR=/path/to/instar bash repro.sh\` exits 1 while it reproduces ` +
        `(from ${inlineCode(`${top.folder}/repro.sh`)}):`,
      '',
      codeBlock('sh', topRepro),
    );
  if (s.flaky.length > 0)
    lines.push(
      '',
      `### Flaky (never reproduced when re-run): ${s.flaky.length}`,
      '',
      ...s.flaky.map((x) => `- ${inlineCode(x.signature)} x${x.hitsThisRun}`),
    );
  if (s.setupErrors.length > 0)
    lines.push(
      '',
      `### Cases that could not be built (harness bugs): ${s.setupErrors.length}`,
      '',
      ...s.setupErrors.slice(0, 10).map((e) => `- case ${e.iteration}: ${e.message}`),
    );
  if (s.unusedKnown.length > 0)
    lines.push(
      '',
      `<details><summary>Registry entries that matched nothing: ${s.unusedKnown.length}</summary>`,
      '',
      s.unusedKnown.map((id) => inlineCode(id)).join(', '),
      '',
      '</details>',
    );
  const differs = Object.entries(s.messageDiffers ?? {});
  if (differs.length > 0)
    lines.push(
      '',
      '### Registry entries whose message pattern missed',
      '',
      ...differs.map(
        ([id, d]) => `- ${inlineCode(id)}: ${d.findings} findings; the subject said ${inlineCode(d.stderr)}`,
      ),
    );
  return `${lines.join('\n')}\n`;
}

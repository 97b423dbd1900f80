import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { dir } from 'tmp-promise';
import { openIssues, issueText, MAX_TITLE, signatureLine, type IssueResult } from '../reporting/issues.ts';
import { parseReport } from '../reporting/store.ts';

// reporting/issues.ts against a fake gh: a bash script that logs its arguments and answers
// `auth status`, `issue list` and `issue create` from files in its directory.

const SIG_A = 'check/corruptions/subject/corruptions';
const SIG_B = 'outcome/outcome-mismatch/subject/reference=ok,subject=crashed,step=shrink';
const SIG_C = 'structure/refcount-mismatch/subject/stored<computed';

const REPRO = `#!/usr/bin/env bash
# Reproduces: ${SIG_A}
set -u
INSTAR=\${INSTAR:-instar}
qemu-img create -q -f qcow2 -o cluster_size=262144,refcount_bits=4,compat=1.1 base.qcow2 1073741312 >/dev/null || exit 2
timeout -k 5 30 "$INSTAR" resize -f qcow2 --shrink subject.qcow2 -585550.5K
qemu-img check -f qcow2 subject.qcow2; [ $? = 2 ] && { echo REPRODUCED; exit 1; }
exit 0
`;

/** A report.json shaped like the ones the fuzzer writes (see `npm run fuzz -- --instar
 * test/doubles/instar-365-stride --iterations 3 --seed 1`), with the triage fields. */
function reportJson(signature: string, message: string, extra: Record<string, unknown> = {}) {
  const [oracle, kind, side, detail] = signature.split('/') as [string, string, string, string];
  const c = {
    image: {
      virtualSize: 1073741312,
      clusterSize: 262144,
      refcountBits: 4,
      compat: '1.1',
      lazyRefcounts: false,
      extendedL2: false,
      compressionType: 'zlib',
      createdWithRefcountBits: null,
      bitmaps: 0,
      dirty: false,
    },
    data: [{ op: 'write', offset: 1073582592, length: 158720, pattern: 49 }],
    steps: [{ size: '-585550.5K', shrink: true, preallocation: null }],
  };
  return {
    formatVersion: 2,
    signature,
    finding: { oracle, side, kind, detail, message, step: 0, evidence: { exitCode: 2 } },
    hits: 4,
    firstSeen: { seed: 1, iteration: 0, date: '2026-11-26T02:00:46.488Z' },
    lastSeen: { seed: null, iteration: null, corpus: 'refcount-4bit.json', date: '2026-11-26T03:00:00.000Z' },
    case: c,
    originalCase: { ...c, steps: [...c.steps, { size: '39681024', shrink: true, preallocation: null }] },
    minimisation: { runs: 12, seconds: 3.5, stoppedBy: 'done' },
    confirmation: { runs: 3, reproduced: 3 },
    flaky: false,
    rechecks: [],
    subject: { dialect: 'instar', program: '/usr/local/bin/instar' },
    tools: { qemuImg: 'qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)', subject: 'instar 0.3.0' },
    findings: [],
    steps: [
      {
        index: 0,
        sizeBefore: 1073741312,
        plan: { kind: 'shrink', target: 474137600, accepted: true },
        reference: 'ok',
        subject: 'ok',
      },
    ],
    commands: [
      {
        argv: ['qemu-img', 'create'],
        exitCode: 0,
        signal: null,
        timedOut: false,
        spawnError: null,
        stdout: '',
        stderr: '',
        durationMs: 11,
      },
    ],
    ...extra,
  };
}

async function writeFolder(reports: string, folder: string, report: object) {
  await mkdir(join(reports, folder), { recursive: true });
  await writeFile(join(reports, folder, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(join(reports, folder, 'repro.sh'), REPRO);
}

/** A temporary directory with three report folders and a fake gh. */
async function setup(t: { after: (fn: () => Promise<void>) => void }) {
  const d = await dir({ unsafeCleanup: true, prefix: 'file-issues-test-' });
  t.after(() => d.cleanup());
  const reports = join(d.path, 'reports');
  await writeFolder(
    reports,
    'subject-check-corruptions-aaaaaaaaaa',
    reportJson(SIG_A, 'qemu-img check found 5 corruptions in the subject image'),
  );
  await writeFolder(
    reports,
    'subject-outcome-outcome-mismatch-bbbbbbbbbb',
    reportJson(SIG_B, 'qemu-img ok, subject crashed (SIGSEGV) on a shrink'),
  );
  await writeFolder(
    reports,
    'flaky/subject-structure-refcount-mismatch-cccccccccc',
    reportJson(SIG_C, 'refcount of cluster 3 is 0 but 1 reference', {
      flaky: true,
      confirmation: { runs: 3, reproduced: 1 },
    }),
  );
  const fake = join(d.path, 'fake-gh');
  await mkdir(fake);
  const gh = join(fake, 'gh');
  await writeFile(
    gh,
    [
      `#!/usr/bin/env bash`,
      `# fake gh: logs its arguments (one call a line, separated by US) and answers from files here`,
      `here=${JSON.stringify(fake)}`,
      `printf '%s\\x1f' "$@" >> "$here/calls"; printf '\\n' >> "$here/calls"`,
      `case "$1 $2" in`,
      `  "auth status") rc=$(cat "$here/auth-rc" 2>/dev/null || echo 0); [ "$rc" = 0 ] || ` +
        `echo "You are not logged into any GitHub hosts. To log in, run: gh auth login" >&2; exit "$rc" ;;`,
      `  "issue list") [ -f "$here/list-rc" ] && { echo "HTTP 502" >&2; exit "$(cat "$here/list-rc")"; }; ` +
        `cat "$here/open-issues.json" 2>/dev/null || echo '[]' ;;`,
      `  "issue create")`,
      `    n=$(( $(cat "$here/created" 2>/dev/null || echo 100) + 1 )); echo "$n" > "$here/created"`,
      `    while [ $# -gt 0 ]; do [ "$1" = --body-file ] && cp "$2" "$here/body-$n.md"; shift; done`,
      `    echo "Creating issue in example/instar" >&2`,
      `    echo "https://github.com/example/instar/issues/$n" ;;`,
      `  *) echo "fake gh: unexpected $*" >&2; exit 3 ;;`,
      `esac`,
      ``,
    ].join('\n'),
  );
  await chmod(gh, 0o755);
  const calls = async () =>
    (await readFile(join(fake, 'calls'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\x1f').slice(0, -1));
  const lines: string[] = [];
  return { reports, fake, gh, calls, lines, say: (l: string) => lines.push(l) };
}

const asReport = (json: object) => parseReport(JSON.stringify(json), 'report.json');

const FOLDERS = [
  'subject-check-corruptions-aaaaaaaaaa',
  'subject-outcome-outcome-mismatch-bbbbbbbbbb',
  'flaky/subject-structure-refcount-mismatch-cccccccccc',
];
const statuses = (rs: IssueResult[]) => rs.map((r) => [r.folder, r.status]);
const readJson = async (file: string) => JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;

test('issueText: a short title, the signature line, the finding, repro.sh inline and the replay command', () => {
  const long = `qemu-img check found ${'many '.repeat(40)}corruptions`;
  const { title, body } = issueText(asReport(reportJson(SIG_A, long)), 'subject-check-corruptions-aaaaaaaaaa', REPRO);
  assert.ok(title.length <= MAX_TITLE, `title of ${title.length} characters`);
  assert.match(title, /^fuzz: subject check\/corruptions: qemu-img check found many/);
  assert.ok(title.endsWith('…'));
  assert.ok(body.split('\n').includes(signatureLine(SIG_A)), 'the signature on a line of its own');
  assert.ok(body.includes(`\`\`\`bash\n${REPRO.trimEnd()}\n\`\`\``), 'repro.sh inline');
  assert.ok(
    body.includes('npm run fuzz -- --replay reports/subject-check-corruptions-aaaaaaaaaa --instar /path/to/instar'),
  );
  assert.match(
    body,
    new RegExp(
      /hits: 4; first seen seed 1, iteration 0, 2026-11-26 02:00 UTC; /.source +
        /last seen corpus refcount-4bit\.json, 2026-11-26 03:00 UTC/.source,
    ),
  );
  assert.match(body, /confirmation: reproduced in 3 of 3 re-runs/);
  assert.match(body, /latest recheck: not rechecked/);
  assert.match(
    body,
    /stored case: 1 step, 1 data operation, minimised from 2 steps, 1 data operation in 12 runs \(3\.5 s/,
  );
  assert.match(body, /tools: qemu-img version 7\.2\.22 .*; subject: instar 0\.3\.0/);
  assert.ok(body.includes(long), 'the whole message in the body');

  // a control run replays with --control; a repro.sh with a fence in it gets a longer fence
  const control = issueText(
    asReport(reportJson(SIG_B, 'x', { subject: { dialect: 'qemu-img', program: 'qemu-img' } })),
    'b',
    'echo ```\n',
  );
  assert.ok(control.body.includes('npm run fuzz -- --replay reports/b --control'));
  assert.ok(control.body.includes('````bash\necho ```\n````'));
  // a huge repro.sh is cut so that the body stays under GitHub's 65536 characters
  const huge = issueText(asReport(reportJson(SIG_A, 'm')), 'a', `${'echo 0123456789abcdef\n'.repeat(6000)}`);
  assert.ok(huge.body.length <= 65536, `body of ${huge.body.length}`);
  assert.ok(
    huge.body.includes('repro.sh is cut short here') &&
      huge.body.includes(signatureLine(SIG_A)) &&
      huge.body.includes('## Case'),
  );
  // an old report without the triage fields still gives an issue
  const v1 = reportJson(SIG_A, 'm');
  for (const k of ['originalCase', 'minimisation', 'confirmation', 'flaky', 'rechecks'] as const)
    delete (v1 as Record<string, unknown>)[k];
  const old = issueText(asReport({ ...v1, formatVersion: 1 }), 'a');
  assert.match(old.body, /confirmation: not confirmed/);
  assert.match(old.body, /repro\.sh is in the report folder `reports\/a`/);
});

test('without gh: issue.md and issue-title.txt are written, and it says once how to file them', async (t) => {
  const s = await setup(t);
  const results = await openIssues(s.reports, FOLDERS, {
    maxIssues: 5,
    gh: join(s.fake, 'no-such-gh'),
    timeoutMs: 10_000,
    say: s.say,
  });
  assert.deepEqual(
    statuses(results),
    FOLDERS.map((f) => [f, 'written-only']),
  );
  for (const f of FOLDERS) {
    const title = await readFile(join(s.reports, f, 'issue-title.txt'), 'utf8');
    const body = await readFile(join(s.reports, f, 'issue.md'), 'utf8');
    const report = await readJson(join(s.reports, f, 'report.json'));
    assert.equal(title, `${issueText(asReport(report), f, REPRO).title}\n`);
    assert.ok(body.includes(signatureLine(report.signature as string)));
    assert.equal(report.issue, undefined, 'nothing recorded');
  }
  assert.equal(s.lines.length, 1, 'said once');
  assert.match(s.lines[0]!, /no-such-gh is not installed/);
  assert.match(s.lines[0]!, /issue-title\.txt and issue\.md in 3 report folders/);
  const [titleFile, bodyFile] = [
    join(s.reports, FOLDERS[0]!, 'issue-title.txt'),
    join(s.reports, FOLDERS[0]!, 'issue.md'),
  ];
  assert.ok(s.lines[0]!.includes(`gh issue create --title "$(cat ${titleFile})" --body-file ${bodyFile}`));
});

test('gh not authenticated: files written only, nothing listed or created', async (t) => {
  const s = await setup(t);
  await writeFile(join(s.fake, 'auth-rc'), '1');
  const results = await openIssues(s.reports, FOLDERS, { maxIssues: 5, gh: s.gh, timeoutMs: 10_000, say: s.say });
  assert.deepEqual(
    statuses(results),
    FOLDERS.map((f) => [f, 'written-only']),
  );
  assert.deepEqual(await s.calls(), [['auth', 'status']]);
  assert.equal(s.lines.length, 1);
  assert.match(s.lines[0]!, /`.*gh auth status` exited 1: You are not logged into any GitHub hosts/);
});

test('an open issue carrying the signature is a duplicate; a prefix of another signature is not', async (t) => {
  const s = await setup(t);
  const open = [
    {
      number: 7,
      title: 'old',
      url: 'https://github.com/example/instar/issues/7',
      body: `Found again.\n\n${signatureLine(SIG_A)}\n\n## Finding\n`,
    },
    // mentions SIG_B only as a prefix of another signature, and in prose: not SIG_B's issue
    {
      number: 8,
      title: 'other',
      url: 'https://github.com/example/instar/issues/8',
      body: `${signatureLine(`${SIG_B}/more`)}\nlike ${SIG_B}`,
    },
  ];
  await writeFile(join(s.fake, 'open-issues.json'), JSON.stringify(open));
  const results = await openIssues(s.reports, FOLDERS.slice(0, 2), {
    maxIssues: 5,
    gh: s.gh,
    timeoutMs: 10_000,
    say: s.say,
  });
  assert.deepEqual(
    results.map((r) => [r.status, 'url' in r ? r.url : null]),
    [
      ['duplicate', 'https://github.com/example/instar/issues/7'],
      ['filed', 'https://github.com/example/instar/issues/101'],
    ],
  );
  const calls = await s.calls();
  assert.deepEqual(calls[1], [
    'issue',
    'list',
    '--state',
    'open',
    '--search',
    `"${SIG_A}" in:body`,
    '--json',
    'number,title,body,url',
    '--limit',
    '100',
  ]);
  assert.equal(calls.filter((c) => c[1] === 'create').length, 1);
  assert.equal(
    (await readJson(join(s.reports, FOLDERS[0]!, 'report.json'))).issue,
    undefined,
    'a duplicate is not recorded as filed',
  );
  assert.ok(s.lines.some((l) => l.includes('already filed: https://github.com/example/instar/issues/7')));
});

test('the cap: at most maxIssues created per call, the rest reported and filed by the next call', async (t) => {
  const s = await setup(t);
  const first = await openIssues(s.reports, FOLDERS, { maxIssues: 1, gh: s.gh, timeoutMs: 10_000, say: s.say });
  assert.deepEqual(statuses(first), [
    [FOLDERS[0], 'filed'],
    [FOLDERS[1], 'skipped-cap'],
    [FOLDERS[2], 'skipped-cap'],
  ]);
  assert.equal((await s.calls()).filter((c) => c[1] === 'create').length, 1);
  assert.ok(
    s.lines.some((l) => /^2 issues left unfiled: the cap of 1 per call was reached/.test(l)),
    s.lines.join('\n'),
  );
  // the issue filed is open now; the next call skips it and files the other two
  await writeFile(
    join(s.fake, 'open-issues.json'),
    JSON.stringify([
      {
        number: 101,
        title: 't',
        url: 'https://github.com/example/instar/issues/101',
        body: await readFile(join(s.fake, 'body-101.md'), 'utf8'),
      },
    ]),
  );
  const second = await openIssues(s.reports, FOLDERS, { maxIssues: 10, gh: s.gh, timeoutMs: 10_000, say: s.say });
  assert.deepEqual(
    second.map((r) => [r.status, 'url' in r ? r.url : null]),
    [
      ['duplicate', 'https://github.com/example/instar/issues/101'],
      ['filed', 'https://github.com/example/instar/issues/102'],
      ['filed', 'https://github.com/example/instar/issues/103'],
    ],
  );
});

test('a filed issue: gh gets the title and body file, and report.json records the URL it printed', async (t) => {
  const s = await setup(t);
  const folder = FOLDERS[2]!;
  const before = await readJson(join(s.reports, folder, 'report.json'));
  const started = Date.now();
  const [result] = await openIssues(s.reports, [folder], {
    maxIssues: 1,
    gh: s.gh,
    timeoutMs: 10_000,
    say: s.say,
    repo: 'example/instar',
  });
  assert.equal(result!.status, 'filed');
  const title = (await readFile(join(s.reports, folder, 'issue-title.txt'), 'utf8')).trimEnd();
  const bodyFile = join(s.reports, folder, 'issue.md');
  const create = (await s.calls()).find((c) => c[1] === 'create');
  assert.deepEqual(create, ['issue', 'create', '--title', title, '--body-file', bodyFile, '--repo', 'example/instar']);
  assert.equal(await readFile(join(s.fake, 'body-101.md'), 'utf8'), await readFile(bodyFile, 'utf8'));
  assert.match(title, /^fuzz: subject structure\/refcount-mismatch: refcount of cluster 3/);

  const after = await readJson(join(s.reports, folder, 'report.json'));
  const issue = after.issue as { url: string; title: string; filedAt: string };
  assert.equal(issue.url, 'https://github.com/example/instar/issues/101');
  assert.equal(issue.title, title);
  assert.ok(Date.parse(issue.filedAt) >= started - 1000);
  const { issue: _, ...rest } = after;
  assert.deepEqual(rest, asReport(before), 'nothing else in report.json changed (the store upgrades what it writes)');
  const body = await readFile(bodyFile, 'utf8');
  assert.match(body, /flaky: it does not reproduce every time/);
  assert.ok(
    body.includes(
      'npm run fuzz -- --replay reports/flaky/subject-structure-refcount-mismatch-cccccccccc --instar /path/to/instar',
    ),
  );
});

test('a failing gh issue list files nothing for that signature', async (t) => {
  const s = await setup(t);
  await writeFile(join(s.fake, 'list-rc'), '1');
  const results = await openIssues(s.reports, FOLDERS.slice(0, 1), {
    maxIssues: 5,
    gh: s.gh,
    timeoutMs: 10_000,
    say: s.say,
  });
  assert.equal(results[0]!.status, 'error');
  assert.match((results[0] as { error: string }).error, /gh issue list failed: exit 1: HTTP 502/);
  assert.equal((await s.calls()).filter((c) => c[1] === 'create').length, 0);
});

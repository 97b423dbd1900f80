import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

// The stages a case flows through, bottom to top: a module may import from its own stage and the
// stages below it, never from one above (README, "Layout"). Type imports count too. An operation
// (operations/<name>/) takes part in several stages, one file each: its step (model), its
// generator (generators), its judging (oracles) and its row of the operation table (operations).
const LAYERS = [
  'model',
  'qcow2',
  'formats',
  'generators',
  'oracles',
  'operations',
  'exec',
  'triage',
  'reporting',
  'run',
  'cli',
];
const OPERATION_PARTS: Record<string, string> = {
  'step.ts': 'model',
  'generate.ts': 'generators',
  'judge.ts': 'oracles',
  'index.ts': 'operations',
  // repair's damage writer: run on the base image by execution
  'damage.ts': 'exec',
};
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The stage of a source file: its folder's, or for a part of an operation its part's. */
function stageOf(file: string): string | null {
  const parts = file.split('/');
  if (parts[0] === 'operations' && parts.length === 3) return OPERATION_PARTS[parts[2]!] ?? null;
  return LAYERS.includes(parts[0]!) ? parts[0]! : null;
}

async function sources(folder: string): Promise<string[]> {
  const entries = await readdir(join(ROOT, folder), { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)));
}

/** Every relative module a file imports or re-exports, as a path from the root. */
async function importsOf(file: string): Promise<string[]> {
  const text = await readFile(join(ROOT, file), 'utf8');
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s+['"](\.{1,2}\/[^'"]+)['"]/g)].map(
    (m) => m[1]!,
  );
  return specs.map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)));
}

test('every import points to the same stage or one below it', async () => {
  const climbing: string[] = [];
  for (const folder of LAYERS) {
    for (const file of await sources(folder)) {
      const from = stageOf(file);
      if (from === null) {
        climbing.push(`${file} is in no stage (an operation's parts are step, generate, judge and index)`);
        continue;
      }
      for (const target of await importsOf(file)) {
        const to = stageOf(target);
        if (to === null) climbing.push(`${file} imports ${target}, outside the stages`);
        else if (LAYERS.indexOf(to) > LAYERS.indexOf(from))
          climbing.push(`${file} (${from}) imports ${target} (${to}), a later stage`);
      }
    }
  }
  assert.deepEqual(climbing, []);
});

test('the stage check sees imports at all', async () => {
  // guards the test above against a pattern that matches nothing
  assert.ok((await importsOf('run/fuzz.ts')).includes('exec/run-case.ts'));
  assert.ok((await importsOf('oracles/finding.ts')).includes('oracles/table.ts'), 'type imports count');
});

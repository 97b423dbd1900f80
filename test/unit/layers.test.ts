import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

// The stages a case flows through, bottom to top: a module may import from its own folder and the
// folders below it, never from one above (README, "Layout"). Type imports count too.
const LAYERS = ['model', 'qcow2', 'formats', 'generators', 'oracles', 'exec', 'triage', 'reporting', 'run', 'cli'];
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

async function sources(folder: string): Promise<string[]> {
  const entries = await readdir(join(ROOT, folder), { withFileTypes: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => join(folder, e.name));
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
  for (const [rank, folder] of LAYERS.entries()) {
    for (const file of await sources(folder)) {
      for (const target of await importsOf(file)) {
        const to = LAYERS.indexOf(target.split('/')[0]!);
        if (to === -1) climbing.push(`${file} imports ${target}, outside the stages`);
        else if (to > rank) climbing.push(`${file} (${folder}) imports ${target} (${LAYERS[to]}), a later stage`);
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

import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

// `npm run lint`'s check of the GitHub Action (action.yml) and the workflows (.github/workflows/)
// against GitHub's schemas, with action-validator (@action-validator/cli, from the npm registry):
// neither can run here, so a misspelt key or a step without its shell is caught before a push.

const root = fileURLToPath(new URL('..', import.meta.url));
const workflows = (await readdir(`${root}.github/workflows`))
  .filter((f) => /\.ya?ml$/.test(f))
  .map((f) => `.github/workflows/${f}`);
let failed = 0;
for (const file of ['action.yml', ...workflows]) {
  const r = await execa('npx', ['--no-install', 'action-validator', file], { cwd: root, reject: false, all: true });
  if (r.exitCode === 0) continue;
  failed++;
  console.error(`${file} is not a valid GitHub ${file === 'action.yml' ? 'action' : 'workflow'}:\n${r.all}`);
}
if (failed > 0) process.exit(1);

import { readFile } from 'node:fs/promises';
import { execa } from 'execa';

// `npm run lint`'s last check: no line of source past the formatter's width. Prettier breaks code
// at that width but leaves long strings and comments as they are; this finds those.

const { printWidth } = JSON.parse(await readFile(new URL('../.prettierrc.json', import.meta.url), 'utf8')) as {
  printWidth: number;
};
const { stdout } = await execa(
  'git',
  ['ls-files', '--cached', '--others', '--exclude-standard', '--deduplicate', '*.ts', '*.js', '*.sh', ':!testdata'],
  { cwd: new URL('..', import.meta.url) },
);
const long: string[] = [];
// testdata/ (left out above) holds recorded and golden outputs: they are as the tools wrote them
for (const file of stdout.split('\n').filter(Boolean)) {
  // a file deleted in the working tree is still listed until the deletion is committed
  const text = await readFile(new URL(`../${file}`, import.meta.url), 'utf8').catch(() => null);
  if (text === null) continue;
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if ([...line].length > printWidth) long.push(`${file}:${i + 1}: ${[...line].length} characters`);
  });
}
if (long.length > 0) {
  console.error(
    `${long.length} lines are longer than ${printWidth} characters (.prettierrc.json printWidth); break them:`,
  );
  for (const l of long) console.error(`  ${l}`);
  process.exitCode = 1;
}

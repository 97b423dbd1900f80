import { mkdir, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { type Case } from '../model/case.ts';
import { buildCommands, runBuildCommand } from '../model/commands.ts';
import { imagePath, caseLayout } from '../model/layout.ts';

/** Builds a case's base image the way exec/run-case.ts does: in a fresh directory below `parent`,
 * in the base side's own directory when the case has one (an external data file: qemu-img 7.2
 * resolves its relative name against the working directory, see caseLayout). Returns the image's
 * path and the directory every qemu command on it must run in. */
export async function buildBase(c: Case, parent: string): Promise<{ dir: string; image: string; cwd: string }> {
  const dir = await mkdtemp(join(parent, 'case-'));
  const { base } = caseLayout(c);
  const cwd = join(dir, base.dir);
  await mkdir(cwd, { recursive: true });
  for (const cmd of buildCommands(c, base.image)) {
    const { result: r, ok } = await runBuildCommand(cmd, () => execa(cmd.program, cmd.args, { cwd, reject: false }));
    if (!ok)
      throw new Error(`${cmd.what} failed (exit ${r.exitCode ?? r.signal}): ${r.stderr}\ncase: ${JSON.stringify(c)}`);
  }
  return { dir, image: join(dir, imagePath(base)), cwd };
}

import { runCommand } from './process.ts';

/** The first line of `PROGRAM --version`, for reports; instar builds that lack it say so. */
export async function toolVersion(program: string, timeoutMs: number): Promise<string> {
  const r = await runCommand(program, ['--version'], { timeoutMs });
  const line = (r.stdout || r.stderr).split('\n')[0]?.trim() ?? '';
  return r.exitCode === 0 && line !== '' ? line : `unknown (${program} --version exited ${r.exitCode ?? r.signal})`;
}

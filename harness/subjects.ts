import { instarResizeArgs, referenceResizeArgs, type ResizeStep } from './case.ts';
import { runCommand } from './process.ts';

/** A program that resizes an image in place. The reference is always qemu-img; the subject is
 * instar, or qemu-img again in a control run (where every divergence is a harness bug). */
export interface Resizer {
  /** 'instar' speaks instar's command line; 'qemu-img' speaks qemu-img's. */
  dialect: 'instar' | 'qemu-img';
  program: string;
}

export const qemuImg: Resizer = { dialect: 'qemu-img', program: 'qemu-img' };

export function resizeArgs(resizer: Resizer, step: ResizeStep, file: string): string[] {
  return resizer.dialect === 'instar' ? instarResizeArgs(step, file) : referenceResizeArgs(step, file);
}

/** The first line of `PROGRAM --version`, for reports; instar builds that lack it say so. */
export async function toolVersion(program: string, timeoutMs: number): Promise<string> {
  const r = await runCommand(program, ['--version'], { timeoutMs });
  const line = (r.stdout || r.stderr).split('\n')[0]?.trim() ?? '';
  return r.exitCode === 0 && line !== '' ? line : `unknown (${program} --version exited ${r.exitCode ?? r.signal})`;
}

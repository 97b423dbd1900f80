import type { RebaseStep } from '../../model/case.ts';
import { outputModeOf, qemuImg } from '../../model/commands.ts';
import type { Operation } from '../operation.ts';
import { describeRebase, planRebase, REBASE_KINDS, rebaseArgs, rebaseFileMoves } from './step.ts';

// rebase: the top image's backing file changed in place, safe (the guest sees the same disk) or
// with -u (the name alone). Its step, command lines and qemu's rules are step.ts, its generator
// generate.ts; the chain after it is judged by the chain oracle (oracles/chain.ts), the top read
// through its new chain by the content oracle.

export const rebase: Operation<RebaseStep> = {
  name: 'rebase',
  what:
    "changes a qcow2 or vmdk image's backing file in place " +
    '(qemu-img rebase, safe and -u, onto another image or none)',
  formats: ['qcow2', 'vmdk'],
  kinds: REBASE_KINDS,
  plan: (step, state, format) => planRebase(step, state, format),
  reference: (step, file, image) => ({
    commands: [rebaseArgs(qemuImg, step, file, 'human', image.format)],
    main: 0,
    scratch: null,
  }),
  subject: (resizer, step, file, image) => rebaseArgs(resizer, step, file, outputModeOf(resizer, step), image.format),
  output: outputModeOf,
  oracles: ['chain'],
  // qemu-img rebases no vmdk; instar does, with -u
  checkedAlone: true,
  describe: describeRebase,
  fileMoves: rebaseFileMoves,
  facts: () => ({ amendKeys: [] }),
};

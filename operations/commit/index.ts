import type { CommitStep } from '../../model/case.ts';
import { outputModeOf, qemuImg } from '../../model/commands.ts';
import type { Operation } from '../operation.ts';
import { COMMIT_KINDS, commitArgs, commitTarget, describeCommit, planCommit } from './step.ts';

// commit: the top image's data written into a member of its backing chain, in place. Its step,
// command lines and qemu's rules are step.ts, its generator generate.ts; every member of the chain
// is judged after it by the chain oracle (oracles/chain.ts), the top by every qcow2 step's oracles.

export const commit: Operation<CommitStep> = {
  name: 'commit',
  what: "writes a qcow2 or vmdk image's data into its backing chain in place (qemu-img commit, with and without -b)",
  formats: ['qcow2', 'vmdk'],
  kinds: COMMIT_KINDS,
  plan: (step, state) => planCommit(step, state),
  reference: (step, file, image) => ({
    commands: [commitArgs(qemuImg, step, file, 'human', image.format)],
    main: 0,
    scratch: null,
  }),
  subject: (resizer, step, file, image) => commitArgs(resizer, step, file, outputModeOf(resizer, step), image.format),
  output: outputModeOf,
  oracles: ['chain'],
  checkedAlone: true,
  describe: describeCommit,
  writesInto: commitTarget,
  facts: () => ({ amendKeys: [] }),
};

import type { AmendStep } from '../../model/case.ts';
import { outputModeOf, qemuImg } from '../../model/commands.ts';
import type { Operation } from '../operation.ts';
import { AMEND_KINDS, amendArgs, amendPairs, planAmend } from './step.ts';

// amend: a qcow2 image's options changed in place: compat up and down, lazy_refcounts,
// refcount_bits, size. Its step, command lines and qemu's rules are step.ts, its generator
// generate.ts, its JSON report judged by judge.ts.

export const amend: Operation<AmendStep> = {
  name: 'amend',
  what: "changes a qcow2 image's options in place (qemu-img amend -o compat, lazy_refcounts, refcount_bits, size)",
  formats: ['qcow2'],
  kinds: AMEND_KINDS,
  plan: (step, state) => planAmend(step, state),
  reference: (step, file, image) => ({
    commands: [amendArgs(qemuImg, step, file, image, 'human')],
    main: 0,
    scratch: null,
  }),
  subject: (resizer, step, file, image) => amendArgs(resizer, step, file, image, outputModeOf(resizer, step)),
  output: outputModeOf,
  oracles: [],
  describe: (step) => `amend -o ${step.options}`,
  facts: (step) => ({ amendKeys: amendPairs(step.options).map((p) => p.key) }),
};

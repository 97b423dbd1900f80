import { IMAGE_FORMATS, type ResizeStep } from '../../model/case.ts';
import { outputModeOf, referenceCommands, resizeArgs } from '../../model/commands.ts';
import { planResize, STEP_KINDS } from '../../model/plan.ts';
import type { Operation } from '../operation.ts';

// resize: grow or shrink the virtual disk in place, the operation this harness began with. Its
// step is model/case.ts ResizeStep, its rules model/plan.ts, its command lines model/commands.ts
// (resizeArgs, and for vhdx, vmdk and vpc the reference through raw, referenceCommands), its
// generator generators/steps.ts, its own oracles size-grammar (how SIZE is written) and allocation
// (what a grow allocates); its JSON report is judged in oracles/output.ts.

export const resize: Operation<ResizeStep> = {
  name: 'resize',
  what: 'grows or shrinks the virtual disk (qemu-img resize [--shrink] [--preallocation=MODE])',
  formats: IMAGE_FORMATS,
  kinds: STEP_KINDS,
  plan: planResize,
  reference: (step, file, image, plan) => {
    const r = referenceCommands(step, file, image, plan.kind as (typeof STEP_KINDS)[number]);
    return { commands: r.commands, main: r.resize, scratch: r.scratch };
  },
  subject: (resizer, step, file, image) => resizeArgs(resizer, step, file, image.format),
  output: outputModeOf,
  oracles: ['size-grammar', 'allocation'],
  describe: (step) =>
    `resize to ${step.size}${step.shrink ? ' --shrink' : ''}` +
    `${step.preallocation !== null ? ` --preallocation=${step.preallocation}` : ''}`,
  facts: () => ({ amendKeys: [] }),
};

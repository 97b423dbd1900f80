import type { RebaseStep } from './step.ts';

// How rebase's own output is judged (oracles/output.ts): qemu-img prints nothing; instar's
// --output json report must have these keys (../shared/reference/instar-ops.md). The counts are
// instar's own; the chain and the top's content are the chain and content oracles'.

/** A rebase report's keys: `new_backing`, or `detached` for `-b ""`. */
export const rebaseJsonKeys = (step: RebaseStep) => [
  'overlay',
  'overlay_format',
  'mode',
  'clusters_copied',
  'bytes_copied',
  step.backing === '' ? 'detached' : 'new_backing',
];

import type { RepairStep } from '../../model/case.ts';
import type { Operation } from '../operation.ts';
import { planRepair, REPAIR_EXITS, REPAIR_TIERS, repairArgs, repairOutput } from './step.ts';
import { qemuImg } from '../../model/commands.ts';

// repair: a damaged qcow2 image repaired in place (qemu-img check -r leaks|all). The damage is a
// build step of the case (damage.ts), written by the harness before either side runs; its step,
// command lines and qemu's rules are step.ts, its generator generate.ts, its exit code and report
// judged by judge.ts (the repair oracle); what the repaired images are, by check, structure,
// content and info like every step's.

export const repair: Operation<RepairStep> = {
  name: 'repair',
  what: 'repairs a damaged qcow2 image in place (qemu-img check -r leaks|all; the damage written by the harness)',
  formats: ['qcow2'],
  kinds: REPAIR_TIERS,
  plan: (step, state) => planRepair(step, state),
  reference: (step, file) => ({ commands: [repairArgs(qemuImg, step, file, 'json')], main: 0, scratch: null }),
  subject: (resizer, step, file) => repairArgs(resizer, step, file, repairOutput(resizer, step)),
  output: repairOutput,
  oracles: ['repair'],
  acceptedExits: REPAIR_EXITS,
  damagedInput: true,
  describe: (step) => `check --repair=${step.tier}`,
  facts: () => ({ amendKeys: [] }),
};

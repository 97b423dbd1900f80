import type { SnapshotStep } from '../../model/case.ts';
import { outputModeOf, qemuImg } from '../../model/commands.ts';
import type { Operation } from '../operation.ts';
import { planSnapshot, snapshotArgs, SNAPSHOT_ACTIONS } from './step.ts';

// snapshot: a qcow2 image's internal snapshots created, applied, deleted or listed in place. Its
// step, command lines and qemu's rules are step.ts, its generator generate.ts, its listing and
// JSON judged by judge.ts; an apply is judged against the content the image held when the
// snapshot was taken (the harness keeps a copy then).

export const snapshot: Operation<SnapshotStep> = {
  name: 'snapshot',
  what: 'creates, applies, deletes or lists internal snapshots in place (qemu-img snapshot -c/-a/-d/-l)',
  formats: ['qcow2'],
  kinds: SNAPSHOT_ACTIONS,
  plan: (step, state) => planSnapshot(step, state),
  reference: (step, file, image) => ({
    commands: [snapshotArgs(qemuImg, step, file, image, 'human')],
    main: 0,
    scratch: null,
  }),
  subject: (resizer, step, file, image) => snapshotArgs(resizer, step, file, image, outputModeOf(resizer, step)),
  output: outputModeOf,
  oracles: [],
  describe: (step) => (step.action === 'list' ? 'snapshot -l' : `snapshot ${step.action} ${JSON.stringify(step.name)}`),
  facts: () => ({ amendKeys: [] }),
  snapshotContent: (step) =>
    step.action === 'create' ? { keeps: step.name } : step.action === 'apply' ? { restores: step.name } : null,
};

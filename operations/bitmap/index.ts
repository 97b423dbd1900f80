import type { BitmapStep } from '../../model/case.ts';
import { qemuImg } from '../../model/commands.ts';
import type { Operation } from '../operation.ts';
import { bitmapArgs, bitmapOutput, BITMAP_KINDS, describeBitmap, guestWriteCommands, planBitmap } from './step.ts';

// bitmap: a qcow2 image's persistent dirty bitmaps added, removed, cleared, enabled, disabled or
// merged in place (qemu-img bitmap). Its step, command lines and qemu's rules are step.ts, its
// generator generate.ts, its JSON report judged by judge.ts; the bitmaps and their bits, by the
// bitmaps oracle (oracles/bitmaps.ts) like every qcow2 step's.

export const bitmap: Operation<BitmapStep> = {
  name: 'bitmap',
  what:
    "changes a qcow2 image's persistent dirty bitmaps in place " +
    '(qemu-img bitmap --add/--remove/--clear/--enable/--disable/--merge)',
  formats: ['qcow2'],
  kinds: BITMAP_KINDS,
  plan: (step, state) => planBitmap(step, state),
  reference: (step, file, image) => ({
    commands: [bitmapArgs(qemuImg, step, file, image, 'human')],
    main: 0,
    scratch: null,
  }),
  subject: (resizer, step, file, image) => bitmapArgs(resizer, step, file, image, bitmapOutput(resizer, step)),
  output: bitmapOutput,
  oracles: [],
  describe: describeBitmap,
  guestWrites: guestWriteCommands,
  facts: () => ({ amendKeys: [] }),
};

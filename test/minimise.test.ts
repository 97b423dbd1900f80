import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Case } from '../model/case.ts';
import { plannedSizes } from '../model/plan.ts';
import { CaseAborted } from '../model/errors.ts';
import { smaller } from '../model/case.ts';
import { minimise } from '../run/minimise.ts';
import { caseAt } from '../generators/cases.ts';

// The minimiser against predicates that stand in for a subject's bug: fast, and exact about what
// must be left.

/** A stand-in for #365: any accepted shrink of an image with sub-byte refcounts. */
const subByteShrink = (c: Case) => c.image.refcountBits < 8 && firstShrink(c) >= 0;
/** The index of the first accepted shrink, or -1. */
const firstShrink = (c: Case) => plannedSizes(c).findIndex(({ plan }) => plan.kind === 'shrink' && plan.accepted);
/** A predicate as the minimiser wants it: the step of the "finding", or null. */
const asFinding = (p: (c: Case) => boolean) => async (c: Case) => (p(c) ? { step: firstShrink(c) } : null);

/** The first case index of `seed` that satisfies `p` and is not already small. */
function firstCase(seed: number, p: (c: Case) => boolean): { iteration: number; c: Case } {
  for (let iteration = 0; ; iteration++) {
    const c = caseAt(seed, iteration);
    if (p(c) && (c.steps.length > 1 || c.data.length > 0)) return { iteration, c };
  }
}

describe('minimise', () => {
  it('keeps only what the finding needs: one step, no data, no optional feature', async () => {
    // a bug of the first step, when it is a shrink, that needs a write
    const hasWriteAndShrink = (c: Case) =>
      subByteShrink(c) && firstShrink(c) === 0 && c.data.some((d) => d.op === 'write');
    const { iteration, c } = firstCase(3, (x) => hasWriteAndShrink(x) && x.steps.length > 1);
    const m = await minimise(
      3,
      iteration,
      c,
      asFinding(hasWriteAndShrink),
      { runs: 500, timeMs: 60_000 },
      firstShrink(c),
    );
    assert.equal(m.stoppedBy, 'done');
    assert.equal(m.case.steps.length, 1, JSON.stringify(m.case));
    assert.equal(m.case.data.length, 1, JSON.stringify(m.case.data));
    assert.equal(m.case.data[0]!.op, 'write');
    assert.ok(m.case.image.refcountBits < 8);
    const { image } = m.case;
    assert.deepEqual(
      [
        image.extendedL2,
        image.compressionType,
        image.dirty,
        image.bitmaps,
        image.lazyRefcounts,
        image.createdWithRefcountBits,
        image.backing,
        image.dataFile,
      ],
      [false, 'zlib', false, 0, false, null, null, 'none'],
    );
    assert.ok(smaller(m.case, c));
  });

  it('never returns a case that does not reproduce', async () => {
    const { iteration, c } = firstCase(4, subByteShrink);
    const tried: Case[] = [];
    // reproduces only while the image keeps its exact size: most candidates fail
    const m = await minimise(
      4,
      iteration,
      c,
      asFinding((x) => (tried.push(x), subByteShrink(x) && x.image.virtualSize === c.image.virtualSize)),
      { runs: 500, timeMs: 60_000 },
      firstShrink(c),
    );
    assert.ok(tried.length > 0);
    assert.equal(m.case.image.virtualSize, c.image.virtualSize);
    assert.ok(subByteShrink(m.case));
  });

  it('stops at its budget of runs and keeps the smallest case so far', async () => {
    const { iteration, c } = firstCase(5, subByteShrink);
    let runs = 0;
    const m = await minimise(
      5,
      iteration,
      c,
      asFinding((x) => (runs++, subByteShrink(x))),
      { runs: 3, timeMs: 60_000 },
      firstShrink(c),
    );
    assert.equal(runs, 3);
    assert.equal(m.runs, 3);
    assert.equal(m.stoppedBy, 'runs');
    assert.ok(subByteShrink(m.case));
  });

  const interrupts = 'stops when the run is interrupted, ';
  it(`${interrupts}and rethrows any other error instead of taking it for a reproduction`, async () => {
    const { iteration, c } = firstCase(6, subByteShrink);
    const interrupted = await minimise(
      6,
      iteration,
      c,
      async () => {
        throw new CaseAborted();
      },
      { runs: 50, timeMs: 60_000 },
      0,
    );
    assert.equal(interrupted.stoppedBy, 'interrupted');
    assert.deepEqual(interrupted.case, c);
    await assert.rejects(
      minimise(
        6,
        iteration,
        c,
        async () => {
          throw new Error('disk on fire');
        },
        { runs: 50, timeMs: 60_000 },
        0,
      ),
      /disk on fire/,
    );
  });

  it('orders cases by steps, then data operations, then virtual size', () => {
    const c = caseAt(1, 0);
    const fewerSteps = { ...c, steps: c.steps.slice(0, 1), data: [...c.data, ...c.data] };
    assert.equal(smaller(fewerSteps, { ...c, steps: [...c.steps, ...c.steps] }), true);
    assert.equal(smaller(c, c), false);
    assert.equal(
      smaller({ ...c, image: { ...c.image, virtualSize: 512 } }, { ...c, image: { ...c.image, virtualSize: 1024 } }),
      true,
    );
  });
});

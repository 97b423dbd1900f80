import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT, fuzzCli, readSummary, reportsDir } from './helpers.ts';

// The repository's corpus (corpus/): qemu's own iotests for qcow2 resize written as cases
// (corpus/iotest-*.json, docs/iotests.md) and promoted regression cases. Every fuzz run replays it
// first; here it is replayed whole with qemu-img on both sides.

const CORPUS = join(ROOT, 'corpus');

describe('the corpus', () => {
  // against instar (or a double) every fuzz run replays it; the control replay proves the cases
  for (const [what, subject] of [['qemu-img on both sides', ['--control']]] as const) {
    it(`replays clean with ${what}`, async (t) => {
      const files = (await readdir(CORPUS)).filter((n) => n.endsWith('.json'));
      const iotests = files.filter((n) => /^iotest-\d{3}-.*\.json$/.test(n));
      assert.ok(iotests.length > 0, 'corpus/ holds the iotests cases');
      const reports = await reportsDir(t);
      // the corpus takes at most --corpus-share of --iterations: all of it, beside as many generated
      const budget = ['--corpus-share', '1', '--iterations', String(files.length), '--minimise-runs', '0'];
      const args = [...subject, '--corpus', CORPUS, ...budget, '--seed', '1'];
      const r = await fuzzCli([...args, '--reports', reports]);
      assert.equal(r.exitCode, 0, r.all);
      const { corpus } = await readSummary(reports);
      assert.equal(corpus.run, corpus.available, JSON.stringify(corpus));
      assert.ok(corpus.available >= iotests.length);
      assert.equal(corpus.newDivergences, 0);
    });
  }
});

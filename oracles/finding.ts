import type { OracleName } from './table.ts';

// A finding is what an oracle reports. Its signature (oracle, kind, side, normalised detail) names
// the bug, not the case: it carries no paths, seeds or sizes, so every hit of one bug shares it.

export type Side = 'subject' | 'reference';

export interface Finding {
  oracle: OracleName;
  kind: string;
  /** The side that misbehaved: reference findings are qemu's own behaviour, never the subject's. */
  side: Side;
  /** Normalised and stable across cases; part of the signature. */
  detail: string;
  /** For people: the specifics of this hit (sizes, exit codes, counts). */
  message: string;
  evidence?: unknown;
  /** The operation of the step it came from, where not a resize (the harness's first operation,
   * whose signatures keep the form they had): the same damage after a snapshot and after a resize
   * comes from different code. */
  operation?: string;
}

/** A finding together with the step it came from. */
export interface StepFinding extends Finding {
  step: number;
}

const CHECK_KINDS = ['check-failed', 'corruptions', 'check-errors', 'leaks'];

/** The oracle a signature names. An after-use finding of a check or content kind names the oracle
 * it repeats: the same damage is the same bug whether a step or the after-use workload exposed it. */
export const signatureOracle = (f: Pick<Finding, 'oracle' | 'kind'>): string =>
  f.oracle !== 'after-use' || f.kind === 'workload-failed'
    ? f.oracle
    : CHECK_KINDS.includes(f.kind)
      ? 'check'
      : 'content';

export const signatureOf = (f: Pick<Finding, 'oracle' | 'kind' | 'side' | 'detail' | 'operation'>) =>
  `${f.operation ? `${f.operation}:` : ''}${signatureOracle(f)}/${f.kind}/${f.side}/${f.detail}`;

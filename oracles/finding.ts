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
}

/** A finding together with the step it came from. */
export interface StepFinding extends Finding {
  step: number;
}

export const signatureOf = (f: Pick<Finding, 'oracle' | 'kind' | 'side' | 'detail'>) =>
  `${f.oracle}/${f.kind}/${f.side}/${f.detail}`;

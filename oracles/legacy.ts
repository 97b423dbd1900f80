import type { Finding } from './finding.ts';

// Reports filed before signatures named causes (report formats 1 and 2) carry the coarse
// signatures of then: the oracle, the kind and a detail of a few words. A replay or recheck of such
// a report asks whether that signature happens again, so a finding of today is also said the way
// the harness said it then. Only this module knows the old words.

type Evidence = Record<string, unknown>;
const ev = (f: Finding): Evidence =>
  typeof f.evidence === 'object' && f.evidence !== null ? (f.evidence as Evidence) : {};

/** The old details of one of today's findings (one finding of today may have been several). */
function legacyDetails(f: Finding): { kind: string; detail: string }[] {
  const e = ev(f);
  const one = (kind: string, detail: string) => [{ kind, detail }];
  switch (`${f.oracle === 'after-use' ? 'wrapped' : f.oracle}/${f.kind}`) {
    case 'outcome/crashed':
      return one('crashed', `signal=${e.signal},step=${e.stepKind}`);
    case 'outcome/refused':
    case 'outcome/accepted':
      return one('outcome-mismatch', `reference=${e.reference},subject=${e.subject},step=${e.stepKind}`);
    case 'check/check-failed':
    case 'wrapped/check-failed':
      return one('check-failed', `exit=${e.exitCode}`);
    case 'check/corruptions':
    case 'check/check-errors':
    case 'check/leaks':
    case 'wrapped/corruptions':
    case 'wrapped/check-errors':
    case 'wrapped/leaks':
      return one(f.kind, f.kind);
    case 'structure/refcount-mismatch': {
      const groups = (e.groups as { class: string }[] | undefined) ?? [];
      return [...new Set(groups.map((g) => g.class))].map((cls) => ({ kind: f.kind, detail: cls }));
    }
    case 'content/size-differs':
    case 'wrapped/size-differs':
      return one('size-differs', 'virtual-size');
    case 'content/content-differs':
    case 'wrapped/content-differs':
      return one('content-differs', 'content-differs');
    case 'content/compare-failed':
    case 'wrapped/compare-failed':
      return one('compare-failed', `exit=${e.exitCode}`);
    case 'wrapped/workload-failed':
      return one(f.kind, f.detail.split(',').slice(0, 2).join(','));
    default:
      // the kinds whose signature did not change
      return one(f.kind, f.detail);
  }
}

/** The signatures a finding of today had under the old scheme. */
export const legacySignatures = (f: Finding): string[] =>
  legacyDetails(f).map(({ kind, detail }) => `${f.oracle}/${kind}/${f.side}/${detail}`);

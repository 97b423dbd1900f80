import type { FormatStructure } from '../formats/rules.ts';
import type { Finding, Side } from './finding.ts';

// The structure oracle of vpc, vhdx and vmdk images: each rule of the format's specification that
// the result breaks (formats/), as the format's own readers would meet it. Hyper-V, Azure,
// VirtualBox and VMware read these images, not only qemu, and qemu checks little of them: a stale
// dynamic-header checksum, a footer at the end that disagrees with its copy at offset 0, a
// redundant grain directory that is not a copy, a second region table that is out of date all pass
// through qemu. One finding per broken rule, named `<format>:<rule>`, so that every rule is a
// signature of its own and a second broken rule in the same case does not make a new one.

function broken(side: Side, s: FormatStructure, besides: Set<string>): Finding[] {
  const base = { oracle: 'structure' as const, side };
  if (!s.readable)
    return [
      {
        ...base,
        kind: 'unreadable',
        detail: `${s.format}:${s.reason}`,
        message: `the ${side} image cannot be read as ${s.format}: ${s.message}`,
      },
    ];
  return s.broken
    .filter((b) => !besides.has(b.rule))
    .map((b) => ({
      ...base,
      kind: 'spec-violation',
      detail: `${s.format}:${b.rule}`,
      message: `the ${side} image breaks the ${s.format} rule ${b.rule}: ${b.message}`,
      evidence: { rule: b.rule, checked: s.checked },
    }));
}

/** The subject's broken rules that qemu's result keeps, and qemu's own (reported on its side: a
 * qemu bug, or more likely this reader's). */
export function formatStructureOracle(subject: FormatStructure, reference: FormatStructure | null): Finding[] {
  const qemuBreaks = new Set(reference?.readable ? reference.broken.map((b) => b.rule) : []);
  return [...broken('subject', subject, qemuBreaks), ...(reference ? broken('reference', reference, new Set()) : [])];
}

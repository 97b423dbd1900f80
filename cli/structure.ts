import { signatureOf } from '../oracles/finding.ts';
import { structureOracle } from '../oracles/structure.ts';
import { structuralCheck } from '../qcow2/structure.ts';

// The structure oracle on two images, for repro.sh of a structure finding (qemu-img cannot show
// what it sees): node --import tsx cli/structure.ts SUBJECT REFERENCE [SIGNATURE]
// Exit 1 when SIGNATURE (any finding, without one) is found, 0 when not, 2 on bad usage.

const [subject, reference, signature] = process.argv.slice(2);
if (!subject || !reference) {
  console.error('usage: cli/structure.ts SUBJECT.qcow2 REFERENCE.qcow2 [SIGNATURE]');
  process.exit(2);
}
const findings = structureOracle(await structuralCheck(subject), await structuralCheck(reference));
for (const f of findings) console.log(`${signatureOf(f)}: ${f.message}`);
process.exitCode = findings.some((f) => signature === undefined || signatureOf(f) === signature) ? 1 : 0;

import { open } from 'node:fs/promises';
import { extname } from 'node:path';
import { STRUCTURED_FORMATS, type StructuredFormat } from '../formats/rules.ts';
import { readFormatStructure } from '../formats/structure.ts';
import { signatureOf } from '../oracles/finding.ts';
import { formatStructureOracle } from '../oracles/format-structure.ts';
import { bitmapsOracle } from '../oracles/bitmaps.ts';
import { structureOracle } from '../oracles/structure.ts';
import { structuralCheck } from '../qcow2/structure.ts';

// The structure and bitmaps oracles on two images, for repro.sh of their findings (qemu-img cannot
// show what they see): node --import tsx cli/structure.ts SUBJECT REFERENCE [SIGNATURE [BEFORE]]
// A qcow2 image is known by its magic; a vpc, vhdx or vmdk one by its extension. BEFORE is the
// subject's image before the step (what clusters it leaked had been).
// Exit 1 when SIGNATURE (any finding, without one) is found, 0 when not, 2 on bad usage.

const [subject, reference, signature, before] = process.argv.slice(2);
if (!subject || !reference) {
  console.error('usage: cli/structure.ts SUBJECT REFERENCE [SIGNATURE [BEFORE]]');
  process.exit(2);
}

async function isQcow2(file: string): Promise<boolean> {
  const fh = await open(file, 'r').catch(() => null);
  if (!fh) return false;
  try {
    const magic = Buffer.alloc(4);
    await fh.read(magic, 0, 4, 0);
    return magic.toString('latin1') === 'QFI\xfb';
  } finally {
    await fh.close();
  }
}

const format = extname(subject).slice(1);
const findings =
  !(await isQcow2(reference)) && (STRUCTURED_FORMATS as readonly string[]).includes(format)
    ? formatStructureOracle(
        await readFormatStructure(subject, format as StructuredFormat),
        await readFormatStructure(reference, format as StructuredFormat),
      )
    : await qcow2Findings();

/** The structure and bitmaps oracles on two qcow2 images. */
async function qcow2Findings() {
  const [sub, ref] = [await structuralCheck(subject!), await structuralCheck(reference!)];
  const bits = (o: typeof sub) => (o.readable ? o.bitmapBits : undefined);
  return [
    ...structureOracle(sub, ref, before ? await structuralCheck(before) : null),
    ...bitmapsOracle(bits(ref), bits(sub)),
  ];
}
for (const f of findings) console.log(`${signatureOf(f)}: ${f.message}`);
process.exitCode = findings.some((f) => signature === undefined || signatureOf(f) === signature) ? 1 : 0;

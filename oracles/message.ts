// A tool's message as part of a signature: the first line it printed on stderr, with what varies
// from case to case taken out (file names and paths, sizes, offsets, long numbers) and what names
// the cause kept (words, short codes such as `error 8`). Two refusals for the same reason then read
// the same whatever the image, and a refusal for a new reason reads differently.

/** The first line of `text` that says something. */
export const firstLine = (text: string) =>
  text
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l !== '') ?? '';

/** The line a refusal says why on: qemu-img's own (`qemu-img: ...`), which a failed `check -r`
 * prints after its ERROR lines about single clusters (those name the damage, not the refusal);
 * else the first line that says something. */
export const messageLine = (text: string) =>
  text
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l.startsWith('qemu-img: ')) ?? firstLine(text);

const MAX_LENGTH = 160;

/** A source location in a panic or assertion message (`src/x.rs:12:5`): it names the cause, like
 * the top frame of a crash, and stays as it is. */
const SOURCE_LOCATION = /(?:[\w.-]+\/)*[\w.-]+\.(?:rs|c|h|ts):\d+(?::\d+)?/g;

export function normaliseMessage(text: string): string {
  const kept: string[] = [];
  const protectedLine = firstLine(text).replace(SOURCE_LOCATION, (m) => `⟦${kept.push(m) - 1}⟧`);
  const line = protectedLine
    // paths (from the root or the working directory, or ending in a file name with a dot) and the
    // names of images and data files; words with a slash such as Input/output stay
    .replace(/(?<![\w.])(?:\.{0,2}\/)(?:[\w.,~-]+\/?)+|(?:[\w~-]+\/)+[\w,~-]*\.[\w.,~-]+/g, '<path>')
    .replace(/[\w.-]+\.(?:qcow2|raw|vmdk|vhdx|vpc|img|tmp)\b/g, '<path>')
    // hex numbers, and decimals that are long, fractional or carry a size suffix; short integers
    // (exit and error codes, small counts) stay
    .replace(/\b0x[0-9a-f]+\b/gi, '<n>')
    // a sector or an offset, however small: where the damage lies is the case's, not the bug's
    .replace(/\b(sector|offset) \d+\b/gi, '$1 <n>')
    .replace(/[+-]?\d+\.\d+[bkmgtpe]?\b|[+-]?\d+[bkmgtpe]\b|[+-]?\d{3,}/gi, '<n>')
    .replace(/\s+/g, ' ')
    .replace(/⟦(\d+)⟧/g, (_, i: string) => kept[Number(i)]!);
  return line.length > MAX_LENGTH ? `${line.slice(0, MAX_LENGTH - 1)}…` : line;
}

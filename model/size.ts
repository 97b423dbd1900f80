// How a step writes its SIZE, and the other ways a tool may read it. qemu-img reads `[+|-]N[.F][U]`
// with U one of b B k K m M g G t T p P e E (powers of 1024, case-insensitive, b and B bytes),
// fractions only with a suffix (plan.ts parseSize). A resizer with a grammar of its own reads some
// of these forms differently or not at all: how the tools read a size is a divergence of its own.

/** The spelling of a SIZE: its number (`integer` or `fraction`) and its suffix (`none`, `b`, `B`,
 * `lower` k to e, `upper` K to E), e.g. `fraction-upper` for `1.5M`, `integer-b` for `2048b`; a
 * leading + or - does not change how a number is read. `unparsed` for anything else. */
export function sizeForm(size: string): string {
  const m = /^[+-]?(\d+)(\.\d+)?([a-zA-Z]?)$/.exec(size.trim());
  if (!m) return 'unparsed';
  const suffix = m[3]!;
  const kind =
    suffix === ''
      ? 'none'
      : suffix === 'b' || suffix === 'B'
        ? suffix
        : suffix === suffix.toLowerCase()
          ? 'lower'
          : 'upper';
  return `${m[2] ? 'fraction' : 'integer'}-${kind}`;
}

/** Forms both tools read as plain bytes beyond doubt. */
export const isPlainForm = (form: string) => form === 'integer-none';

const UNIT: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/** Sizes a tool could take SIZE for under the usual other readings: `b` as 512-byte sectors,
 * lowercase suffixes as powers of 1000, a fraction cut to its integer part. Relative sizes are
 * applied to `current`. */
export function otherReadings(size: string, current: number): number[] {
  const m = /^([+-]?)(\d+)(\.\d+)?([a-zA-Z]?)$/.exec(size.trim());
  if (!m) return [];
  const [, sign, whole, fraction, suffix] = m as unknown as [string, string, string, string | undefined, string];
  const value = Number(whole) + (fraction ? Number(fraction) : 0);
  const scales: number[] = [];
  if (suffix === 'b') scales.push(512);
  const unit = UNIT[suffix.toLowerCase()];
  if (unit !== undefined && suffix === suffix.toLowerCase()) scales.push(1000 ** (Math.log2(unit) / 10));
  const readings = scales.map((s) => value * s);
  if (fraction && unit !== undefined) readings.push(Number(whole) * unit);
  return readings.map((n) => (sign === '+' ? current + n : sign === '-' ? current - n : n));
}

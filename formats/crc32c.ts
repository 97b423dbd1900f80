// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as MS-VHDX uses it for its headers,
// region tables and log entries.

const TABLE = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

export function crc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** The CRC-32C of `data` with the 4 bytes at `at` taken as zeros, as a checksum field is computed. */
export function crc32cWithout(data: Buffer, at: number): number {
  const copy = Buffer.from(data);
  copy.fill(0, at, at + 4);
  return crc32c(copy);
}

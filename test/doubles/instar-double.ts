// Test double for `instar resize`: runs `qemu-img resize` underneath, then injects the fault named
// by INSTAR_DOUBLE_FAULT. Lets the harness's oracles be tested where real instar (KVM) cannot run.
import { spawn } from "node:child_process";
import { appendFile, stat } from "node:fs/promises";
import { execa } from "execa";
import {
  COMPAT_LAZY_REFCOUNTS,
  getRefcountEntry,
  readQcow2Header,
  refcountEntriesPerBlock,
  rewriteRefcountBlocks,
  writeCompatibleFeatures,
  type Qcow2Header,
} from "../../harness/qcow2.ts";

const FAULTS = [
  "none",
  "365-stride",
  "msb-first",
  "refuse-unaligned-shrink",
  "touch-on-refusal",
  "drop-lazy-refcounts",
  "stale-grow-tail",
  "crash-on-shrink",
  "hang-on-grow",
] as const;
type Fault = (typeof FAULTS)[number];

const USAGE =
  "usage: instar resize [-f FMT] [--shrink] [--preallocation MODE] [-q] [--output human|json] FILENAME [+|-]SIZE";

function die(msg: string, code = 1): never {
  process.stderr.write(`instar-double: ${msg}\n`);
  process.exit(code);
}

interface ResizeArgs {
  format?: string;
  shrink: boolean;
  preallocation?: string;
  quiet: boolean;
  output: "human" | "json";
  filename: string;
  size: string;
}

// Hand-written parser: SIZE may look like an option ("-1M"), so once FILENAME is seen an unknown
// "-..." argument is taken as SIZE instead of being rejected. Known options may appear anywhere.
function parseResizeArgs(args: string[]): ResizeArgs {
  let format: string | undefined, preallocation: string | undefined;
  let shrink = false, quiet = false, output: "human" | "json" = "human";
  const positional: string[] = [];
  const value = (i: number, name: string): string => args[i] ?? die(`${name} needs a value\n${USAGE}`);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (arg === "-f") format = value(++i, "-f");
    else if (arg === "--shrink") shrink = true;
    else if (arg === "-q") quiet = true;
    else if (arg === "--preallocation") preallocation = value(++i, arg);
    else if (arg.startsWith("--preallocation=")) preallocation = arg.slice("--preallocation=".length);
    else if (arg === "--output" || arg.startsWith("--output=")) {
      const out = arg === "--output" ? value(++i, arg) : arg.slice("--output=".length);
      if (out !== "human" && out !== "json") die(`bad --output ${out}\n${USAGE}`);
      output = out;
    } else if (arg.startsWith("-") && arg !== "-" && positional.length === 0) die(`unknown option ${arg}\n${USAGE}`);
    else positional.push(arg);
  }
  const [filename, size] = positional;
  if (positional.length !== 2 || filename === undefined || size === undefined) {
    die(`expected FILENAME and SIZE\n${USAGE}`);
  }
  return { format, shrink, preallocation, quiet, output, filename, size };
}

// qemu's size syntax: [+|-]N[.F][B|K|M|G|T|P|E], powers of 1024; a fraction needs a real scale.
const SCALE: Record<string, number> = { "": 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };
function requestedSize(arg: string, oldSize: number): number | undefined {
  const m = /^([+-]?)(\d+(?:\.\d+)?)([bkmgtpe]?)$/i.exec(arg);
  if (!m) return undefined;
  const [, sign, num = "", suffix = ""] = m;
  const scale = SCALE[suffix.toLowerCase()] ?? 1;
  if (scale === 1 && !Number.isInteger(Number(num))) return undefined;
  const n = Math.floor(Number(num) * scale);
  return sign === "+" ? oldSize + n : sign === "-" ? oldSize - n : n;
}

async function isQcow2(file: string): Promise<boolean> {
  try {
    await readQcow2Header(file);
    return true;
  } catch {
    return false;
  }
}

/** Virtual size as the resize will see it, or undefined if the image cannot be read. */
async function virtualSize(file: string, format: string | undefined): Promise<number | undefined> {
  try {
    if (format === "qcow2") return (await readQcow2Header(file)).size;
    if (format === "raw") return (await stat(file)).size;
    const info = await execa("qemu-img", ["info", "--output=json", "-U", ...(format ? ["-f", format] : []), file]);
    return (JSON.parse(info.stdout) as { "virtual-size": number })["virtual-size"];
  } catch {
    return undefined;
  }
}

// 365 defect 2: entries decoded at their true width, re-encoded at a hard-coded 16-bit stride.
function restride16(block: Buffer, h: Qcow2Header): Buffer {
  const out = Buffer.alloc(block.length);
  const n = Math.min(refcountEntriesPerBlock(h.clusterSize, h.refcountBits), block.length / 2);
  for (let i = 0; i < n; i++) out.writeUInt16BE(getRefcountEntry(block, i, h.refcountBits), i * 2);
  return out;
}

// 365 defect 1: sub-byte fields packed from the most significant bit (reverse the fields in each byte).
function msbFirst(block: Buffer, bits: number): Buffer {
  const mask = (1 << bits) - 1;
  return Buffer.from(block.map((byte) => {
    let out = 0;
    for (let j = 0; j < 8 / bits; j++) out |= ((byte >> (j * bits)) & mask) << (8 - bits * (j + 1));
    return out;
  }));
}

const SUB_BYTE = [1, 2, 4];

async function main(): Promise<number> {
  const fault = (process.env.INSTAR_DOUBLE_FAULT ?? "none") as Fault;
  if (!FAULTS.includes(fault)) die(`unknown INSTAR_DOUBLE_FAULT '${fault}' (known: ${FAULTS.join(", ")})`, 2);

  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === "--version") {
    process.stdout.write(`instar-double 0.1 (fault: ${fault})\n`);
    return 0;
  }
  if (cmd !== "resize") die(`only 'resize' and '--version' are supported\n${USAGE}`);
  const args = parseResizeArgs(rest);
  // instar probes the format when -f is absent; qcow2 is all this double needs to recognise.
  const format = args.format ?? ((await isQcow2(args.filename)) ? "qcow2" : undefined);
  const qcow2 = format === "qcow2";
  const before = qcow2 ? await readQcow2Header(args.filename).catch(() => undefined) : undefined;
  const oldSize = await virtualSize(args.filename, format);
  const wanted = oldSize === undefined ? undefined : requestedSize(args.size, oldSize);

  // Faults that act before qemu-img runs.
  if (oldSize !== undefined && wanted !== undefined) {
    if (fault === "crash-on-shrink" && wanted < oldSize) {
      process.kill(process.pid, "SIGSEGV");
      return new Promise<number>(() => setInterval(() => {}, 1000)); // never run qemu-img meanwhile
    }
    if (fault === "hang-on-grow" && wanted > oldSize) {
      spawn("sleep", ["3600"], { stdio: "ignore" }); // a process tree for the harness to kill
      setInterval(() => {}, 1 << 30); // keep running even if the child is killed alone
      return new Promise<number>(() => {});
    }
    if (fault === "refuse-unaligned-shrink" && before && wanted < oldSize && wanted % before.clusterSize !== 0) {
      die(`refusing to shrink to ${wanted}: not a multiple of the cluster size ${before.clusterSize}`);
    }
  }

  const qemuArgs = ["resize", ...(format ? ["-f", format] : []), ...(args.shrink ? ["--shrink"] : [])];
  if (args.preallocation !== undefined) qemuArgs.push(`--preallocation=${args.preallocation}`);
  if (args.quiet || args.output === "json") qemuArgs.push("-q"); // JSON replaces "Image resized."
  const run = await execa("qemu-img", [...qemuArgs, args.filename, args.size], { stdio: "inherit", reject: false });
  if (run.exitCode !== 0) {
    if (fault === "touch-on-refusal" && (await stat(args.filename).catch(() => undefined))?.isFile()) {
      await appendFile(args.filename, Buffer.alloc(512));
    }
    return run.exitCode ?? 1;
  }

  // Faults that act on the image qemu-img left behind.
  const after = qcow2 ? await readQcow2Header(args.filename) : undefined;
  const newSize = (await virtualSize(args.filename, format)) ?? 0;
  if (before && after && SUB_BYTE.includes(after.refcountBits)) {
    if (fault === "365-stride" && after.size < before.size) {
      await rewriteRefcountBlocks(args.filename, (block, _ref, h) => restride16(block, h));
    }
    if (fault === "msb-first" && after.size !== before.size) {
      await rewriteRefcountBlocks(args.filename, (block, _ref, h) => msbFirst(block, h.refcountBits));
    }
  }
  if (fault === "drop-lazy-refcounts" && after && after.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) {
    await writeCompatibleFeatures(args.filename, after.compatibleFeatures & ~COMPAT_LAZY_REFCOUNTS);
  }
  if (fault === "stale-grow-tail" && format && oldSize !== undefined && newSize > oldSize) {
    const off = Math.floor(oldSize / 512) * 512;
    await execa("qemu-io", ["-f", format, "-c", `write -P 0xa5 ${off} 512`, args.filename], {
      stdout: "ignore",
      reject: false,
    });
  }

  if (args.output === "json") {
    const action = oldSize === undefined || newSize === oldSize ? "noop" : newSize > oldSize ? "grow" : "shrink";
    const report = {
      filename: args.filename,
      format: format ?? "raw",
      action,
      old_virtual_size: oldSize,
      new_virtual_size: newSize,
      new_file_size: (await stat(args.filename)).size,
    };
    process.stdout.write(`${JSON.stringify(report, null, 4)}\n`);
  }
  return 0;
}

process.exitCode = await main();

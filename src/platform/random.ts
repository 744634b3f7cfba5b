/**
 * Random bytes from the system's CSPRNG, for the ids a session starts with (its incarnation,
 * session id and resume token). node:crypto costs 3-5 ms to load on this machine (15 modules),
 * a large part of what a quick CLI start has left beyond Node's own, to read a few dozen bytes:
 * where /dev/urandom can be read (Linux, macOS, the BSDs) they come from it, the same kernel
 * generator OpenSSL seeds from; elsewhere, or if it cannot be read, from node:crypto.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { lazyRequire } from "./require.ts";

let urandom = process.platform !== "win32";

export function secureRandomBytes(count: number): Buffer {
  if (urandom) {
    try {
      return readUrandom(count);
    } catch {
      urandom = false;
    }
  }
  const crypto = lazyRequire("node:crypto") as typeof import("node:crypto");
  return crypto.randomBytes(count);
}

function readUrandom(count: number): Buffer {
  const out = Buffer.alloc(count);
  const fd = openSync("/dev/urandom", "r");
  try {
    for (let filled = 0; filled < count; ) {
      const n = readSync(fd, out, filled, count - filled, null);
      if (n <= 0) throw new Error("/dev/urandom ended");
      filled += n;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

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

/**
 * Bytes read from /dev/urandom at a time and handed out in turn: one open, read and close for
 * many ids instead of one for each, which was 0.15 ms of every connection an agent accepted
 * (a session's ids; profiled over 132 reconnects). Bytes handed out are zeroed in the pool.
 */
const POOL_BYTES = 4096;
let pool: Buffer = Buffer.alloc(0);
let poolAt = 0;

export function secureRandomBytes(count: number): Buffer {
  if (urandom) {
    try {
      return count > POOL_BYTES / 4 ? readUrandom(count) : fromPool(count);
    } catch {
      urandom = false;
    }
  }
  const crypto = lazyRequire("node:crypto") as typeof import("node:crypto");
  return crypto.randomBytes(count);
}

function fromPool(count: number): Buffer {
  if (pool.length - poolAt < count) {
    pool = readUrandom(POOL_BYTES);
    poolAt = 0;
  }
  const out = Buffer.from(pool.subarray(poolAt, poolAt + count));
  pool.fill(0, poolAt, poolAt + count);
  poolAt += count;
  return out;
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

/**
 * Node's implementations of what the wire and session layers take as parameters (they compile
 * without Node's types, in the way vscode-jsonrpc keeps timers behind its `ral.ts`).
 */
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import type { AbortSignalLike } from "../abort.ts";
import type { Clock, Runtime } from "../session/runtime.ts";
import { type Crc32, crc32 } from "../wire/crc32.ts";
import { secureRandomBytes } from "./random.ts";
import { lazyRequire } from "./require.ts";

/**
 * The fastest CRC-32 available. All compute the same CRC-32 (zlib's), so they mix freely on the
 * wire. Measured here on 256 KiB buffers (bench figures in the commit that chose it):
 * `@node-rs/crc32` (an optional dependency, SIMD, prebuilt for the common platforms) 11.6 GB/s,
 * `zlib.crc32` (Node >= 20.15) 4.2 GB/s, the wire's own slice-by-8 about 2 GB/s. Small inputs
 * stay in JavaScript, where a native call costs more than the CRC.
 */
export const nodeCrc32: Crc32 = (data, initial = 0) =>
  data.length < 256 ? crc32(data, initial) : largeCrc32(data, initial);

/**
 * Bytes of 256 and more checksummed in JavaScript before a native CRC is loaded. Loading
 * `@node-rs/crc32` costs 5-8 ms here (its platform check, dlopen), about what JavaScript spends
 * on 4 MiB (5-8 ms here, on a busy machine): a session that moves little (`exec -- true`, a
 * ping, `info`) never pays it, and a bulk transfer switches after its first MiB, 1-2 ms of
 * JavaScript.
 */
const NATIVE_CRC_AFTER_BYTES = 1024 * 1024;

let javascriptBytes = 0;

/** The CRC for 256 bytes and more: JavaScript at first, the fastest native one from then on. */
let largeCrc32: Crc32 = (data, initial) => {
  javascriptBytes += data.length;
  if (javascriptBytes <= NATIVE_CRC_AFTER_BYTES) return crc32(data, initial);
  // zlib is loaded here, not with this module: most sessions never get this far.
  const zlib = lazyRequire("node:zlib") as { crc32?: NativeCrc32 };
  const native = simdCrc32() ?? zlib.crc32;
  largeCrc32 = typeof native === "function" ? native : crc32;
  return largeCrc32(data, initial);
};

type NativeCrc32 = (data: Uint8Array, initial?: number) => number;

/** `@node-rs/crc32` when it is installed (it is optional; a bundled agent goes without). */
function simdCrc32(): NativeCrc32 | undefined {
  try {
    const mod = createRequire(import.meta.url)("@node-rs/crc32") as { crc32?: NativeCrc32 };
    // Trust it only if it agrees with the standard check value of CRC-32.
    const check = new TextEncoder().encode("123456789");
    return mod.crc32?.(check) === 0xcbf43926 ? mod.crc32 : undefined;
  } catch {
    return undefined;
  }
}

/** Monotonic time from `performance.now()`; timers never keep the process alive. */
export const nodeClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimer(ms, fn) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

/**
 * Node's clock with timers that keep the process alive: for a process whose only work left is
 * waiting to retry (a supervisor's backoff), where unref'd timers would let Node exit mid-wait.
 */
export const nodeKeepAliveClock: Clock = {
  ...nodeClock,
  setTimer(ms, fn) {
    // setTimeout(fn, 0) waits about a millisecond: a redial with no backoff left (the first after
    // a loss) goes on the next turn of the event loop instead.
    if (ms <= 0) {
      const immediate = setImmediate(fn);
      return { cancel: () => clearImmediate(immediate) };
    }
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  },
};

const INCARNATION = secureRandomBytes(12).toString("base64url");

/** The runtime a session uses on Node. One incarnation per process. */
export function nodeRuntime(): Runtime {
  return {
    clock: nodeClock,
    crc32: nodeCrc32,
    incarnation: INCARNATION,
    randomId: () => secureRandomBytes(16).toString("base64url"),
  };
}

/**
 * Resolves after `ms` on `clock`, or at once when `signal` aborts (never rejects). With the
 * default `nodeClock` the wait does not keep Node alive; pass `nodeKeepAliveClock` when it must.
 */
export function pause(
  ms: number,
  signal?: AbortSignalLike,
  clock: Clock = nodeClock,
): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      timer.cancel();
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = clock.setTimer(Math.max(0, ms), done);
    if (signal?.aborted) done();
    else signal?.addEventListener("abort", done, { once: true });
  });
}

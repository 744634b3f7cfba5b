/**
 * Node's implementations of what the wire and session layers take as parameters (they compile
 * without Node's types, in the way vscode-jsonrpc keeps timers behind its `ral.ts`).
 */
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import zlib from "node:zlib";
import type { Clock, Runtime } from "../session/runtime.ts";
import { type Crc32, crc32 } from "../wire/crc32.ts";

/**
 * The fastest CRC-32 available: `zlib.crc32` (Node >= 20.15; about 7 GB/s here) for payloads
 * large enough to repay the call, the wire's own slice-by-8 (about 2 GB/s) otherwise and on
 * older Node. Both compute the same CRC-32.
 */
export const nodeCrc32: Crc32 = (() => {
  const native = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
  if (typeof native !== "function") return crc32;
  return (data, initial = 0) => (data.length < 256 ? crc32(data, initial) : native(data, initial));
})();

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
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  },
};

const INCARNATION = randomBytes(12).toString("base64url");

/** The runtime a session uses on Node. One incarnation per process. */
export function nodeRuntime(): Runtime {
  return {
    clock: nodeClock,
    crc32: nodeCrc32,
    incarnation: INCARNATION,
    randomId: () => randomBytes(16).toString("base64url"),
  };
}

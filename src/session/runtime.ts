/**
 * What the session layer needs from its environment, passed in rather than imported, so the
 * layer compiles without Node's types and every protocol behaviour runs under a fake clock in
 * tests (vscode-jsonrpc keeps its timers behind `ral.ts` the same way).
 */
import type { Crc32 } from "../wire/crc32.ts";

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds; only differences mean anything. */
  now(): number;
  /** Wall-clock milliseconds since the epoch; used only to estimate the peer's clock offset. */
  wallNow(): number;
  /** Runs `fn` once after `ms`. Real timers must not keep the process alive (unref). */
  setTimer(ms: number, fn: () => void): Timer;
}

export interface Runtime {
  clock: Clock;
  /** A random identifier, at least 96 bits, URL-safe. */
  randomId(): string;
  /** The fastest CRC-32 available for payloads. */
  crc32?: Crc32;
  /** Changes each time the process starts: lets a peer tell a restart from a reconnect. */
  incarnation: string;
}

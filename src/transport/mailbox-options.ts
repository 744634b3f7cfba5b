/** The mailbox transport's options, their defaults, and their validation, in one place. */
import { InvalidOptionError } from "../errors.ts";
import type { CallOptions } from "./transport.ts";

export const MAILBOX_POLL_INTERVAL_MS = 50;
export const MAILBOX_MAX_FILE_BYTES = 1024 * 1024;
export const MAILBOX_MAX_UNCONSUMED_FILES = 64;
export const MAILBOX_MAX_UNCONSUMED_BYTES = 8 * 1024 * 1024;
export const MAILBOX_READ_HIGH_WATER_MARK_BYTES = 2 * 1024 * 1024;
export const MAILBOX_HEARTBEAT_INTERVAL_MS = 1_000;
export const MAILBOX_PEER_TIMEOUT_MS = 30_000;
export const MAILBOX_ACCEPT_TIMEOUT_MS = 10_000;

export interface MailboxOptions extends CallOptions {
  /**
   * How often each side looks at the folder when nothing woke it earlier. Changes the other side
   * makes through NFS, virtiofs or 9p are seen only by looking, so this is their latency.
   * Default 50 ms.
   */
  pollIntervalMs?: number;
  /** Also wake early on `fs.watch` (inotify) events, where they are seen. Default true. */
  watch?: boolean;
  /**
   * The most bytes one file carries: whatever is sent in the same tick (and while the previous
   * file is written) goes into one file, up to this. It is also the send buffer's high-water
   * mark: `send()` returns false once this much waits to be written. A reader refuses a file
   * larger than its own `maxFileBytes` (the connection fails), so give both sides the same value.
   * Default 1 MiB.
   */
  maxFileBytes?: number;
  /** Files written and not yet consumed by the reader (per direction) at which the writer waits. Default 64. */
  maxUnconsumedFiles?: number;
  /** Bytes in files written and not yet consumed (per direction) at which the writer waits. Default 8 MiB. */
  maxUnconsumedBytes?: number;
  /** Received bytes held for the consumer before reading more files pauses. Default 2 MiB. */
  readHighWaterMark?: number;
  /** fsync each file before renaming it into place (durable across a crash). Default true. */
  fsync?: boolean;
  /** How often each side touches its `alive` file. Default 1 s. */
  heartbeatIntervalMs?: number;
  /**
   * A peer whose `alive` file and files have not changed for this long is gone: the connection
   * fails with TRANSPORT_FAILED and its folder is removed. Default 30 s.
   */
  peerTimeoutMs?: number;
  /** Connecting: how long to wait for the listener to accept the new connection. Default 10 s. */
  acceptTimeoutMs?: number;
}

export interface ResolvedMailboxOptions {
  readonly pollIntervalMs: number;
  readonly watch: boolean;
  readonly maxFileBytes: number;
  readonly maxUnconsumedFiles: number;
  readonly maxUnconsumedBytes: number;
  readonly readHighWaterMark: number;
  readonly fsync: boolean;
  readonly heartbeatIntervalMs: number;
  readonly peerTimeoutMs: number;
  readonly acceptTimeoutMs: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** Fills in the defaults and checks every option; throws INVALID_OPTION naming the first bad one. */
export function resolveMailboxOptions(options: MailboxOptions = {}): ResolvedMailboxOptions {
  const resolved: ResolvedMailboxOptions = {
    pollIntervalMs: integer(options, "pollIntervalMs", MAILBOX_POLL_INTERVAL_MS, 1, 60_000),
    watch: boolean(options, "watch", true),
    maxFileBytes: integer(options, "maxFileBytes", MAILBOX_MAX_FILE_BYTES, 1024, 2 ** 26),
    maxUnconsumedFiles: integer(
      options,
      "maxUnconsumedFiles",
      MAILBOX_MAX_UNCONSUMED_FILES,
      1,
      1_000_000,
    ),
    maxUnconsumedBytes: integer(
      options,
      "maxUnconsumedBytes",
      MAILBOX_MAX_UNCONSUMED_BYTES,
      1024,
      2 ** 40,
    ),
    readHighWaterMark: integer(
      options,
      "readHighWaterMark",
      MAILBOX_READ_HIGH_WATER_MARK_BYTES,
      1,
      2 ** 31,
    ),
    fsync: boolean(options, "fsync", true),
    heartbeatIntervalMs: integer(
      options,
      "heartbeatIntervalMs",
      MAILBOX_HEARTBEAT_INTERVAL_MS,
      10,
      600_000,
    ),
    peerTimeoutMs: integer(options, "peerTimeoutMs", MAILBOX_PEER_TIMEOUT_MS, 50, DAY_MS),
    acceptTimeoutMs: integer(options, "acceptTimeoutMs", MAILBOX_ACCEPT_TIMEOUT_MS, 1, DAY_MS),
  };
  const floor = 2 * Math.max(resolved.heartbeatIntervalMs, resolved.pollIntervalMs);
  if (resolved.peerTimeoutMs < floor) {
    throw new InvalidOptionError(
      `peerTimeoutMs must be at least twice heartbeatIntervalMs and pollIntervalMs (${floor} ms here), or a live peer would be declared gone`,
      { details: { ...resolved } },
    );
  }
  return resolved;
}

function integer(
  options: MailboxOptions,
  name: keyof MailboxOptions,
  fallback: number,
  min: number,
  max: number,
): number {
  const value = options[name];
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidOptionError(`${name} must be an integer from ${min} to ${max}`, {
      details: { [name]: value },
    });
  }
  return value;
}

function boolean(options: MailboxOptions, name: keyof MailboxOptions, fallback: boolean): boolean {
  const value = options[name];
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") {
    throw new InvalidOptionError(`${name} must be true or false`, { details: { [name]: value } });
  }
  return value;
}

/** Session options and their defaults, filled in one place. */
import { InvalidOptionError } from "../errors.ts";
import type { Crc32 } from "../wire/crc32.ts";
import {
  DEFAULT_MAX_FRAME_BYTES,
  LIMIT_MAX_FRAME_BYTES,
  MIN_MAX_FRAME_BYTES,
} from "../wire/frame.ts";
import type { Runtime } from "./runtime.ts";

/** Stream window: bytes a peer may send on one stream before we grant more (see bench/session). */
export const DEFAULT_STREAM_WINDOW_BYTES = 1024 * 1024;
/** Session window: bytes a peer may have in flight across all streams. */
export const DEFAULT_SESSION_WINDOW_BYTES = 4 * 1024 * 1024;
/** Largest DATA frame we send (smaller than the frame limit keeps streams interleaved fairly). */
export const DEFAULT_MAX_DATA_FRAME_BYTES = 256 * 1024;
export const KEEPALIVE_INTERVAL_MS = 5_000;
export const KEEPALIVE_DEAD_AFTER_MS = 15_000;
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Deadline of a call that gives none; `Infinity` per call means none. */
export const DEFAULT_CALL_TIMEOUT_MS = 120_000;
/** How long a session with resume waits for a lost connection to come back. */
export const DEFAULT_RESUME_WINDOW_MS = 60_000;
/** Sent frames kept until the peer acknowledges them, for resending and for resume. */
export const DEFAULT_REPLAY_BUFFER_BYTES = 16 * 1024 * 1024;
/** Calls from the peer running (or waiting to) at once before the session stops reading. */
export const DEFAULT_MAX_INCOMING_CALLS = 1024;
/** Bytes queued toward a peer that does not read before the session stops reading from it. */
export const DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** Bytes of the peer's running calls (their CALL frames) before the session stops reading. */
export const DEFAULT_MAX_INCOMING_CALL_BYTES = 32 * 1024 * 1024;
/** Streams the peer has open at once in one session; a call that would open more is refused. */
export const DEFAULT_MAX_PEER_STREAMS = 4096;

export interface ResumeOptions {
  /** How long a lost connection may stay lost before the session fails with RESUME_FAILED. */
  windowMs?: number;
  /**
   * Bytes of sent, unacknowledged frames kept for replay. Frames beyond it are dropped oldest
   * first, and a peer that still lacks them can no longer resume (RESUME_FAILED).
   */
  replayBufferBytes?: number;
}

export interface SessionOptions {
  /**
   * Which half of the id space this side allocates call and stream ids from: the client odd,
   * the server even. Conventionally the side that connected is the client.
   */
  role: "client" | "server";
  runtime: Runtime;
  /** Who we are, sent in the handshake. */
  peer?: { id?: string; hostname?: string; version?: string };
  /** Service names offered (sent in the handshake). Default: the methods with a handler. */
  services?: string[];
  /** Largest payload we accept (and the peer's limit bounds what we send). Default 1 MiB. */
  maxFrameBytes?: number;
  streamWindowBytes?: number;
  sessionWindowBytes?: number;
  /**
   * Payload checksums, on by default in both directions. `false` asks the peer to go without:
   * they are off only when both sides ask in the handshake, and never when either side receives
   * over a lossy pipe (`Transport.lossy`: serial, stdio, exec, shared folders).
   */
  payloadChecksum?: boolean;
  /**
   * Calls from the peer running at once (their handlers not yet done). At the bound the session
   * stops reading from the peer until one finishes, so a flooding peer is held by the transport's
   * backpressure instead of being buffered. Default 1024.
   */
  maxIncomingCalls?: number;
  /**
   * Bytes of the peer's calls running at once (the size of their CALL frames, which their params
   * are): at the bound the session stops reading from the peer, as at `maxIncomingCalls`, so
   * 1,024 calls of a megabyte each are not held at once. Default 32 MiB.
   */
  maxIncomingCallBytes?: number;
  /**
   * Bytes queued toward the peer while its transport is congested (it does not read). At the
   * bound the session stops reading from the peer until the queue drains. Default 4 MiB.
   */
  maxQueuedBytes?: number;
  /**
   * Streams opened by the peer and still open here at once. A CALL that would open more is
   * answered LIMIT_EXCEEDED (its streams never opened), so a peer that opens streams and never
   * ends them cannot make the session hold them without bound. Default 4096.
   */
  maxPeerStreams?: number;
  /** `false` turns keepalive off (tests of other things; never in production). */
  keepalive?: { intervalMs?: number; deadAfterMs?: number } | false;
  handshakeTimeoutMs?: number;
  defaultCallTimeoutMs?: number;
  /**
   * Resume: frames are sequenced, acknowledged and kept until acknowledged, and a lost
   * connection leaves the session waiting for a new one (`reconnect()` on the side that dials, a
   * `SessionRegistry` on the side that accepts) instead of ending it. Off by default in the
   * session layer, which cannot dial; `openSession` and `serveSessions` turn it on.
   */
  resume?: ResumeOptions | boolean;
}

export interface ResolvedSessionOptions {
  role: "client" | "server";
  runtime: Runtime;
  checksum: Crc32 | undefined;
  peer: { id: string; hostname: string; version: string };
  services: string[] | undefined;
  maxFrameBytes: number;
  streamWindowBytes: number;
  sessionWindowBytes: number;
  payloadChecksum: boolean;
  maxIncomingCalls: number;
  maxIncomingCallBytes: number;
  maxQueuedBytes: number;
  maxPeerStreams: number;
  /** Sent frames kept until acknowledged: for resending on the live connection, and for resume. */
  replayBufferBytes: number;
  keepalive: { intervalMs: number; deadAfterMs: number } | false;
  handshakeTimeoutMs: number;
  defaultCallTimeoutMs: number;
  resume: { windowMs: number; replayBufferBytes: number } | false;
}

function positive(name: string, value: number | undefined, fallback: number, max = 2 ** 31 - 1) {
  const v = value ?? fallback;
  if (!(typeof v === "number" && v > 0 && v <= max && (Number.isInteger(v) || v === Infinity))) {
    throw new InvalidOptionError(
      `${name} must be a positive integer no larger than ${max}, got ${v}`,
      {
        details: { option: name, value: v },
      },
    );
  }
  return v;
}

export function resolveSessionOptions(options: SessionOptions): ResolvedSessionOptions {
  if (options.role !== "client" && options.role !== "server") {
    throw new InvalidOptionError(`role must be "client" or "server", got ${String(options.role)}`);
  }
  if (!options.runtime?.clock) {
    throw new InvalidOptionError("runtime with a clock is required (nodeRuntime() on Node)");
  }
  const maxFrameBytes = positive(
    "maxFrameBytes",
    options.maxFrameBytes,
    DEFAULT_MAX_FRAME_BYTES,
    LIMIT_MAX_FRAME_BYTES,
  );
  if (maxFrameBytes < MIN_MAX_FRAME_BYTES) {
    throw new InvalidOptionError(
      `maxFrameBytes must be at least ${MIN_MAX_FRAME_BYTES}, got ${maxFrameBytes}`,
    );
  }
  let keepalive: ResolvedSessionOptions["keepalive"] = false;
  if (options.keepalive !== false) {
    const intervalMs = positive(
      "keepalive.intervalMs",
      options.keepalive?.intervalMs,
      KEEPALIVE_INTERVAL_MS,
    );
    const deadAfterMs = positive(
      "keepalive.deadAfterMs",
      options.keepalive?.deadAfterMs,
      KEEPALIVE_DEAD_AFTER_MS,
    );
    if (deadAfterMs <= intervalMs) {
      throw new InvalidOptionError(
        `keepalive.deadAfterMs (${deadAfterMs}) must be longer than keepalive.intervalMs (${intervalMs})`,
      );
    }
    keepalive = { intervalMs, deadAfterMs };
  }
  return {
    role: options.role,
    runtime: options.runtime,
    checksum: options.runtime.crc32,
    peer: {
      id: options.peer?.id ?? "",
      hostname: options.peer?.hostname ?? "",
      version: options.peer?.version ?? "",
    },
    services: options.services,
    maxFrameBytes,
    streamWindowBytes: positive(
      "streamWindowBytes",
      options.streamWindowBytes,
      DEFAULT_STREAM_WINDOW_BYTES,
    ),
    sessionWindowBytes: positive(
      "sessionWindowBytes",
      options.sessionWindowBytes,
      DEFAULT_SESSION_WINDOW_BYTES,
    ),
    payloadChecksum: options.payloadChecksum ?? true,
    maxIncomingCalls: positive(
      "maxIncomingCalls",
      options.maxIncomingCalls,
      DEFAULT_MAX_INCOMING_CALLS,
    ),
    maxIncomingCallBytes: positive(
      "maxIncomingCallBytes",
      options.maxIncomingCallBytes,
      DEFAULT_MAX_INCOMING_CALL_BYTES,
    ),
    maxQueuedBytes: positive("maxQueuedBytes", options.maxQueuedBytes, DEFAULT_MAX_QUEUED_BYTES),
    maxPeerStreams: positive("maxPeerStreams", options.maxPeerStreams, DEFAULT_MAX_PEER_STREAMS),
    replayBufferBytes: positive(
      "resume.replayBufferBytes",
      typeof options.resume === "object" ? options.resume.replayBufferBytes : undefined,
      DEFAULT_REPLAY_BUFFER_BYTES,
    ),
    keepalive,
    handshakeTimeoutMs: positive(
      "handshakeTimeoutMs",
      options.handshakeTimeoutMs,
      HANDSHAKE_TIMEOUT_MS,
    ),
    defaultCallTimeoutMs: positive(
      "defaultCallTimeoutMs",
      options.defaultCallTimeoutMs,
      DEFAULT_CALL_TIMEOUT_MS,
      Infinity,
    ),
    resume: resolveResume(options.resume),
  };
}

function resolveResume(resume: SessionOptions["resume"]): ResolvedSessionOptions["resume"] {
  if (resume === undefined || resume === false) return false;
  const o = resume === true ? {} : resume;
  return {
    windowMs: positive("resume.windowMs", o.windowMs, DEFAULT_RESUME_WINDOW_MS),
    replayBufferBytes: positive(
      "resume.replayBufferBytes",
      o.replayBufferBytes,
      DEFAULT_REPLAY_BUFFER_BYTES,
    ),
  };
}

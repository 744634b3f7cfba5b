/**
 * Calls as the session keeps them: the handle a caller gets (`OpenCall`, kept as an
 * `OutgoingCall`), the context a handler gets, remote errors, and how a failure travels.
 */
import {
  type AbortSignalLike,
  type CallOptions,
  type Deferred,
  deferred,
  IGNORE,
  type LazyAbortController,
} from "../abort.ts";
import { ERROR_CODES, type ErrorCode, GuestlinkError, isGuestlinkError } from "../errors.ts";
import { decodeControl, encodeControl } from "../wire/control.ts";
import type { Deadline } from "./deadlines.ts";
import type { SessionStream } from "./stream.ts";

/** What a handler is given; `S` is the session (`Session` in the public types). */
export interface CallContext<S = unknown> {
  method: string;
  /** Aborted when the caller cancels, the deadline passes or the session ends. */
  signal: AbortSignalLike;
  /**
   * The same as `signal` for a handler that only listens (checks `aborted`, adds a listener):
   * not a Node AbortSignal, so not for Node's APIs, but it costs next to nothing, where making
   * `signal` costs an AbortController per call.
   */
  cancellation: AbortSignalLike;
  /** Absolute deadline on this side's clock (`Infinity` when none). */
  deadline: number;
  /** The streams the caller opened with the call, by name. */
  streams: Record<string, SessionStream>;
  session: S;
}

export type Handler<S = unknown> = (params: unknown, ctx: CallContext<S>) => unknown;

export interface OpenOptions extends CallOptions {
  /** Names of byte streams to open with the call (e.g. `["stdin", "stdout", "stderr"]`). */
  streams?: readonly string[];
}

/** A call in flight with its streams; `result` settles with the peer's RESULT or ERROR. */
export interface OpenCall {
  readonly id: number;
  readonly streams: Record<string, SessionStream>;
  /** Settles as soon as the outcome is known here: the peer's reply, or a local cancel/deadline. */
  readonly result: Promise<unknown>;
  /**
   * Settles with the peer's own reply, even after a local cancel or deadline: the callee stops
   * the work and confirms, and this is where its final word (say, an exec's exit status after
   * its process group was killed) arrives. Rejects if the session ends first.
   */
  readonly confirmed: Promise<unknown>;
  /** Cancels the call: the peer's handler is aborted and `result` rejects with CANCELLED. */
  cancel(reason?: string): void;
}

/** A failure reported by the peer. `code` is the peer's code when it is one of ours. */
export class RemoteError extends GuestlinkError {
  /** The code exactly as the peer sent it. */
  readonly remoteCode: string;

  constructor(remoteCode: string, message: string, details?: Record<string, unknown>) {
    const code: ErrorCode = remoteCode in ERROR_CODES ? (remoteCode as ErrorCode) : "REMOTE_ERROR";
    super(code, message, { details: { ...details, remoteCode } });
    this.remoteCode = remoteCode;
  }
}

/** How an `OutgoingCall` asks its session to cancel it (one function per session, not per call). */
export type CancelOutgoing = (call: OutgoingCall, err: GuestlinkError, reason: string) => void;

/**
 * A call this side started, and its handle (`OpenCall`). One object per call: allocations are a
 * measurable part of a call's cost, so the promises a caller may never look at are made lazily.
 */
export class OutgoingCall implements OpenCall {
  readonly id: number;
  readonly streams: Record<string, SessionStream>;
  readonly result: Promise<unknown>;
  readonly cancel: (reason?: string) => void;
  readonly method: string;
  readonly signal: AbortSignalLike | undefined;
  /** The call's streams, for resetting them when it fails. */
  readonly streamList: readonly SessionStream[];
  timer: Deadline | undefined = undefined;
  onAbort: (() => void) | undefined = undefined;
  /** Settled locally (cancelled or timed out); still waiting for the peer to confirm. */
  settled = false;
  #resolve!: (value: unknown) => void;
  #reject!: (err: unknown) => void;
  /** The peer's reply (or the session's end), once known: 1 fulfilled, 2 rejected. */
  #confirmedState = 0;
  #confirmedValue: unknown;
  #confirmed: Deferred<unknown> | undefined;

  constructor(
    onCancel: CancelOutgoing,
    id: number,
    method: string,
    streams: Record<string, SessionStream>,
    streamList: readonly SessionStream[],
    signal: AbortSignalLike | undefined,
  ) {
    this.id = id;
    this.method = method;
    this.streams = streams;
    this.streamList = streamList;
    this.signal = signal;
    this.result = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.cancel = (reason = "cancelled by caller") =>
      onCancel(
        this,
        new GuestlinkError("CANCELLED", `call ${method} cancelled: ${reason}`),
        reason,
      );
  }

  get confirmed(): Promise<unknown> {
    if (this.#confirmed === undefined) {
      this.#confirmed = deferred<unknown>();
      if (this.#confirmedState === 1) this.#confirmed.resolve(this.#confirmedValue);
      else if (this.#confirmedState === 2) this.#confirmed.reject(this.#confirmedValue);
    }
    return this.#confirmed.promise;
  }

  resolve(value: unknown): void {
    this.#resolve(value);
  }

  /** Rejects `result`; callers may never look, so the rejection is not "unhandled". */
  reject(err: GuestlinkError): void {
    this.result.then(undefined, IGNORE);
    this.#reject(err);
  }

  /** The peer's own reply (or the session's end): settles `confirmed`, once. */
  confirm(value: unknown, err: GuestlinkError | undefined): void {
    if (this.#confirmedState !== 0) return;
    this.#confirmedState = err === undefined ? 1 : 2;
    this.#confirmedValue = err === undefined ? value : err;
    if (this.#confirmed === undefined) return;
    if (err === undefined) this.#confirmed.resolve(value);
    else this.#confirmed.reject(err);
  }

  cleanup(): void {
    this.timer?.cancel();
    if (this.onAbort !== undefined) this.signal?.removeEventListener("abort", this.onAbort);
  }
}

/**
 * What a handler is given. A class: an object literal with a getter costs about as much to make
 * as the rest of a call put together (V8 makes a new accessor for each).
 */
export class HandlerContext<S> implements CallContext<S> {
  readonly method: string;
  readonly deadline: number;
  readonly streams: Record<string, SessionStream>;
  readonly session: S;
  readonly #controller: LazyAbortController;

  constructor(
    method: string,
    controller: LazyAbortController,
    deadline: number,
    streams: Record<string, SessionStream>,
    session: S,
  ) {
    this.method = method;
    this.#controller = controller;
    this.deadline = deadline;
    this.streams = streams;
    this.session = session;
  }

  get signal(): AbortSignalLike {
    return this.#controller.signal;
  }

  get cancellation(): AbortSignalLike {
    return this.#controller.light;
  }
}

export interface IncomingCall {
  abort(reason: GuestlinkError): void;
}

/**
 * What a handler's failure looks like on the wire: a guestlink error keeps its code (a remote
 * error passed on keeps the code it came with); an error with a code of its own in capitals
 * (ENOENT, EACCES, POLICY_DENIED) keeps that; anything else is HANDLER_FAILED.
 */
export function errorPayload(err: unknown): {
  code: string;
  message: string;
  details?: Record<string, unknown>;
} {
  const message = err instanceof Error ? err.message : String(err);
  const ownCode =
    err instanceof RemoteError ? err.remoteCode : (err as { code?: unknown } | undefined)?.code;
  const code =
    isGuestlinkError(err) || (typeof ownCode === "string" && /^[A-Z][A-Z0-9_]{1,63}$/.test(ownCode))
      ? (ownCode as string)
      : "HANDLER_FAILED";
  const details =
    isGuestlinkError(err) && err.details !== undefined ? plainDetails(err.details) : undefined;
  return { code, message, ...(details ? { details } : {}) };
}

/** Keeps only details that survive msgpack (a handler may put anything there). */
function plainDetails(details: Record<string, unknown>): Record<string, unknown> | undefined {
  try {
    decodeControl(encodeControl(details));
    return details;
  } catch {
    return undefined;
  }
}

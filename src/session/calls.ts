/**
 * The session's calls (docs/protocol.md 9.3): the handlers this side serves, the calls it started
 * (`OutgoingCall`) and those it runs for the peer, and the frames that carry them (CALL, RESULT,
 * ERROR, CANCEL). `S` is the session, handed to handlers in their context. A protocol violation
 * by the peer is thrown as `ProtocolViolation`.
 */
import { LazyAbortController } from "../abort.ts";
import { GuestlinkError, toGuestlinkError } from "../errors.ts";
import { encodeControl } from "../wire/control.ts";
import { type Frame, FrameType, frameTypeName } from "../wire/frame.ts";
import {
  type CancelOutgoing,
  errorPayload,
  type Handler,
  HandlerContext,
  type IncomingCall,
  type OpenCall,
  type OpenOptions,
  OutgoingCall,
  RemoteError,
} from "./call.ts";
import type { DeadlineQueue } from "./deadlines.ts";
import type { IdSpace } from "./ids.ts";
import {
  CallSchema,
  CancelSchema,
  ErrorSchema,
  isPlainCall,
  isPlainError,
  isPlainResult,
  ResultSchema,
} from "./messages.ts";
import { runHandler } from "./run-handler.ts";
import type { Clock } from "./runtime.ts";
import type { SessionStream } from "./stream.ts";
import type { Streams } from "./streams.ts";
import { ProtocolViolation, parseFrame } from "./violation.ts";

/** What the calls need from their session. */
export interface CallsPort {
  /** Queues a sequenced frame; throws FRAME_TOO_LARGE when the peer would not take it. */
  send(type: FrameType, streamId: number, payload: Uint8Array): void;
  sendControl(type: FrameType, streamId: number, value: unknown): void;
  /** Runs `fn` once the handshake is done (at once if it is); never after the session ended. */
  whenOpen(fn: () => void): void;
  /** Whether the handshake is done and the session has not ended (`whenOpen` runs at once). */
  isOpen(): boolean;
  /** Throws SESSION_CLOSED or SESSION_CLOSING when no new call may start. */
  assertCanStartCall(): void;
  /** Whether either side said GOAWAY: calls from the peer are refused. */
  goaway(): boolean;
  ended(): boolean;
  /** A call finished: the session may be done closing, and may read from the peer again. */
  finished(): void;
  /** A notification's handler was missing or failed (it has no reply to carry that). */
  notificationFailed(): void;
}

interface CallMessage {
  method: string;
  params?: unknown;
  timeoutMs?: number;
  notify?: boolean;
  streams?: Record<string, number>;
}

const NO_OPTIONS: OpenOptions = Object.freeze({});
const NO_NAMES: readonly string[] = Object.freeze([]);
const NO_STREAMS: readonly SessionStream[] = Object.freeze([]);
/** A settled promise to queue microtasks on (`queueMicrotask` is not in ECMAScript's types). */
const RESOLVED = Promise.resolve();

export class Calls<S> {
  readonly handlers = new Map<string, Handler<S>>();
  /** Serves every method without a handler of its own (a proxy: the daemon's `@ID`). */
  fallback: Handler<S> | undefined;
  readonly #outgoing = new Map<number, OutgoingCall>();
  readonly #incoming = new Map<number, IncomingCall>();
  /** Notification handlers still running. */
  #notifications = 0;
  /** Bytes of the CALL frames of the peer's calls and notifications running here. */
  #runningBytes = 0;
  /** Bumped when the session starts afresh: work from before must not reach the new peer. */
  #epoch = 0;
  readonly #port: CallsPort;
  readonly #session: S;
  readonly #ids: IdSpace;
  readonly #streams: Streams;
  readonly #deadlines: DeadlineQueue;
  readonly #clock: Clock;
  readonly #defaultTimeoutMs: number;

  constructor(
    port: CallsPort,
    session: S,
    parts: { ids: IdSpace; streams: Streams; deadlines: DeadlineQueue; clock: Clock },
    defaultTimeoutMs: number,
  ) {
    this.#port = port;
    this.#session = session;
    this.#ids = parts.ids;
    this.#streams = parts.streams;
    this.#deadlines = parts.deadlines;
    this.#clock = parts.clock;
    this.#defaultTimeoutMs = defaultTimeoutMs;
  }

  /** Calls either way still in flight. */
  get inFlight(): number {
    return this.#outgoing.size + this.#incoming.size;
  }

  /** Whether anything waits on the peer: calls we started. */
  get waiting(): boolean {
    return this.#outgoing.size > 0;
  }

  /** The peer's calls and notifications running here. */
  get running(): number {
    return this.#incoming.size + this.#notifications;
  }

  /** Bytes of the CALL frames of those (what their params hold). */
  get runningBytes(): number {
    return this.#runningBytes;
  }

  // ---- calls we start ------------------------------------------------------------------------

  /** Starts a call with streams; see `OpenCall`. */
  open(method: string, params: unknown, options: OpenOptions = NO_OPTIONS): OpenCall {
    const signal = options.signal;
    const now = this.#clock.now();
    const streamNames = options.streams ?? NO_NAMES;
    const deadline = options.deadline ?? now + this.#defaultTimeoutMs;
    const remaining = deadline - now;

    // Refused before anything is allocated or sent: its streams are born failed.
    let failure: GuestlinkError | undefined;
    let payload: Uint8Array | undefined;
    try {
      this.#port.assertCanStartCall();
      if (signal?.aborted) throw signal.reason;
      if (remaining <= 0) {
        throw new GuestlinkError(
          "DEADLINE_EXCEEDED",
          `call ${method}: its deadline had already passed`,
        );
      }
    } catch (err) {
      failure = toGuestlinkError(err);
    }
    const id = failure ? 0 : this.#ids.allocate();
    const streams: Record<string, SessionStream> = {};
    let streamList = NO_STREAMS;
    let streamIds: Record<string, number> | undefined;
    if (streamNames.length > 0) {
      streamIds = {};
      for (const name of streamNames) {
        const stream = failure
          ? this.#streams.detached(name)
          : this.#streams.open(this.#ids.allocate(), name);
        streams[name] = stream;
        streamIds[name] = stream.id;
      }
      streamList = Object.values(streams);
    }
    if (!failure) {
      // Built field by field, in the order the wire has always had them.
      const message: CallMessage = { method, params };
      if (Number.isFinite(remaining)) message.timeoutMs = Math.ceil(remaining);
      if (streamIds !== undefined) message.streams = streamIds;
      try {
        payload = encodeControl(message);
      } catch (err) {
        failure = toGuestlinkError(err);
      }
    }

    const call = new OutgoingCall(this.#cancelHook, id, method, streams, streamList, signal);
    if (failure || payload === undefined) {
      const err = failure ?? new GuestlinkError("SESSION_CLOSED", "the session is closed");
      for (const s of streamList) this.#streams.discard(s, err);
      call.reject(err);
      call.confirm(undefined, err);
      return call;
    }
    this.#outgoing.set(id, call);
    if (signal !== undefined) {
      const onAbort = () =>
        this.#cancelOutgoing(call, toGuestlinkError(signal.reason), "aborted by caller");
      call.onAbort = onAbort;
      signal.addEventListener("abort", onAbort, { once: true });
    }
    if (Number.isFinite(remaining)) {
      call.timer = this.#deadlines.add(deadline, () =>
        this.#cancelOutgoing(
          call,
          new GuestlinkError(
            "DEADLINE_EXCEEDED",
            `call ${method} did not complete within its deadline`,
            { details: { timeoutMs: remaining } },
          ),
          "deadline exceeded",
        ),
      );
    }
    if (this.#port.isOpen()) {
      this.#sendCall(id, payload);
      return call;
    }
    const frame = payload;
    this.#port.whenOpen(() => {
      if (!call.settled) {
        this.#sendCall(id, frame);
        return;
      }
      // Cancelled while the handshake was still going on: the peer never hears of it.
      this.#outgoing.delete(id);
      call.confirm(
        undefined,
        new GuestlinkError("CANCELLED", `call ${method} was cancelled before it was sent`),
      );
      this.#port.finished();
    });
    return call;
  }

  /** Sends a one-way notification; the peer runs its handler and sends nothing back. */
  notify(method: string, params: unknown): void {
    this.#port.assertCanStartCall();
    const payload = encodeControl({ method, params, notify: true });
    this.#port.whenOpen(() => {
      try {
        this.#port.send(FrameType.CALL, 0, payload);
      } catch {
        // Too large for the peer: a notification has no reply to carry the error, so count it.
        this.#port.notificationFailed();
      }
    });
  }

  readonly #cancelHook: CancelOutgoing = (call, err, reason) =>
    this.#cancelOutgoing(call, err, reason);

  /** Settles a call here (cancelled, or its deadline passed) and tells the peer to stop it. */
  #cancelOutgoing(call: OutgoingCall, err: GuestlinkError, reason: string): void {
    if (call.settled || this.#outgoing.get(call.id) !== call) return;
    call.settled = true;
    call.cleanup();
    // The peer stops the work and ends or resets the streams as part of confirming; they stay
    // readable until then, so output produced up to the cancel still arrives.
    this.#port.whenOpen(() => {
      // Not if it was never sent (cancelled during the handshake): see `open`.
      if (this.#outgoing.get(call.id) !== call) return;
      this.#port.sendControl(FrameType.CANCEL, call.id, {
        reason,
        code: err.code === "DEADLINE_EXCEEDED" ? err.code : "CANCELLED",
      });
    });
    call.reject(err);
  }

  /** Sends a CALL; one the peer could not accept fails the call instead. */
  #sendCall(id: number, payload: Uint8Array): void {
    try {
      this.#port.send(FrameType.CALL, id, payload);
    } catch (err) {
      this.#settleOutgoing(id, undefined, toGuestlinkError(err));
    }
  }

  /** RESULT or ERROR for a call of ours (not stream 0: that ends the session). */
  onReply(frame: Frame): void {
    const id = frame.streamId;
    if (!this.#outgoing.has(id)) {
      throw new ProtocolViolation(
        "UNEXPECTED_REPLY",
        `${frameTypeName(frame.type)} for call ${id}, which is not in flight`,
      );
    }
    if (frame.type === FrameType.RESULT) {
      const msg = parseFrame<{ value?: unknown }>(ResultSchema, frame, isPlainResult);
      this.#settleOutgoing(id, msg.value, undefined);
    } else {
      const msg = parseFrame<{ code: string; message: string; details?: Record<string, unknown> }>(
        ErrorSchema,
        frame,
        isPlainError,
      );
      this.#settleOutgoing(id, undefined, new RemoteError(msg.code, msg.message, msg.details));
    }
  }

  #settleOutgoing(id: number, value: unknown, err: GuestlinkError | undefined): void {
    const call = this.#outgoing.get(id);
    if (!call) return;
    this.#outgoing.delete(id);
    call.confirm(value, err);
    if (!call.settled) {
      call.settled = true;
      call.cleanup();
      if (err) {
        for (const s of call.streamList) if (!s.closed) s.reset(err.code, err.message);
        call.reject(err);
      } else {
        call.resolve(value);
      }
    }
    this.#port.finished();
  }

  // ---- the peer's calls ----------------------------------------------------------------------

  onCall(frame: Frame): void {
    const msg = parseFrame<CallMessage>(CallSchema, frame, isPlainCall);
    const id = frame.streamId;
    if (id === 0) {
      this.#onNotification(msg, frame.payload.length);
      return;
    }
    this.#ids.claimPeer(id, "call");
    const streams: Record<string, SessionStream> = {};
    let streamCount = 0;
    let overLimit: GuestlinkError | undefined;
    if (msg.streams !== undefined) {
      const entries = Object.entries(msg.streams);
      overLimit = this.#streams.peerLimit(entries.length);
      for (const [name, streamId] of entries) {
        this.#ids.claimPeer(streamId, "stream");
        // Past the limit the ids are taken (what the peer sends on them is dropped), nothing opened.
        if (overLimit !== undefined) continue;
        streams[name] = this.#streams.openPeer(streamId, name);
        streamCount++;
      }
    }
    const epoch = this.#epoch;
    const reply = (err: unknown) => {
      if (this.#epoch !== epoch) return; // the peer this was for is gone
      const payload = errorPayload(err);
      for (const s of Object.values(streams)) s.reset(payload.code, payload.message);
      this.#port.sendControl(FrameType.ERROR, id, payload);
    };
    if (overLimit !== undefined) {
      reply(overLimit);
      return;
    }
    if (this.#port.goaway()) {
      reply(
        new GuestlinkError("SESSION_CLOSING", "the session is closing and accepts no new calls"),
      );
      return;
    }
    const handler = this.handlers.get(msg.method) ?? this.fallback;
    if (!handler) {
      reply(
        new GuestlinkError("METHOD_NOT_FOUND", `no such method: ${msg.method}`, {
          details: { method: msg.method, available: [...this.handlers.keys()] },
        }),
      );
      return;
    }
    const controller = new LazyAbortController();
    const deadline = msg.timeoutMs === undefined ? Infinity : this.#clock.now() + msg.timeoutMs;
    const timer =
      msg.timeoutMs === undefined
        ? undefined
        : this.#deadlines.add(deadline, () =>
            controller.abort(
              new GuestlinkError("DEADLINE_EXCEEDED", `call ${msg.method} ran past its deadline`),
            ),
          );
    this.#incoming.set(id, controller);
    const bytes = frame.payload.length;
    this.#runningBytes += bytes;
    const ctx = new HandlerContext(msg.method, controller, deadline, streams, this.#session);
    const finish = () => {
      timer?.cancel();
      if (this.#epoch !== epoch) return;
      this.#incoming.delete(id);
      this.#runningBytes -= bytes;
      this.#port.finished();
    };
    const sendResult = (value: unknown) => {
      if (this.#port.ended() || this.#epoch !== epoch) return;
      let payload: Uint8Array;
      try {
        payload = encodeControl({ value });
      } catch (err) {
        reply(
          new GuestlinkError(
            "HANDLER_FAILED",
            `the result of ${msg.method} cannot be encoded: ${(err as Error).message}`,
          ),
        );
        return;
      }
      try {
        this.#port.send(FrameType.RESULT, id, payload);
      } catch (err) {
        reply(err); // larger than the peer accepts: the caller gets FRAME_TOO_LARGE instead
      }
    };
    const fail = (err: unknown) => {
      if (!this.#port.ended()) reply(err);
    };
    runHandler(handler, msg.params, ctx, {
      output: streamCount > 0 ? Object.values(streams) : NO_STREAMS,
      outputDone: (s) => this.#streams.outputDone(s),
      sendResult,
      fail,
      finish,
    });
  }

  #onNotification(msg: CallMessage, bytes: number): void {
    if (!msg.notify) {
      throw new ProtocolViolation("BAD_MESSAGE", "CALL on stream 0 must be a notification");
    }
    const handler = this.handlers.get(msg.method) ?? this.fallback;
    if (!handler) {
      this.#port.notificationFailed();
      return;
    }
    const ctx = new HandlerContext(
      msg.method,
      new LazyAbortController(),
      Infinity,
      {},
      this.#session,
    );
    this.#notifications++;
    const epoch = this.#epoch;
    this.#runningBytes += bytes;
    RESOLVED.then(() => handler(msg.params, ctx))
      .catch(() => this.#port.notificationFailed())
      .finally(() => {
        this.#notifications--;
        if (this.#epoch === epoch) this.#runningBytes -= bytes;
        this.#port.finished();
      });
  }

  onCancel(frame: Frame): void {
    const msg = parseFrame<{ reason?: string; code?: "CANCELLED" | "DEADLINE_EXCEEDED" }>(
      CancelSchema,
      frame,
    );
    // A CANCEL for a call already finished crossed our reply on the wire: nothing to do.
    const code = msg.code ?? "CANCELLED";
    const why =
      code === "DEADLINE_EXCEEDED" ? "the caller's deadline passed" : "cancelled by the caller";
    this.#incoming
      .get(frame.streamId)
      ?.abort(new GuestlinkError(code, `${why}: ${msg.reason ?? "no reason given"}`));
  }

  /**
   * Fails every call in flight with `reason`; with `restart`, the peer is a new one, and work for
   * the old one must not reach it.
   */
  failAll(reason: GuestlinkError, restart = false): void {
    if (restart) this.#epoch++;
    for (const call of this.#outgoing.values()) {
      call.cleanup();
      if (!call.settled) call.reject(reason);
      call.confirm(undefined, reason);
    }
    this.#outgoing.clear();
    for (const call of this.#incoming.values()) call.abort(reason);
    this.#incoming.clear();
    if (restart) this.#runningBytes = 0;
  }
}

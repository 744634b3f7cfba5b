/**
 * A session turns a byte stream into a conversation: a handshake on connect, calls with
 * deadlines and cancellation, byte streams with credit-based flow control, keepalive, graceful
 * close and abort, and with resume, a life longer than one connection. docs/protocol.md
 * ("Session layer") is the wire contract this implements.
 *
 * This file is the public API and the session's life: it serves the parts' ports (one internal
 * object, `#core`) and ends the session; assembly.ts makes the parts and wires them. The parts,
 * each behind a narrow port:
 *
 * - `Links` (links.ts, with resume.ts and in-band.ts): the connections over the session's life:
 *   handshakes, losing one, resuming on the next; `Connection`: one transport and its read loop;
 *   `handshake.ts`: what HELLOs say and mean; `Terms`: what a HELLO settles (checksums, limits,
 *   keepalive).
 * - `Dispatch`: received frames to the part that owns them, one catch for protocol violations.
 * - `Delivery` (with `ReceiveSequence`) and `Outbox`: numbering, acknowledging, asking for and
 *   sending again what was lost; batching and keeping what we send.
 * - `Calls`, `Streams` (with `flow-control.ts`), `IdSpace`: the conversation itself.
 * - `Closing`, `Progress` (liveness.ts), `ReadGate` (backpressure.ts): closing gracefully,
 *   stalled or progressing, and holding back a peer that floods us.
 *
 * Everything time-related goes through the injected clock, and nothing here touches Node, so the
 * whole protocol runs deterministically on an in-memory transport pair with a fake clock.
 */
import { type CallOptions, deferred } from "../abort.ts";
import { GuestlinkError, toGuestlinkError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import { encodeControl } from "../wire/control.ts";
import type { DecoderStats, FrameDecoder } from "../wire/decode.ts";
import { FrameType } from "../wire/frame.ts";
import type { Acceptor } from "./acceptor.ts";
import { assembleParts, type SessionCore, type SessionParts } from "./assembly.ts";
import type {
  CallContext as BaseCallContext,
  Handler as BaseHandler,
  OpenCall,
  OpenOptions,
} from "./call.ts";
import { RemoteError } from "./call.ts";
import type { Connection, SessionConnection } from "./connection.ts";
import {
  type Liveness,
  newSessionStats,
  type PeerInfo,
  type SessionEvent,
  type SessionState,
  type SessionStats,
} from "./events.ts";
import {
  type ResolvedSessionOptions,
  resolveSessionOptions,
  type SessionOptions,
} from "./options.ts";

/** What a handler is given: its call's method, signal, deadline, streams and session. */
export type CallContext = BaseCallContext<Session>;
export type Handler = BaseHandler<Session>;
export type { Liveness, PeerInfo, SessionEvent, SessionState, SessionStats } from "./events.ts";
export { type OpenCall, type OpenOptions, RemoteError, type SessionConnection };

/** Frames a closing session does not wait for a resume to deliver (see `owesResumedPeer`). */
const ONLY_COURTESY: readonly FrameType[] = [FrameType.GOAWAY, FrameType.WINDOW];

export class Session {
  readonly options: ResolvedSessionOptions;
  readonly stats: SessionStats = newSessionStats();

  readonly #p: SessionParts<Session>;
  readonly #acceptor: Acceptor<Session> | undefined;
  readonly #sessionId: string;
  #state: SessionState = "handshaking";
  #peer: PeerInfo | undefined;
  readonly #ready = deferred<PeerInfo>();
  readonly #closed = deferred<GuestlinkError | undefined>();
  readonly #listeners = new Set<(event: SessionEvent) => void>();
  /** Work queued until the handshake completes. */
  #afterHandshake: (() => void)[] = [];
  /** Where reading from a peer that floods us, or does not read, waits. */
  /**
   * The session as its parts see it: one object that serves every part's port (and is what its
   * connections report to), kept off the public API.
   */
  readonly #core: SessionCore = {
    // sending
    send: (type, id, payload) => this.#send(type, id, payload),
    sendControl: (type: FrameType, id: number, value: unknown, sequenced?: boolean) =>
      this.#sendControl(type, id, value, sequenced),
    sendAhead: (type, value) => {
      if (this.#state === "closed") return;
      this.#p.outbox.sendFirst(type, encodeControl(value));
      this.stats.framesSent++;
    },
    whenOpen: (fn) => this.#whenOpen(fn),
    isOpen: () => this.#state !== "handshaking" && this.#state !== "closed",
    canSend: () =>
      this.#state !== "handshaking" && this.#state !== "closed" && !this.#p.outbox.congested,
    drained: () => {
      this.#p.streams.pump();
      this.#p.gate.check();
    },
    failed: (err, transport) => {
      const conn = this.#p.links.conn;
      if (conn?.transport === transport) this.#p.links.lost(conn, err);
    },
    // receiving
    frame: (conn, frame) => this.#p.dispatch.frame(conn, frame),
    afterRead: (conn) => this.#p.delivery.afterRead(conn),
    goawayReceived: () => {
      this.#p.closing.goawayReceived = true;
      if (this.#state === "open") this.#state = "closing";
      this.#maybeFinishClosing();
    },
    protocolError: (violation, message) => this.#protocolError(violation, message),
    readingPaused: () => this.#p.gate.closed,
    readingResumed: () => this.#p.gate.opened(),
    // the session's state
    state: () => this.#state,
    ended: () => this.#state === "closed",
    conn: () => this.#p.links.conn,
    description: () => this.#p.links.description,
    busy: () => this.#p.calls.inFlight + this.#p.streams.size,
    goaway: () => this.#p.closing.goawaySent || this.#p.closing.goawayReceived,
    assertCanStartCall: () => {
      if (this.#state === "closed") {
        throw new GuestlinkError("SESSION_CLOSED", "the session is closed");
      }
      if (this.#p.closing.underway) {
        throw new GuestlinkError(
          "SESSION_CLOSING",
          "the session is closing and starts no new calls",
        );
      }
    },
    // closing
    acksAtOnce: () => this.#p.closing.acksAtOnce,
    maybeFinishClosing: () => this.#maybeFinishClosing(),
    finished: () => {
      this.#p.gate.check();
      this.#maybeFinishClosing();
    },
    // What the peer needs to finish its work (a call's RESULT, a stream's last bytes), not just
    // our GOAWAY or credit: only that is worth waiting for a resume to deliver.
    owesResumedPeer: () =>
      this.#p.links.conn === undefined &&
      this.#p.links.canResume() &&
      this.#p.outbox.keepsOtherThan(ONLY_COURTESY),
    confirmsOnLive: () =>
      this.#p.closing.confirmed &&
      this.#p.links.conn !== undefined &&
      !this.#p.links.conn.handshaking,
    unacknowledged: () => this.#p.outbox.kept.frames,
    ackNow: () => this.#p.delivery.maybeAck(true),
    finish: () => {
      this.#p.outbox.flush(true);
      this.#end(undefined, true);
    },
    // connections coming and going
    open: (peer) => this.#open(peer),
    lost: (conn, err) => {
      this.#p.links.lost(conn, err);
      this.#p.gate.release();
    },
    unhealed: (err) => {
      const conn = this.#p.links.conn;
      if (conn !== undefined && this.#p.links.canResume()) this.#p.links.disconnect(conn, err);
      else this.#end(err);
    },
    disconnected: (error) => {
      this.#p.closing.connectionLost();
      this.#emit({ type: "disconnected", error });
    },
    failPending: (err, restart) => this.#failPending(err, restart),
    end: (err: GuestlinkError | undefined, gracefully?: boolean) => this.#end(err, gracefully),
    emit: (event) => this.#emit(event),
    handedOver: () => this.#handedOver(),
    // the registry's other sessions
    find: (id) => {
      const target = this.#acceptor?.find(id);
      return target === undefined ? undefined : target.#p.links;
    },
    registered: () => this.#acceptor?.opened(this),
    acceptInBand: (transport, decoder) => {
      const next = (this.#acceptor as Acceptor<Session>).acceptInBand(transport, decoder);
      return next.#p.links.conn as Connection;
    },
    // counters
    counted: (sent, received) => {
      this.stats.dataBytesSent += sent;
      this.stats.dataBytesReceived += received;
    },
    notificationFailed: () => {
      this.stats.notificationErrors++;
    },
    stale: () => {
      this.stats.staleFrames++;
    },
    sentDirect: () => {
      this.stats.framesSent++;
    },
  };

  /**
   * Runs a session over `transport`. `accepting` is for `SessionRegistry`: this side accepted the
   * connection and waits for the peer's HELLO, which may resume another session of the
   * registry's; with `decoder`, it is a connection the peer began in mid-stream, read on by the
   * session whose connection it follows.
   */
  constructor(
    transport: Transport,
    options: SessionOptions,
    accepting?: { acceptor: Acceptor<Session>; decoder?: FrameDecoder },
  ) {
    const o = resolveSessionOptions(options);
    this.options = o;
    this.#acceptor = accepting?.acceptor;
    const identity = { sessionId: o.runtime.randomId(), resumeToken: o.runtime.randomId() };
    this.#sessionId = identity.sessionId;
    const accepts = this.#acceptor !== undefined;
    this.#p = assembleParts<Session>(this.#core, this, transport, o, this.stats, identity, accepts);
    this.#p.links.conn = this.#p.links.newConnection(transport, accepting?.decoder);
    // Defer the HELLO so handlers registered right after construction are advertised.
    if (accepting?.decoder === undefined) {
      Promise.resolve().then(() => {
        const conn = this.#p.links.conn;
        if (this.#state !== "closed" && conn !== undefined) this.#p.links.start(conn);
      });
    }
  }

  // ---- public API ----------------------------------------------------------------------------

  /** Resolves with the peer's identity once the handshake is done; rejects if it fails. */
  get ready(): Promise<PeerInfo> {
    return this.#ready.promise;
  }

  /** Resolves when the session has ended: with undefined after a clean close, else the error. */
  get closed(): Promise<GuestlinkError | undefined> {
    return this.#closed.promise;
  }

  get state(): SessionState {
    return this.#state;
  }

  get peer(): PeerInfo | undefined {
    return this.#peer;
  }

  /** This side's session id (what a reconnecting peer names to resume it). */
  get id(): string {
    return this.#sessionId;
  }

  /** The current connection; undefined while a resumable session waits for a new one. */
  get connection(): SessionConnection | undefined {
    return this.#p.links.conn;
  }

  /** Sent frames kept until the peer acknowledges them (for resending and resume). */
  get replayBuffer(): { frames: number; bytes: number } {
    return this.#p.outbox.kept;
  }

  /** Last measured round-trip time in ms, from keepalive. */
  get rttMs(): number | undefined {
    return this.#p.links.conn?.keepalive?.rttMs;
  }

  /** The peer's wall clock minus ours, corrected for half the round trip. */
  get clockOffsetMs(): number | undefined {
    return this.#p.links.conn?.keepalive?.clockOffsetMs;
  }

  /** The decoders' counters, over every connection: garbage skipped, bad headers and payloads. */
  get wireStats(): DecoderStats {
    return this.#p.links.wireStats;
  }

  /** Whether the peer is making progress, only answering keepalive, or out of reach. */
  get liveness(): Liveness {
    const conn = this.#p.links.conn;
    if (conn === undefined || conn.handshaking) return "disconnected";
    return this.#p.terms.progress.stalled ? "stalled" : "alive";
  }

  /** Listens to what happens to the connection and the peer; returns the unsubscribe. */
  onEvent(listener: (event: SessionEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Goes on over a new connection, on the side that dials: the HELLO asks the peer to resume,
   * and what either side lacks is sent again. If the peer cannot resume (it restarted), every
   * call and stream in flight fails with RESUME_FAILED and the session goes on afresh. A current
   * connection is dropped first.
   */
  reconnect(transport: Transport): SessionConnection {
    const conn = this.#p.links.newConnection(transport);
    this.#p.links.redial(conn);
    return conn;
  }

  /** Serves `method`. The handler's return value (or thrown error) is the call's outcome. */
  handle(method: string, handler: Handler): this {
    this.#p.calls.handlers.set(method, handler);
    return this;
  }

  /**
   * Serves every method that has no handler of its own (`ctx.method` says which): a proxy that
   * forwards calls to another peer. Without one, such a call fails METHOD_NOT_FOUND.
   */
  handleOther(handler: Handler): this {
    this.#p.calls.fallback = handler;
    return this;
  }

  /** Calls `method` on the peer and resolves with its result. */
  call(method: string, params?: unknown, options: CallOptions = {}): Promise<unknown> {
    return this.#p.calls.open(method, params, options).result;
  }

  /** Sends a one-way notification; the peer runs its handler and sends nothing back. */
  notify(method: string, params?: unknown): void {
    this.#p.calls.notify(method, params);
  }

  /** Starts a call with streams; see `OpenCall`. */
  open(method: string, params?: unknown, options?: OpenOptions): OpenCall {
    return this.#p.calls.open(method, params, options);
  }

  /**
   * Closes gracefully: tells the peer (GOAWAY), starts no new calls, lets calls and streams in
   * flight in both directions finish, then closes the transport.
   */
  close(): Promise<void> {
    if (this.#state === "closed") return Promise.resolve();
    const first = !this.#p.closing.requested;
    const done = this.#p.closing.request();
    if (first) {
      this.#whenOpen(() => {
        if (!this.#p.closing.goawaySent) {
          this.#p.closing.goawaySent = true;
          this.#sendControl(FrameType.GOAWAY, 0, { reason: "closing" });
        }
        if (this.#state === "open") this.#state = "closing";
        this.#maybeFinishClosing();
      });
    }
    return done;
  }

  /**
   * Ends the session at once: everything pending fails with `reason` (default SESSION_CLOSED).
   * The peer is told (ERROR on stream 0), so it fails its side at once too instead of waiting to
   * resume a session that is gone.
   */
  abort(reason?: unknown): void {
    const err =
      reason === undefined
        ? new GuestlinkError("SESSION_CLOSED", "session aborted")
        : toGuestlinkError(reason);
    const conn = this.#p.links.conn;
    const told = conn !== undefined && !conn.handshaking && this.#state !== "closed";
    if (told) {
      this.#sendControl(FrameType.ERROR, 0, { code: err.code, message: err.message }, false);
      this.#p.outbox.flush(true);
    }
    this.#end(err, told);
  }

  // ---- the handshake's outcomes --------------------------------------------------------------

  /** The session is open with `peer`: what waited for the handshake goes. */
  #open(peer: PeerInfo): void {
    this.#peer = peer;
    if (this.#state === "handshaking") this.#state = "open";
    const queued = this.#afterHandshake;
    this.#afterHandshake = [];
    for (const fn of queued) fn();
    this.#ready.resolve(peer);
  }

  /** An accepted connection that resumed another session: this one ends without a word. */
  #handedOver(): void {
    this.#state = "closed";
    this.#p.links.handedOver();
    this.#p.outbox.stop();
    this.#p.deadlines.clear();
    const gone = new GuestlinkError("SESSION_CLOSED", "the connection resumed another session");
    this.#ready.reject(gone);
    this.#closed.resolve(undefined);
  }

  // ---- sending -------------------------------------------------------------------------------

  #whenOpen(fn: () => void): void {
    if (this.#state === "handshaking") this.#afterHandshake.push(fn);
    else if (this.#state !== "closed") fn();
  }

  #sendControl(type: FrameType, streamId: number, value: unknown, sequenced = true): void {
    this.#send(type, streamId, encodeControl(value), sequenced);
  }

  #send(
    type: FrameType,
    streamId: number,
    payload: Uint8Array | undefined,
    sequenced = true,
  ): void {
    if (this.#state === "closed") return;
    this.#p.outbox.send(type, streamId, payload, sequenced);
    this.stats.framesSent++;
  }

  #maybeFinishClosing(): void {
    if (this.#state !== "closing" && !(this.#state === "open" && this.#p.closing.requested)) return;
    this.#p.closing.maybeFinish();
  }

  /** Fails every call and stream in flight with `reason`; `restart`: the peer is a new one. */
  #failPending(reason: GuestlinkError, restart = false): void {
    this.#p.calls.failAll(reason, restart);
    this.#p.streams.failAll(reason);
    this.#p.gate.check();
  }

  /** Reports a peer's protocol violation to it, then ends the session. */
  #protocolError(violation: string, message: string): void {
    if (this.#state === "closed") return;
    this.#sendControl(
      FrameType.ERROR,
      0,
      { code: "PROTOCOL_ERROR", message, details: { violation } },
      false,
    );
    this.#p.outbox.flush(true);
    this.#end(
      new GuestlinkError(
        "PROTOCOL_ERROR",
        `${this.#p.links.description} broke the protocol: ${message}`,
        { details: { violation } },
      ),
      true,
    );
  }

  /**
   * Ends the session: everything pending fails with `err` (or SESSION_CLOSED after a clean close).
   * With `gracefully`, the transport is closed after what was sent drains (so a peer can read our
   * last words), and cut if that takes longer than a second; otherwise it is cut at once.
   */
  #end(err: GuestlinkError | undefined, gracefully = false): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#p.outbox.stop();
    this.#p.delivery.rx.stop();
    this.#p.deadlines.clear();
    const reason = err ?? new GuestlinkError("SESSION_CLOSED", "the session was closed");
    this.#failPending(reason);
    this.#afterHandshake = [];
    this.#ready.reject(reason);
    this.#p.closing.ended();
    this.#closed.resolve(err);
    this.#p.links.ended(err, reason, gracefully);
    this.#p.gate.release();
  }

  #emit(event: SessionEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure is its own; the session goes on.
      }
    }
  }
}

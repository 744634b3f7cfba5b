/**
 * A session turns a byte stream into a conversation: a handshake on connect, calls with
 * deadlines and cancellation, byte streams with credit-based flow control, keepalive, graceful
 * close and abort, and with resume, a life longer than one connection. docs/protocol.md
 * ("Session layer") is the wire contract this implements.
 *
 * This file is the public API and the session's life: it puts the parts together, dispatches
 * what arrives to them (a table by frame type, with one catch that turns a `ProtocolViolation`
 * into the session's end), and ends the session. The parts: `Links` (the connections over the
 * session's life: handshakes, losing one, resuming on the next), `Connection` (one transport and
 * its read loop), `handshake.ts` (what HELLOs say and mean), `ReceiveSequence` (numbering, ACKs,
 * asking for what was lost), `Outbox` (numbering, batching and keeping what we send), `Calls`,
 * `Streams` (with `flow-control.ts`), `Closing` and `Progress`.
 *
 * Everything time-related goes through the injected clock, and nothing here touches Node, so the
 * whole protocol runs deterministically on an in-memory transport pair with a fake clock.
 */
import { type CallOptions, type Deferred, deferred } from "../abort.ts";
import { GuestlinkError, toGuestlinkError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import { decodeControl, encodeControl } from "../wire/control.ts";
import { type DecoderStats, FrameDecoder } from "../wire/decode.ts";
import { FrameEncoder } from "../wire/encode.ts";
import { type Frame, FrameType, HEADER_BYTES, isFrameType } from "../wire/frame.ts";
import type { Acceptor } from "./acceptor.ts";
import type {
  CallContext as BaseCallContext,
  Handler as BaseHandler,
  OpenCall,
  OpenOptions,
} from "./call.ts";
import { RemoteError } from "./call.ts";
import { Calls } from "./calls.ts";
import { Closing } from "./closing.ts";
import { Connection, type ConnectionOwner, type SessionConnection } from "./connection.ts";
import { DeadlineQueue } from "./deadlines.ts";
import { agreeUnchecked, buildHello } from "./handshake.ts";
import { IdSpace } from "./ids.ts";
import { Keepalive } from "./keepalive.ts";
import { Links, RECONNECT } from "./links.ts";
import { Progress } from "./liveness.ts";
import { AckSchema, GoawaySchema, type Hello, PingSchema, PongSchema } from "./messages.ts";
import {
  type ResolvedSessionOptions,
  resolveSessionOptions,
  type SessionOptions,
} from "./options.ts";
import { Outbox } from "./outbox.ts";
import { Arrival, ReceiveSequence } from "./receive-sequence.ts";
import { Streams } from "./streams.ts";
import { ProtocolViolation, parseFrame } from "./violation.ts";

export type SessionState = "handshaking" | "open" | "closing" | "closed";
/** What a handler is given: its call's method, signal, deadline, streams and session. */
export type CallContext = BaseCallContext<Session>;
export type Handler = BaseHandler<Session>;
export { type OpenCall, type OpenOptions, RemoteError, type SessionConnection };

/** What the peer told us about itself in its handshake. */
export interface PeerInfo {
  id: string;
  hostname: string;
  version: string;
  services: string[];
  /** The protocol version both sides agreed on. */
  protocol: number;
  sessionId: string;
  resumeToken: string;
  incarnation: string;
  limits: Hello["limits"];
}

/**
 * What happens to a session's connection and its peer, as events (see `onEvent`). The connection
 * events (disconnected, resumed, restarted) come only with resume: without, a lost connection
 * ends the session. Stalled and progressing come with keepalive.
 */
export type SessionEvent =
  /** The connection was lost; the session waits (up to the resume window) for a new one. */
  | { type: "disconnected"; error: GuestlinkError }
  /** A new connection took over: what the peer had not received was sent again. */
  | {
      type: "resumed";
      /** From losing the old connection to resuming on the new one. */
      downMs: number;
      /** From the new connection's start to resuming on it: the handshake's round trip. */
      handshakeMs: number;
      replayedFrames: number;
      replayedBytes: number;
    }
  /**
   * The peer could not resume (it restarted, or lacked frames no longer kept): every call and
   * stream in flight failed with `error` (RESUME_FAILED), and the session goes on afresh.
   */
  | { type: "restarted"; error: GuestlinkError }
  /**
   * Connected and answering keepalive, but no progress: calls or streams wait on the peer and
   * nothing for them has arrived for the dead timeout. Busy, not dead (that is PEER_UNRESPONSIVE).
   */
  | { type: "stalled"; forMs: number }
  /** Progress again after `stalled`. */
  | { type: "progressing" };

/** What is known of the peer: answering and making progress, answering only, or out of reach. */
export type Liveness = "alive" | "stalled" | "disconnected";

export interface SessionStats {
  framesSent: number;
  framesReceived: number;
  dataBytesSent: number;
  dataBytesReceived: number;
  notificationErrors: number;
  /**
   * Frames skipped because they came before the peer's HELLO on a connection: left in the
   * transport by an earlier connection (a virtio-serial port keeps them), or a stale answer.
   */
  staleFrames: number;
  /** Times this side asked the peer to send again what was lost on the live connection. */
  resendAsks: number;
  /** Times the peer asked this side to send again, and the frames sent again for it. */
  resendsAnswered: number;
  framesResent: number;
}

/**
 * Frames numbered for loss detection and resume. The rest belong to one connection: HELLO,
 * keepalive, acknowledgements, and the ERROR on stream 0 that ends a session.
 */
function isSequenced(type: number, streamId: number): boolean {
  return (
    type !== FrameType.HELLO &&
    type !== FrameType.PING &&
    type !== FrameType.PONG &&
    type !== FrameType.ACK &&
    !(type === FrameType.ERROR && streamId === 0)
  );
}

export class Session {
  readonly options: ResolvedSessionOptions;
  readonly stats: SessionStats = {
    framesSent: 0,
    framesReceived: 0,
    dataBytesSent: 0,
    dataBytesReceived: 0,
    notificationErrors: 0,
    staleFrames: 0,
    resendAsks: 0,
    resendsAnswered: 0,
    framesResent: 0,
  };

  readonly #links: Links;
  readonly #outbox: Outbox;
  readonly #rx: ReceiveSequence;
  readonly #ids: IdSpace;
  readonly #streams: Streams;
  readonly #calls: Calls<Session>;
  readonly #closing: Closing;
  readonly #progress: Progress;
  readonly #deadlines: DeadlineQueue;
  readonly #acceptor: Acceptor<Session> | undefined;
  readonly #sessionId: string;
  readonly #resumeToken: string;
  #state: SessionState = "handshaking";
  #peer: PeerInfo | undefined;
  readonly #ready = deferred<PeerInfo>();
  readonly #closed = deferred<GuestlinkError | undefined>();
  readonly #listeners = new Set<(event: SessionEvent) => void>();
  /** Work queued until the handshake completes. */
  #afterHandshake: (() => void)[] = [];
  /** Settled when the read loop, paused by `#mustPauseReading`, may read on. */
  #readWaiter: Deferred<void> | undefined;
  /** What this session's connections report to (kept off the public API). */
  readonly #owner: ConnectionOwner = {
    frame: (conn, frame) => this.#onFrame(conn, frame),
    afterRead: (conn) => {
      if (conn.takeDamage() && this.#isLive(conn)) this.#rx.damaged();
      this.#maybeAck(false);
    },
    readingPaused: () => this.#mustPauseReading(),
    readingResumed: () => {
      this.#readWaiter ??= deferred<void>();
      return this.#readWaiter.promise;
    },
    lost: (conn, err) => {
      this.#links.lost(conn, err);
      this.#wakeReader(true);
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
    this.options = resolveSessionOptions(options);
    const o = this.options;
    const clock = o.runtime.clock;
    this.#acceptor = accepting?.acceptor;
    this.#sessionId = o.runtime.randomId();
    this.#resumeToken = o.runtime.randomId();
    this.#deadlines = new DeadlineQueue(clock);
    this.#progress = new Progress(clock.now());
    this.#ids = new IdSpace(o.role);
    // The HELLO is always checksummed: whether to go without is agreed in it (9.1).
    this.#outbox = new Outbox(
      transport,
      new FrameEncoder({ payloadChecksum: true, checksum: o.checksum }),
      {
        failed: (err, t) => {
          const conn = this.#links.conn;
          if (conn?.transport === t) this.#links.lost(conn, err);
        },
        drained: () => {
          this.#streams.pump();
          this.#wakeReader();
        },
      },
      o.replayBufferBytes,
    );
    this.#rx = new ReceiveSequence(clock, {
      askResend: (received) => {
        this.stats.resendAsks++;
        this.#sendControl(FrameType.ACK, 0, { received, resend: true }, false);
      },
      unhealed: (expected, asks) =>
        this.#framesLost(
          `frame ${expected} from ${this.#links.description} was lost and ${asks} requests to send it again did not bring it`,
          { expected, asks },
        ),
      rttMs: () => this.#links.conn?.keepalive?.srttMs,
    });
    this.#streams = new Streams(
      {
        send: (type, id, payload) => this.#send(type, id, payload),
        sendControl: (type, id, value) => this.#sendControl(type, id, value),
        canSend: () =>
          this.#state !== "handshaking" && this.#state !== "closed" && !this.#outbox.congested,
        ended: () => this.#state === "closed",
        released: () => this.#maybeFinishClosing(),
        counted: (sent, received) => {
          this.stats.dataBytesSent += sent;
          this.stats.dataBytesReceived += received;
        },
      },
      this.#ids,
      o.streamWindowBytes,
      o.sessionWindowBytes,
    );
    this.#calls = new Calls<Session>(
      {
        send: (type, id, payload) => this.#send(type, id, payload),
        sendControl: (type, id, value) => this.#sendControl(type, id, value),
        whenOpen: (fn) => this.#whenOpen(fn),
        assertCanStartCall: () => {
          if (this.#state === "closed")
            throw new GuestlinkError("SESSION_CLOSED", "the session is closed");
          if (this.#closing.underway) {
            throw new GuestlinkError(
              "SESSION_CLOSING",
              "the session is closing and starts no new calls",
            );
          }
        },
        closing: () => this.#closing.goawaySent || this.#closing.goawayReceived,
        ended: () => this.#state === "closed",
        finished: () => {
          this.#wakeReader();
          this.#maybeFinishClosing();
        },
        notificationFailed: () => {
          this.stats.notificationErrors++;
        },
      },
      this,
      { ids: this.#ids, streams: this.#streams, deadlines: this.#deadlines, clock },
      o.defaultCallTimeoutMs,
    );
    this.#closing = new Closing(
      {
        busy: () => this.#busy() > 0,
        owesResumedPeer: () =>
          this.#links.conn === undefined && this.#links.canResume() && this.#outbox.kept.frames > 0,
        confirmsOnLive: () =>
          this.#closing.confirmed &&
          this.#links.conn !== undefined &&
          !this.#links.conn.handshaking,
        unacknowledged: () => this.#outbox.kept.frames,
        ackNow: () => this.#maybeAck(true),
        finish: () => {
          this.#outbox.flush(true);
          this.#end(undefined, true);
        },
      },
      clock,
    );
    this.#links = new Links(
      {
        state: () => this.#state,
        hello: (conn, extra) => this.#hello(conn, extra),
        agree: (conn, hello) => this.#agree(conn, hello),
        opened: (conn, hello, version) => this.#opened(conn, hello, version),
        resumed: (conn, replayed) => this.#resumed(conn, replayed),
        restarted: (err) => this.#restarted(err),
        sendControl: (type, id, value, sequenced) => this.#sendControl(type, id, value, sequenced),
        end: (err, gracefully) => this.#end(err, gracefully),
        disconnected: (error) => {
          this.#closing.connectionLost();
          this.#emit({ type: "disconnected", error });
        },
        busy: () => this.#busy(),
        goaway: () => this.#closing.goawaySent || this.#closing.goawayReceived,
        find: (id) => {
          const target = this.#acceptor?.find(id);
          return target === undefined ? undefined : target.#links;
        },
        registered: () => this.#acceptor?.opened(this),
        acceptInBand: (t, decoder) => {
          const next = (this.#acceptor as Acceptor<Session>).acceptInBand(t, decoder);
          return next.#links.conn as Connection;
        },
        handedOver: () => this.#handedOver(),
        stale: () => {
          this.stats.staleFrames++;
        },
        sentDirect: () => {
          this.stats.framesSent++;
        },
      },
      this.#owner,
      { options: o, outbox: this.#outbox, rx: this.#rx },
      this.#acceptor !== undefined,
      this.#resumeToken,
      transport.description,
    );
    this.#links.conn = this.#newConnection(transport, accepting?.decoder);
    // Defer the HELLO so handlers registered right after construction are advertised.
    if (accepting?.decoder === undefined) {
      Promise.resolve().then(() => {
        const conn = this.#links.conn;
        if (this.#state !== "closed" && conn !== undefined) this.#links.start(conn);
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
    return this.#links.conn;
  }

  /** Sent frames kept until the peer acknowledges them (for resending and resume). */
  get replayBuffer(): { frames: number; bytes: number } {
    return this.#outbox.kept;
  }

  /** Last measured round-trip time in ms, from keepalive. */
  get rttMs(): number | undefined {
    return this.#links.conn?.keepalive?.rttMs;
  }

  /** The peer's wall clock minus ours, corrected for half the round trip. */
  get clockOffsetMs(): number | undefined {
    return this.#links.conn?.keepalive?.clockOffsetMs;
  }

  /** The decoders' counters, over every connection: garbage skipped, bad headers and payloads. */
  get wireStats(): DecoderStats {
    return this.#links.wireStats;
  }

  /** Whether the peer is making progress, only answering keepalive, or out of reach. */
  get liveness(): Liveness {
    const conn = this.#links.conn;
    if (conn === undefined || conn.handshaking) return "disconnected";
    return this.#progress.stalled ? "stalled" : "alive";
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
    const conn = this.#newConnection(transport);
    this.#links.redial(conn);
    return conn;
  }

  /** Serves `method`. The handler's return value (or thrown error) is the call's outcome. */
  handle(method: string, handler: Handler): this {
    this.#calls.handlers.set(method, handler);
    return this;
  }

  /** Calls `method` on the peer and resolves with its result. */
  call(method: string, params?: unknown, options: CallOptions = {}): Promise<unknown> {
    return this.#calls.open(method, params, options).result;
  }

  /** Sends a one-way notification; the peer runs its handler and sends nothing back. */
  notify(method: string, params?: unknown): void {
    this.#calls.notify(method, params);
  }

  /** Starts a call with streams; see `OpenCall`. */
  open(method: string, params?: unknown, options?: OpenOptions): OpenCall {
    return this.#calls.open(method, params, options);
  }

  /**
   * Closes gracefully: tells the peer (GOAWAY), starts no new calls, lets calls and streams in
   * flight in both directions finish, then closes the transport.
   */
  close(): Promise<void> {
    if (this.#state === "closed") return Promise.resolve();
    const first = !this.#closing.requested;
    const done = this.#closing.request();
    if (first) {
      this.#whenOpen(() => {
        if (!this.#closing.goawaySent) {
          this.#closing.goawaySent = true;
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
    const conn = this.#links.conn;
    const told = conn !== undefined && !conn.handshaking && this.#state !== "closed";
    if (told) {
      this.#sendControl(FrameType.ERROR, 0, { code: err.code, message: err.message }, false);
      this.#outbox.flush(true);
    }
    this.#end(err, told);
  }

  // ---- the handshake's outcomes --------------------------------------------------------------

  /** A new connection of ours; `decoder` carries on one that began on the same transport. */
  #newConnection(transport: Transport, decoder?: FrameDecoder): Connection {
    const o = this.options;
    return new Connection(
      transport,
      decoder ??
        new FrameDecoder({
          maxFrameBytes: o.maxFrameBytes,
          checksum: o.checksum,
          requirePayloadChecksum: true,
        }),
      this.#owner,
      this.#acceptor === undefined ? o.runtime.randomId() : undefined,
      o.runtime.clock.now(),
    );
  }

  /** Our HELLO on `conn`, with `extra` (an answer, or asking to resume). */
  #hello(conn: Connection, extra: Partial<Hello>): Hello {
    const o = this.options;
    const hello = buildHello(
      {
        options: o,
        services: o.services ?? [...this.#calls.handlers.keys()],
        sessionId: this.#sessionId,
        resumeToken: this.#resumeToken,
      },
      extra,
    );
    if (conn.nonce !== undefined) hello.nonce = conn.nonce;
    if (this.#wantsUnchecked(conn)) hello.uncheckedPayloads = true;
    return hello;
  }

  /**
   * Whether this side asks to go without payload checksums on `conn`: only when told to, and
   * never when it receives over a pipe that can damage bytes.
   */
  #wantsUnchecked(conn: Connection): boolean {
    return !this.options.payloadChecksum && conn.transport.lossy !== true;
  }

  /**
   * Takes the peer's terms for `conn`: payload checksums both ways (off only when both asked,
   * 9.1; frames kept for replay go out again as they were encoded), frames no larger than it
   * accepts, and whether closing waits for its ACKs (9.6).
   */
  #agree(conn: Connection, hello: Hello): void {
    const unchecked = agreeUnchecked(this.#wantsUnchecked(conn), hello);
    conn.decoder.requirePayloadChecksum = !unchecked;
    this.#outbox.encoder = new FrameEncoder({
      payloadChecksum: !unchecked,
      checksum: this.options.checksum,
      maxFrameBytes: Math.max(1024, Math.min(hello.limits.maxFrameBytes, 64 * 1024 * 1024)),
    });
    this.#closing.confirmed =
      hello.confirmsClose === true ||
      (this.#acceptor !== undefined && conn.transport.reconnectsInBand === true);
  }

  /** The handshake on `conn` is done and this is a session from the start: take the peer's terms. */
  #opened(conn: Connection, hello: Hello, version: number): void {
    this.#agree(conn, hello);
    this.#peer = {
      id: hello.peer.id,
      hostname: hello.peer.hostname,
      version: hello.peer.version,
      services: hello.services,
      protocol: version,
      sessionId: hello.sessionId,
      resumeToken: hello.resumeToken,
      incarnation: hello.incarnation,
      limits: hello.limits,
    };
    if (this.options.resume !== false) {
      this.#links.resumeFrom = {
        sessionId: hello.sessionId,
        token: hello.resumeToken,
        incarnation: hello.incarnation,
      };
    }
    this.#streams.peerLimits(hello.limits);
    conn.opened();
    if (this.#state === "handshaking") this.#state = "open";
    this.#startKeepalive(conn);
    const queued = this.#afterHandshake;
    this.#afterHandshake = [];
    for (const fn of queued) fn();
    this.#ready.resolve(this.#peer);
    this.#streams.pump();
  }

  /** Went on over `conn` after a resume: `replayed` is what was sent again. */
  #resumed(conn: Connection, replayed: { frames: number; bytes: number }): void {
    this.#startKeepalive(conn);
    const now = this.options.runtime.clock.now();
    this.#emit({
      type: "resumed",
      ...this.#links.downFor(conn, now),
      replayedFrames: replayed.frames,
      replayedBytes: replayed.bytes,
    });
    this.#streams.pump();
    this.#maybeFinishClosing();
  }

  /**
   * The peer could not resume: everything in flight fails with `err`, numbering starts again,
   * and the session goes on with whoever answers next.
   */
  #restarted(err: GuestlinkError): void {
    this.#failPending(err, true);
    this.#outbox.reset();
    this.#rx.reset();
    this.#ids.resetPeer();
    this.#streams.window.reset();
    this.#emit({ type: "restarted", error: err });
  }

  /** An accepted connection that resumed another session: this one ends without a word. */
  #handedOver(): void {
    this.#state = "closed";
    this.#links.handedOver();
    this.#outbox.stop();
    this.#deadlines.clear();
    const gone = new GuestlinkError("SESSION_CLOSED", "the connection resumed another session");
    this.#ready.reject(gone);
    this.#closed.resolve(undefined);
  }

  #startKeepalive(conn: Connection): void {
    const o = this.options;
    if (!o.keepalive) return;
    const deadAfterMs = o.keepalive.deadAfterMs;
    this.#progress.restart(o.runtime.clock.now(), this.#rx.expected);
    conn.keepalive = new Keepalive(o.runtime.clock, o.keepalive, {
      sendPing: (sentAt) => this.#sendControl(FrameType.PING, 0, { sentAt }, false),
      notReading: () => this.#readWaiter !== undefined,
      tick: () => {
        for (const frame of conn.rescanStuckFrame()) {
          conn.keepalive?.heard();
          this.#onFrame(conn, frame);
          if (conn.over) return;
        }
        const change = this.#progress.check(
          o.runtime.clock.now(),
          this.#calls.waiting || this.#streams.size > 0,
          this.#rx.expected,
          deadAfterMs,
        );
        if (change !== undefined) this.#emit(change);
        this.#maybeAck(true);
      },
      peerDead: (silentForMs) =>
        this.#end(
          new GuestlinkError(
            "PEER_UNRESPONSIVE",
            `${conn.description} has not answered for ${Math.round(silentForMs)} ms; it is presumed dead`,
            { details: { silentForMs, deadAfterMs } },
          ),
        ),
    });
    conn.keepalive.start();
  }

  // ---- receiving -----------------------------------------------------------------------------

  #isLive(conn: Connection): boolean {
    return conn === this.#links.conn && !conn.handshaking && this.#state !== "closed";
  }

  #onFrame(conn: Connection, frame: Frame): void {
    if (conn !== this.#links.conn) return;
    this.stats.framesReceived++;
    try {
      if (conn.handshaking) {
        if (!this.#links.beforeHello(conn, frame)) this.#onSessionError(conn, frame);
        return;
      }
      if (!isFrameType(frame.type)) {
        throw new ProtocolViolation("UNKNOWN_FRAME_TYPE", `unknown frame type ${frame.type}`);
      }
      if (
        isSequenced(frame.type, frame.streamId) &&
        this.#rx.arrive(frame.seq, HEADER_BYTES + frame.payload.length) !== Arrival.NEXT
      ) {
        return; // a duplicate (replayed), or after a gap: what is missing is asked for again
      }
      this.#dispatch(conn, frame);
    } catch (err) {
      if (!(err instanceof ProtocolViolation)) throw err;
      this.#protocolError(err.violation, err.message);
    }
  }

  /** One line per frame type: the part that owns it does the work. */
  #dispatch(conn: Connection, frame: Frame): void {
    const calls = this.#calls;
    const streams = this.#streams;
    switch (frame.type) {
      case FrameType.HELLO:
        if (!this.#links.helloAgain(conn, frame)) {
          throw new ProtocolViolation("DUPLICATE_HELLO", "a second HELLO on the same connection");
        }
        break;
      case FrameType.CALL:
        calls.onCall(frame);
        break;
      case FrameType.RESULT:
        calls.onReply(frame);
        break;
      case FrameType.ERROR:
        if (frame.streamId === 0) this.#onSessionError(conn, frame);
        else calls.onReply(frame);
        break;
      case FrameType.CANCEL:
        calls.onCancel(frame);
        break;
      case FrameType.DATA:
        streams.onData(frame);
        break;
      case FrameType.WINDOW:
        streams.onWindow(frame);
        break;
      case FrameType.END:
        streams.onEnd(frame);
        break;
      case FrameType.RESET:
        streams.onReset(frame);
        break;
      case FrameType.PING: {
        const { sentAt } = parseFrame<{ sentAt: number }>(PingSchema, frame);
        const wallTime = this.options.runtime.clock.wallNow();
        this.#sendControl(FrameType.PONG, 0, { sentAt, wallTime }, false);
        break;
      }
      case FrameType.PONG: {
        const pong = parseFrame<{ sentAt: number; wallTime: number }>(PongSchema, frame);
        conn.keepalive?.pong(pong.sentAt, pong.wallTime);
        break;
      }
      case FrameType.ACK:
        this.#onAck(parseFrame<{ received: number; resend?: boolean }>(AckSchema, frame));
        break;
      case FrameType.GOAWAY:
        parseFrame(GoawaySchema, frame);
        this.#closing.goawayReceived = true;
        if (this.#state === "open") this.#state = "closing";
        this.#maybeFinishClosing();
        break;
    }
  }

  #onAck(ack: { received: number; resend?: boolean }): void {
    if (ack.received > this.#outbox.lastSeq) {
      throw new ProtocolViolation(
        "BAD_ACK",
        `ACK of frame ${ack.received}, but only ${this.#outbox.lastSeq} were sent`,
      );
    }
    if (ack.resend === true) {
      this.#resendAfter(ack.received);
      return;
    }
    this.#outbox.ack(ack.received);
    if (this.#state === "closing" || this.#closing.requested) this.#maybeFinishClosing();
  }

  #onSessionError(conn: Connection, frame: Frame): void {
    let msg: { code?: unknown; message?: unknown } = {};
    try {
      msg = decodeControl(frame.payload);
    } catch {
      // A peer that cannot even say why is still ending the session.
    }
    const code = typeof msg.code === "string" ? msg.code : "PROTOCOL_ERROR";
    const text = typeof msg.message === "string" ? msg.message : "no reason given";
    const where = this.#links.description;
    if (code === RECONNECT) {
      // Before the peer's HELLO it is stale: an answer to what an earlier connection left behind.
      if (conn.handshaking) {
        this.#links.staleFrame(conn);
        return;
      }
      const err = new GuestlinkError(
        "TRANSPORT_FAILED",
        `${where} has no session on this connection (it restarted, or lost the connection without this side seeing it): ${text}`,
      );
      if (this.#links.canResume()) this.#links.disconnect(conn, err);
      else this.#end(err);
      return;
    }
    this.#end(new RemoteError(code, `${where} ended the session: ${text}`));
  }

  // ---- acknowledging and sending again -------------------------------------------------------

  /** Tells the peer what has arrived, so it can forget it (`force`: if anything). */
  #maybeAck(force: boolean): void {
    const conn = this.#links.conn;
    if (conn === undefined || conn.handshaking) return;
    if (!this.#rx.takeAck(force || this.#closing.acksAtOnce)) return;
    this.#sendControl(FrameType.ACK, 0, { received: this.#rx.received }, false);
  }

  /**
   * The peer lost what we sent after `received` (it arrived damaged, or not at all): everything
   * kept after it goes again, on this connection. If some of it is no longer kept, resending
   * cannot heal the connection.
   */
  #resendAfter(received: number): void {
    if (!this.#outbox.canReplayFrom(received)) {
      this.#framesLost(
        `${this.#links.description} lost frames after ${received} that are no longer kept for sending again (replay buffer ${this.options.replayBufferBytes} bytes)`,
        { received, replayBufferBytes: this.options.replayBufferBytes },
      );
      return;
    }
    this.#outbox.ack(received);
    this.stats.resendsAnswered++;
    this.stats.framesResent += this.#outbox.resendAll();
  }

  /**
   * Frames were lost on the connection and resending did not bring them: with resume the
   * connection is dropped (the next one brings them again, or says it cannot); without, the
   * session ends.
   */
  #framesLost(message: string, details: Record<string, unknown>): void {
    const conn = this.#links.conn;
    if (conn === undefined) return;
    const err = new GuestlinkError("FRAMES_LOST", message, {
      details: { ...details, wire: { ...conn.decoder.stats } },
    });
    if (this.#links.canResume()) this.#links.disconnect(conn, err);
    else this.#end(err);
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
    this.#outbox.send(type, streamId, payload, sequenced);
    this.stats.framesSent++;
  }

  // ---- holding a peer back -------------------------------------------------------------------

  /**
   * Whether to stop reading from the peer: as many of its calls as we run at once are running,
   * or what we owe it has piled up because it does not read.
   */
  #mustPauseReading(): boolean {
    return (
      this.#state !== "closed" &&
      (this.#calls.running >= this.options.maxIncomingCalls ||
        this.#outbox.queuedBytes >= this.options.maxQueuedBytes)
    );
  }

  /**
   * A call finished, the transport drained, or the session ended: look again. `always` when the
   * connection is over, so its read loop can see that.
   */
  #wakeReader(always = false): void {
    const waiter = this.#readWaiter;
    if (waiter === undefined || (!always && this.#mustPauseReading())) return;
    this.#readWaiter = undefined;
    waiter.resolve();
  }

  // ---- ending --------------------------------------------------------------------------------

  #busy(): number {
    return this.#calls.inFlight + this.#streams.size;
  }

  #maybeFinishClosing(): void {
    if (this.#state !== "closing" && !(this.#state === "open" && this.#closing.requested)) return;
    this.#closing.maybeFinish();
  }

  /** Fails every call and stream in flight with `reason`; `restart`: the peer is a new one. */
  #failPending(reason: GuestlinkError, restart = false): void {
    this.#calls.failAll(reason, restart);
    this.#streams.failAll(reason);
    this.#wakeReader();
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
    this.#outbox.flush(true);
    this.#end(
      new GuestlinkError(
        "PROTOCOL_ERROR",
        `${this.#links.description} broke the protocol: ${message}`,
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
    this.#outbox.stop();
    this.#rx.stop();
    this.#deadlines.clear();
    const reason = err ?? new GuestlinkError("SESSION_CLOSED", "the session was closed");
    this.#failPending(reason);
    this.#afterHandshake = [];
    this.#ready.reject(reason);
    this.#closing.ended();
    this.#closed.resolve(err);
    this.#links.ended(err, reason, gracefully);
    this.#wakeReader(true);
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

/**
 * A session turns a byte stream into a conversation: a handshake on connect, calls with
 * deadlines and cancellation, byte streams with credit-based flow control, keepalive, graceful
 * close and abort. docs/protocol.md ("Session layer") is the wire contract this implements.
 *
 * Everything time-related goes through the injected clock, and nothing here touches Node, so the
 * whole protocol runs deterministically on an in-memory transport pair with a fake clock.
 */
import { type CallOptions, LazyAbortController } from "../abort.ts";
import { GuestlinkError, isGuestlinkError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import { decodeControl, encodeControl } from "../wire/control.ts";
import { type DecoderStats, FrameDecoder, sumDecoderStats } from "../wire/decode.ts";
import { FrameEncoder } from "../wire/encode.ts";
import { type Frame, FrameType, frameTypeName, HEADER_BYTES, isFrameType } from "../wire/frame.ts";
import {
  type CallContext,
  type CancelOutgoing,
  type Deferred,
  deferred,
  errorPayload,
  type Handler,
  HandlerContext,
  type IncomingCall,
  type OpenCall,
  type OpenOptions,
  OutgoingCall,
  RemoteError,
  toGuestlinkError,
} from "./call.ts";
import { DeadlineQueue } from "./deadlines.ts";
import { Keepalive } from "./keepalive.ts";
import {
  AckSchema,
  CallSchema,
  CancelSchema,
  ErrorSchema,
  GoawaySchema,
  type Hello,
  HelloSchema,
  isPlainCall,
  isPlainError,
  isPlainResult,
  isPlainWindow,
  PingSchema,
  PongSchema,
  PROTOCOL_VERSIONS,
  parseMessage,
  ResultSchema,
  WindowSchema,
} from "./messages.ts";
import {
  DEFAULT_MAX_DATA_FRAME_BYTES,
  type ResolvedSessionOptions,
  resolveSessionOptions,
  type SessionOptions,
} from "./options.ts";
import { Outbox } from "./outbox.ts";
import { Arrival, ReceiveSequence } from "./receive-sequence.ts";
import type { SessionRegistry } from "./registry.ts";
import type { Timer } from "./runtime.ts";
import { SessionStream, type StreamOwner } from "./stream.ts";

/** After a protocol error, how long the peer gets to read our ERROR before the transport is cut. */
const ERROR_LINGER_MS = 1_000;
/** The stream-0 ERROR code that asks the dialling side to make a new connection. */
const RECONNECT = "RECONNECT";
/** How often a guest may ask its host to dial again (see `#staleFrame`). */
const RECONNECT_HINT_INTERVAL_MS = 1_000;
/**
 * How often the dialling side says HELLO again while it has no answer. A guest on a virtio-serial
 * port that closes it (no host yet) just as the host's HELLO arrives never sees that HELLO; the
 * next one gets through.
 */
const HELLO_REPEAT_MS = 1_000;
const MAX_CREDIT = 2 ** 31 - 1;

export type SessionState = "handshaking" | "open" | "closing" | "closed";

export { type CallContext, type Handler, type OpenCall, type OpenOptions, RemoteError };

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

/** One connection of a session: `ready` once its handshake is done, `lost` when it is over. */
export interface SessionConnection {
  readonly description: string;
  readonly ready: Promise<void>;
  /** Settles when this connection is over: with why, or undefined after a clean close. */
  readonly lost: Promise<GuestlinkError | undefined>;
}

/** One connection the session runs over; with resume, a new one follows each that is lost. */
interface Link {
  readonly transport: Transport;
  readonly decoder: FrameDecoder;
  /** Whose frames these are: an accepted connection is handed to the session it resumes. */
  owner: Session;
  /** Until the peer's HELLO on this connection. */
  handshaking: boolean;
  /** The dialling side's mark on its HELLO for this connection, which the answer must carry. */
  readonly nonce: string | undefined;
  /** The mark on the HELLO this side took on this connection: a repeat of it is ignored. */
  peerNonce: string | undefined;
  /** The connection the peer began in mid-stream on the same transport (`reconnectsInBand`). */
  successor: Link | undefined;
  /** When this side last asked the peer to dial again (see `#staleFrame`). */
  hintedAt: number;
  /** Set once the connection is dropped or its session ended: its frames are no longer read. */
  over: boolean;
  keepalive: Keepalive | undefined;
  handshakeTimer: Timer | undefined;
  helloTimer: Timer | undefined;
  framesAtLastTick: number;
  /** The decoder's count of dropped frames and headers when last looked at (see `#readLoop`). */
  damageSeen: number;
  /** The receive sequence number at the last sign of progress, and when that was. */
  progressSeq: number;
  progressAt: number;
  readonly startedAt: number;
  readonly ready: Deferred<void>;
  readonly lost: Deferred<GuestlinkError | undefined>;
}

interface ResumeRefusal {
  reason: string;
  message: string;
}

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

const NO_OPTIONS: OpenOptions = Object.freeze({});
const NO_NAMES: readonly string[] = Object.freeze([]);
const NO_STREAMS: readonly SessionStream[] = Object.freeze([]);

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

export class Session implements StreamOwner {
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

  /** The current connection; undefined while a resumable session waits for a new one. */
  #link: Link | undefined;
  /** The last connection's address, for messages. */
  #description: string;
  /** Counters of the connections before the current one. */
  #wireTotals: DecoderStats = sumDecoderStats();
  readonly #outbox: Outbox;
  readonly #registry: SessionRegistry | undefined;
  readonly #listeners = new Set<(event: SessionEvent) => void>();
  /** The peer's session id and token, to ask for resume on the next connection. */
  #resumeFrom: { sessionId: string; token: string } | undefined;
  #resumeTimer: Timer | undefined;
  #lostAt = 0;
  /** Bumped when the session starts afresh: work from before must not reach the new peer. */
  #epoch = 0;
  /** Numbering of what arrives: the next frame expected, ACKs due, asks to send again. */
  readonly #rx: ReceiveSequence;
  #stalled = false;
  #state: SessionState = "handshaking";
  #peer: PeerInfo | undefined;
  readonly #readyDeferred = deferred<PeerInfo>();
  readonly #closedDeferred = deferred<GuestlinkError | undefined>();
  readonly #sessionId: string;
  readonly #resumeToken: string;

  readonly #handlers = new Map<string, Handler>();
  readonly #outgoing = new Map<number, OutgoingCall>();
  readonly #incoming = new Map<number, IncomingCall>();
  readonly #streams = new Map<number, SessionStream>();
  /** Work queued until the handshake completes. */
  #afterHandshake: (() => void)[] = [];
  #nextId: number;
  /** The highest call or stream id the peer has allocated; lower unknown ids are closed ones. */
  #highestPeerId = 0;

  #sessionSendCredit = 0;
  #sessionReceiveWindow: number;
  #sessionUngranted = 0;
  #maxDataFrame = DEFAULT_MAX_DATA_FRAME_BYTES;
  readonly #withOutput = new Set<SessionStream>();
  #pumping = false;

  /**
   * Frames waiting to be written. Headers and small payloads are copied into a slab, so a batch of
   * small frames goes out as one buffer (one write instead of a writev of many small ones, which
   * costs Node far more); large payloads are queued as they are, uncopied. A slab's bytes are
   * never written twice: what was handed to the transport stays as it was.
   */

  readonly #deadlines: DeadlineQueue;
  #goawaySent = false;
  #goawayReceived = false;
  #closeRequested: Deferred<void> | undefined;
  /**
   * One side cannot see the connection end (a guest on a virtio-serial port, which said so with
   * `confirmsClose`), and the port loses what the host sent last if it hangs up before the guest
   * read it. So while closing, each side acknowledges every frame at once, and a side that is
   * done waits (up to ERROR_LINGER_MS) until the peer has acknowledged all it sent before it
   * goes: its last RESET or GOAWAY is known to have arrived. Otherwise the guest would hold a
   * stream, and so the session, open until keepalive gave up on the host.
   */
  #closeConfirmed = false;
  #closeLinger: Timer | undefined;
  /** Notification handlers still running (calls are counted in `#incoming`). */
  #notificationsRunning = 0;
  /** Settled when the read loop, paused by `#mustPauseReading`, may read on. */
  #readWaiter: Deferred<void> | undefined;

  /**
   * Runs a session over `transport`. `inBand` is for `SessionRegistry` only: a connection the
   * peer began in mid-stream, read by the session whose connection it follows with `decoder`.
   */
  constructor(transport: Transport, options: SessionOptions, inBand?: { decoder: FrameDecoder }) {
    this.options = resolveSessionOptions(options);
    const o = this.options;
    this.#nextId = o.role === "client" ? 1 : 2;
    this.#sessionReceiveWindow = o.sessionWindowBytes;
    this.#deadlines = new DeadlineQueue(o.runtime.clock);
    this.#registry = o.registry;
    this.#description = transport.description;
    this.#link = this.#newLink(transport, inBand?.decoder);
    // The HELLO is always checksummed: whether to go without is agreed in it (9.1).
    this.#outbox = new Outbox(
      transport,
      new FrameEncoder({ payloadChecksum: true, checksum: o.checksum }),
      {
        failed: (err, t) => {
          if (this.#link?.transport === t) this.#linkLost(this.#link, err);
        },
        drained: () => {
          this.#pump();
          this.#wakeReader();
        },
      },
      o.replayBufferBytes,
    );
    this.#rx = new ReceiveSequence(o.runtime.clock, {
      askResend: (received) => {
        this.stats.resendAsks++;
        this.#sendControl(FrameType.ACK, 0, { received, resend: true }, false);
      },
      unhealed: (expected, asks) =>
        this.#framesLost(
          `frame ${expected} from ${this.#description} was lost and ${asks} requests to send it again did not bring it`,
          { expected, asks },
        ),
      rttMs: () => this.#link?.keepalive?.srttMs,
    });
    this.#sessionId = o.runtime.randomId();
    this.#resumeToken = o.runtime.randomId();
    // Defer the HELLO so handlers registered right after construction are advertised.
    if (inBand === undefined) Promise.resolve().then(() => this.#start());
  }

  // ---- public API ----------------------------------------------------------------------------

  /** Resolves with the peer's identity once the handshake is done; rejects if it fails. */
  get ready(): Promise<PeerInfo> {
    return this.#readyDeferred.promise;
  }

  /** Resolves when the session has ended: with undefined after a clean close, else the error. */
  get closed(): Promise<GuestlinkError | undefined> {
    return this.#closedDeferred.promise;
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
    return this.#link && connectionOf(this.#link);
  }

  /** Sent frames kept until the peer acknowledges them (resume only). */
  get replayBuffer(): { frames: number; bytes: number } {
    return this.#outbox.kept;
  }

  /** Last measured round-trip time in ms, from keepalive. */
  get rttMs(): number | undefined {
    return this.#link?.keepalive?.rttMs;
  }

  /** The peer's wall clock minus ours, corrected for half the round trip. */
  get clockOffsetMs(): number | undefined {
    return this.#link?.keepalive?.clockOffsetMs;
  }

  /** The decoders' counters, over every connection: garbage skipped, bad headers and payloads. */
  get wireStats(): DecoderStats {
    return this.#link
      ? sumDecoderStats(this.#wireTotals, this.#link.decoder.stats)
      : this.#wireTotals;
  }

  /** Whether the peer is making progress, only answering keepalive, or out of reach. */
  get liveness(): Liveness {
    if (this.#link === undefined || this.#link.handshaking) return "disconnected";
    return this.#stalled ? "stalled" : "alive";
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
    const refuse = (err: GuestlinkError) => {
      transport.abort(err);
      throw err;
    };
    if (this.#state === "closed")
      refuse(new GuestlinkError("SESSION_CLOSED", "the session is closed"));
    if (!this.options.resume || this.#registry !== undefined || this.#state === "handshaking") {
      refuse(
        new GuestlinkError(
          "INVALID_OPTION",
          "reconnect() needs a session with resume whose first handshake is done, on the side that dials",
        ),
      );
    }
    if (this.#link !== undefined) {
      this.#disconnect(
        this.#link,
        new GuestlinkError("TRANSPORT_FAILED", "replaced by a new connection"),
      );
    }
    const link = this.#newLink(transport);
    this.#link = link;
    this.#description = transport.description;
    this.#sayHello(link);
    if (!link.over) {
      this.#armHandshakeTimer(link);
      void this.#readLoop(link);
    }
    return connectionOf(link);
  }

  /** Serves `method`. The handler's return value (or thrown error) is the call's outcome. */
  handle(method: string, handler: Handler): this {
    this.#handlers.set(method, handler);
    return this;
  }

  /** Calls `method` on the peer and resolves with its result. */
  call(method: string, params?: unknown, options: CallOptions = {}): Promise<unknown> {
    return this.open(method, params, options).result;
  }

  /** Sends a one-way notification; the peer runs its handler and sends nothing back. */
  notify(method: string, params?: unknown): void {
    this.#assertCanStartCall();
    const payload = encodeControl({ method, params, notify: true });
    this.#whenOpen(() => {
      try {
        this.#send(FrameType.CALL, 0, payload);
      } catch {
        // Too large for the peer: a notification has no reply to carry the error, so count it.
        this.stats.notificationErrors++;
      }
    });
  }

  /** Starts a call with streams; see `OpenCall`. */
  open(method: string, params?: unknown, options: OpenOptions = NO_OPTIONS): OpenCall {
    const signal = options.signal;
    const now = this.options.runtime.clock.now();
    const streamNames = options.streams ?? NO_NAMES;
    const deadline = options.deadline ?? now + this.options.defaultCallTimeoutMs;
    const remaining = deadline - now;

    // Refused before anything is allocated or sent: its streams are born failed.
    let failure: GuestlinkError | undefined;
    let payload: Uint8Array | undefined;
    try {
      this.#assertCanStartCall();
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
    const id = failure ? 0 : this.#allocateId();
    const streams: Record<string, SessionStream> = {};
    let streamList = NO_STREAMS;
    let streamIds: Record<string, number> | undefined;
    if (streamNames.length > 0) {
      streamIds = {};
      for (const name of streamNames) {
        const stream = failure
          ? this.#detachedStream(name)
          : this.#newStream(this.#allocateId(), name);
        streams[name] = stream;
        streamIds[name] = stream.id;
      }
      streamList = Object.values(streams);
    }
    if (!failure) {
      // Built field by field, in the order the wire has always had them.
      const message: {
        method: string;
        params: unknown;
        timeoutMs?: number;
        streams?: Record<string, number>;
      } = { method, params };
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
      for (const s of streamList) {
        this.#streams.delete(s.id);
        s.fail(err);
      }
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
            {
              details: { timeoutMs: remaining },
            },
          ),
          "deadline exceeded",
        ),
      );
    }
    if (this.#state === "handshaking") {
      const frame = payload;
      this.#afterHandshake.push(() => {
        // The call may have been cancelled while the handshake was still going on.
        if (!call.settled) this.#sendCall(id, frame);
      });
    } else if (this.#state !== "closed") {
      this.#sendCall(id, payload);
    }
    return call;
  }

  readonly #cancelHook: CancelOutgoing = (call, err, reason) =>
    this.#cancelOutgoing(call, err, reason);

  /** Settles a call here (cancelled, or its deadline passed) and tells the peer to stop it. */
  #cancelOutgoing(call: OutgoingCall, err: GuestlinkError, reason: string): void {
    const id = call.id;
    if (call.settled || this.#outgoing.get(id) !== call) return;
    call.settled = true;
    call.cleanup();
    // The peer stops the work and ends or resets the streams as part of confirming; they stay
    // readable until then, so output produced up to the cancel still arrives.
    this.#whenOpen(() =>
      this.#sendControl(FrameType.CANCEL, id, {
        reason,
        code: err.code === "DEADLINE_EXCEEDED" ? err.code : "CANCELLED",
      }),
    );
    call.reject(err);
  }

  /**
   * Closes gracefully: tells the peer (GOAWAY), starts no new calls, lets calls and streams in
   * flight in both directions finish, then closes the transport.
   */
  close(): Promise<void> {
    if (this.#state === "closed") return Promise.resolve();
    if (!this.#closeRequested) {
      this.#closeRequested = deferred<void>();
      this.#whenOpen(() => {
        if (!this.#goawaySent) {
          this.#goawaySent = true;
          this.#sendControl(FrameType.GOAWAY, 0, { reason: "closing" });
        }
        if (this.#state === "open") this.#state = "closing";
        this.#maybeFinishClosing();
      });
    }
    return this.#closeRequested.promise;
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
    const told = this.#link !== undefined && !this.#link.handshaking && this.#state !== "closed";
    if (told) {
      this.#sendControl(FrameType.ERROR, 0, { code: err.code, message: err.message }, false);
      this.#outbox.flush(true);
    }
    this.#end(err, told);
  }

  // ---- StreamOwner ---------------------------------------------------------------------------

  streamHasOutput(stream: SessionStream): void {
    this.#withOutput.add(stream);
    this.#pump();
  }

  streamConsumed(stream: SessionStream, bytes: number): void {
    if (this.#state === "closed") return;
    const o = this.options;
    if (!stream.closed && !stream.remoteEnded) {
      stream.ungranted += bytes;
      if (stream.ungranted >= o.streamWindowBytes / 2) {
        stream.receiveWindow += stream.ungranted;
        this.#sendControl(FrameType.WINDOW, stream.id, { credit: stream.ungranted });
        stream.ungranted = 0;
      }
    }
    this.#grantSession(bytes);
  }

  streamReset(stream: SessionStream, code: string, message: string): void {
    if (this.#state !== "closed") this.#sendControl(FrameType.RESET, stream.id, { code, message });
    this.#release(stream);
  }

  // ---- starting ------------------------------------------------------------------------------

  /** A new connection; `decoder` carries on one that began on the same transport. */
  #newLink(transport: Transport, decoder?: FrameDecoder): Link {
    const o = this.options;
    return {
      transport,
      decoder:
        decoder ??
        new FrameDecoder({
          maxFrameBytes: o.maxFrameBytes,
          checksum: o.checksum,
          requirePayloadChecksum: true,
        }),
      owner: this,
      handshaking: true,
      nonce: this.#registry === undefined ? o.runtime.randomId() : undefined,
      peerNonce: undefined,
      successor: undefined,
      hintedAt: Number.NEGATIVE_INFINITY,
      over: false,
      keepalive: undefined,
      handshakeTimer: undefined,
      helloTimer: undefined,
      framesAtLastTick: 0,
      damageSeen: 0,
      progressSeq: 0,
      progressAt: o.runtime.clock.now(),
      startedAt: o.runtime.clock.now(),
      ready: deferred<void>(),
      lost: deferred<GuestlinkError | undefined>(),
    };
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

  /** Our HELLO: on `link` when dialling (it carries the link's nonce), else `extra` answers. */
  #helloMessage(link: Link | undefined, extra?: Partial<Hello>): Hello {
    const o = this.options;
    const hello: Hello = {
      protocol: [PROTOCOL_VERSIONS[0], PROTOCOL_VERSIONS[1]],
      peer: o.peer,
      services: o.services ?? [...this.#handlers.keys()],
      limits: {
        maxFrameBytes: o.maxFrameBytes,
        streamWindowBytes: o.streamWindowBytes,
        sessionWindowBytes: o.sessionWindowBytes,
      },
      sessionId: this.#sessionId,
      resumeToken: this.#resumeToken,
      incarnation: o.runtime.incarnation,
      wallTime: o.runtime.clock.wallNow(),
      ...extra,
    };
    if (link?.nonce !== undefined) hello.nonce = link.nonce;
    if (link !== undefined && this.#wantsUnchecked(link)) hello.uncheckedPayloads = true;
    if (this.#resumeFrom !== undefined && this.#registry === undefined) {
      hello.resume = { ...this.#resumeFrom, received: this.#rx.received };
    }
    return hello;
  }

  #start(): void {
    const link = this.#link;
    if (this.#state === "closed" || link === undefined) return;
    // A side that accepts waits for the peer's HELLO: it may ask to resume another session.
    if (this.#registry === undefined) this.#sayHello(link);
    if (link.over) return;
    this.#armHandshakeTimer(link);
    void this.#readLoop(link);
  }

  /**
   * The dialling side's HELLO on `link`, straight to the transport (nothing else may precede
   * it), said again each HELLO_REPEAT_MS until the peer answers (see there).
   */
  #sayHello(link: Link): void {
    try {
      link.transport.send([this.#unsequenced(FrameType.HELLO, this.#helloMessage(link))]);
    } catch (err) {
      this.#linkLost(link, toGuestlinkError(err));
      return;
    }
    this.stats.framesSent++;
    link.helloTimer = this.options.runtime.clock.setTimer(HELLO_REPEAT_MS, () => {
      if (link.handshaking && !link.over) this.#sayHello(link);
    });
  }

  #armHandshakeTimer(link: Link): void {
    link.handshakeTimer = this.options.runtime.clock.setTimer(this.options.handshakeTimeoutMs, () =>
      this.#handshakeTimedOut(link),
    );
  }

  #handshakeTimedOut(link: Link): void {
    if (!link.handshaking || link.over) return;
    // The peer's HELLO may sit inside a stale frame left in the pipe: give up on that frame once.
    for (const frame of link.decoder.resync()) {
      link.owner.#onFrame(link, frame);
      if (link.over) return;
    }
    if (!link.handshaking || link.over) return;
    if (this.#registry !== undefined && link.transport.reconnectsInBand) {
      // A guest's port with no host yet: wait on, checking again for a HELLO behind stale bytes.
      this.#armHandshakeTimer(link);
      return;
    }
    const err = new GuestlinkError(
      "HANDSHAKE_TIMEOUT",
      `no handshake from ${link.transport.description} within ${this.options.handshakeTimeoutMs} ms: is a guestlink peer on the other end?`,
      { details: { skippedBytes: link.decoder.stats.skippedBytes } },
    );
    if (this.#canResume()) this.#disconnect(link, err);
    else this.#end(err);
  }

  async #readLoop(first: Link): Promise<void> {
    let failure: GuestlinkError | undefined;
    let link = first;
    try {
      for await (const chunk of link.transport) {
        if (link.over) return;
        const frames = link.decoder.push(chunk);
        // Once per read, not per frame: it reads the clock, and a read is one moment anyway.
        if (frames.length > 0) link.keepalive?.heard();
        for (const frame of frames) {
          link.owner.#onFrame(link, frame);
          // The peer may have begun a new connection on this transport: read on for that one.
          while (link.over) {
            if (link.successor === undefined) return;
            link = link.successor;
          }
        }
        const owner = link.owner;
        owner.#noticeDamage(link);
        owner.#maybeAck(false);
        // A peer that floods us with calls, or does not read what we answer, waits here: not
        // reading is the backpressure that reaches it through the transport.
        while (owner.#mustPauseReading() && !link.over) await owner.#readingResumed();
      }
    } catch (err) {
      failure = isGuestlinkError(err)
        ? err
        : new GuestlinkError(
            "SESSION_CLOSED",
            `connection to ${link.transport.description} failed`,
            {
              cause: err,
            },
          );
    }
    link.owner.#linkLost(link, failure);
  }

  /**
   * After a read: if the decoder dropped a frame or a header since the last look, something sent
   * on this connection may be lost; the peer is asked at once to send it again, as the next frame
   * (which would show the gap) may be long in coming.
   */
  #noticeDamage(link: Link): void {
    const stats = link.decoder.stats;
    const damage = stats.badPayloads + stats.badHeaders + stats.abandoned;
    if (damage === link.damageSeen) return;
    link.damageSeen = damage;
    if (link === this.#link && !link.handshaking && this.#state !== "closed") this.#rx.damaged();
  }

  /**
   * Whether to stop reading from the peer: as many of its calls as we run at once are running,
   * or what we owe it has piled up because it does not read.
   */
  #mustPauseReading(): boolean {
    return (
      this.#state !== "closed" &&
      (this.#incoming.size + this.#notificationsRunning >= this.options.maxIncomingCalls ||
        this.#outbox.queuedBytes >= this.options.maxQueuedBytes)
    );
  }

  #readingResumed(): Promise<void> {
    this.#readWaiter ??= deferred<void>();
    return this.#readWaiter.promise;
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

  /** Whether a lost connection leaves this session waiting for another (instead of ending it). */
  #canResume(): boolean {
    return (
      this.options.resume !== false && this.#state !== "handshaking" && this.#state !== "closed"
    );
  }

  /** The connection ended (`err` undefined: the peer closed it) or writing to it failed. */
  #linkLost(link: Link, err: GuestlinkError | undefined): void {
    if (link.over || link !== this.#link || this.#state === "closed") return;
    const busy = this.#outgoing.size + this.#incoming.size + this.#streams.size;
    const where = link.transport.description;
    if (this.#canResume() && !(busy === 0 && (this.#goawayReceived || this.#goawaySent))) {
      this.#disconnect(
        link,
        err ?? new GuestlinkError("TRANSPORT_FAILED", `${where} closed the connection`),
      );
      return;
    }
    if (this.#state === "handshaking") {
      // Nothing answered as a guestlink peer. A port a hypervisor forwards (QEMU's hostfwd)
      // takes connections and drops them until the agent in the guest listens: marked, so a
      // caller can tell this from a broken session and dial again (`dialAgain`, where the
      // transport says a drop may mean the peer is not up yet).
      const mark = { beforeHandshake: true, dialAgain: link.transport.dropsBeforePeer === true };
      if (err === undefined) {
        this.#end(
          new GuestlinkError(
            "SESSION_CLOSED",
            `${where} closed the connection during the handshake`,
            { details: mark },
          ),
        );
        return;
      }
      // The transport's own error, of its own class, made for this failure: marked in place.
      (err as { details: Record<string, unknown> }).details = { ...err.details, ...mark };
      this.#end(err);
      return;
    }
    if (err !== undefined) {
      this.#end(err);
      return;
    }
    if (busy === 0) {
      this.#end(undefined);
      return;
    }
    this.#end(
      new GuestlinkError(
        "SESSION_CLOSED",
        `${where} closed the connection with ${busy} calls and streams in flight`,
      ),
    );
  }

  /** Stops using `link`: its frames are ignored from now on and its counters are kept. */
  #dropLink(link: Link, err: GuestlinkError | undefined): void {
    if (link.over) return;
    link.over = true;
    this.#wakeReader(true);
    link.keepalive?.stop();
    link.handshakeTimer?.cancel();
    link.helloTimer?.cancel();
    // A decoder that a successor carries on with is counted when that one is dropped.
    if (link.successor === undefined) {
      this.#wireTotals = sumDecoderStats(this.#wireTotals, link.decoder.stats);
    }
    link.ready.reject(err ?? new GuestlinkError("SESSION_CLOSED", "the session was closed"));
    link.lost.resolve(err);
  }

  /** The connection is gone; the session waits up to the resume window for another. */
  #disconnect(link: Link, err: GuestlinkError, abortTransport = true): void {
    this.#dropLink(link, err);
    if (abortTransport) link.transport.abort(err);
    if (this.#link !== link) return;
    this.#link = undefined;
    this.#outbox.detach();
    this.#rx.newConnection();
    // Waiting for the peer's ACKs is over with the connection; a resume asks again.
    this.#closeLinger?.cancel();
    this.#closeLinger = undefined;
    const resume = this.options.resume;
    if (resume === false) return;
    const clock = this.options.runtime.clock;
    this.#lostAt = clock.now();
    this.#resumeTimer?.cancel();
    this.#resumeTimer = clock.setTimer(resume.windowMs, () =>
      this.#end(
        new GuestlinkError(
          "RESUME_FAILED",
          `the connection to ${this.#description} was lost and not restored within ${resume.windowMs} ms (${err.message})`,
          { details: { reason: "timeout", windowMs: resume.windowMs }, cause: err },
        ),
      ),
    );
    this.#emit({ type: "disconnected", error: err });
  }

  // ---- receiving -----------------------------------------------------------------------------

  #onFrame(link: Link, frame: Frame): void {
    if (link !== this.#link) return;
    this.stats.framesReceived++;
    if (link.handshaking) {
      if (frame.type === FrameType.HELLO) this.#onHello(link, frame);
      else if (frame.type === FrameType.ERROR && frame.streamId === 0)
        this.#onSessionError(link, frame);
      else this.#staleFrame(link);
      return;
    }
    if (!isFrameType(frame.type)) {
      this.#protocolError("UNKNOWN_FRAME_TYPE", `unknown frame type ${frame.type}`);
      return;
    }
    if (
      isSequenced(frame.type, frame.streamId) &&
      this.#rx.arrive(frame.seq, HEADER_BYTES + frame.payload.length) !== Arrival.NEXT
    ) {
      return; // a duplicate (replayed), or after a gap: what is missing is asked for again
    }
    switch (frame.type) {
      case FrameType.HELLO: {
        // The dialler says HELLO again until it hears an answer: a repeat is nothing new.
        if (isRepeatOf(link.peerNonce, frame)) return;
        if (link.transport.reconnectsInBand && this.#registry !== undefined) {
          this.#helloInBand(link, frame);
          return;
        }
        this.#protocolError("DUPLICATE_HELLO", "a second HELLO on the same connection");
        return;
      }
      case FrameType.CALL:
        this.#onCall(frame);
        return;
      case FrameType.RESULT:
      case FrameType.ERROR:
        this.#onReply(frame);
        return;
      case FrameType.CANCEL:
        this.#onCancel(frame);
        return;
      case FrameType.DATA:
        this.#onData(frame);
        return;
      case FrameType.WINDOW:
        this.#onWindow(frame);
        return;
      case FrameType.END:
        this.#onEnd(frame);
        return;
      case FrameType.RESET:
        this.#onReset(frame);
        return;
      case FrameType.PING: {
        const ping = this.#parse<{ sentAt: number }>(PingSchema, frame);
        if (ping) {
          const wallTime = this.options.runtime.clock.wallNow();
          this.#sendControl(FrameType.PONG, 0, { sentAt: ping.sentAt, wallTime }, false);
        }
        return;
      }
      case FrameType.PONG: {
        const pong = this.#parse<{ sentAt: number; wallTime: number }>(PongSchema, frame);
        if (pong) link.keepalive?.pong(pong.sentAt, pong.wallTime);
        return;
      }
      case FrameType.ACK: {
        const ack = this.#parse<{ received: number; resend?: boolean }>(AckSchema, frame);
        if (!ack) return;
        if (ack.received > this.#outbox.lastSeq) {
          this.#protocolError(
            "BAD_ACK",
            `ACK of frame ${ack.received}, but only ${this.#outbox.lastSeq} were sent`,
          );
          return;
        }
        if (ack.resend === true) {
          this.#resendAfter(ack.received);
          return;
        }
        this.#outbox.ack(ack.received);
        if (this.#closeLinger !== undefined) this.#maybeFinishClosing();
        return;
      }
      case FrameType.GOAWAY:
        if (!this.#parse(GoawaySchema, frame)) return;
        this.#goawayReceived = true;
        if (this.#state === "open") this.#state = "closing";
        this.#maybeFinishClosing();
        return;
    }
  }

  /**
   * Decodes and validates a control payload; on failure ends the session and returns undefined.
   * `quick` is a hand-written check of the schema for the messages of every call: when it says
   * yes, the payload is the message as it is; otherwise the schema decides (and says why not).
   */
  #parse<T>(
    schema: Parameters<typeof parseMessage>[0],
    frame: Frame,
    quick?: (input: Record<string, unknown>) => boolean,
  ): T | undefined {
    let value: Record<string, unknown>;
    try {
      value = decodeControl(frame.payload);
    } catch (err) {
      this.#protocolError(
        "BAD_CONTROL_PAYLOAD",
        `${frameTypeName(frame.type)}: ${(err as Error).message}`,
      );
      return undefined;
    }
    if (quick?.(value)) return value as T;
    const parsed = parseMessage(schema, value);
    if (!parsed.ok) {
      this.#protocolError("BAD_MESSAGE", `${frameTypeName(frame.type)}: ${parsed.problem}`);
      return undefined;
    }
    return parsed.value as T;
  }

  #onHello(link: Link, frame: Frame): void {
    const hello = this.#parse<Hello>(HelloSchema, frame);
    if (!hello) return;
    if (hello.answers !== undefined && hello.answers !== link.nonce) {
      // An answer to an earlier connection, which the transport kept (a virtio-serial port). A
      // HELLO without `answers` comes from a peer that spoke first too: it answers nothing.
      this.#staleFrame(link);
      return;
    }
    link.handshakeTimer?.cancel();
    link.helloTimer?.cancel();
    link.peerNonce = hello.nonce;
    const [ourLow, ourHigh] = PROTOCOL_VERSIONS;
    const [theirLow, theirHigh] = hello.protocol;
    const version = Math.min(ourHigh, theirHigh);
    if (version < Math.max(ourLow, theirLow)) {
      const message = `incompatible protocol versions: this side speaks ${ourLow}..${ourHigh}, the peer ${theirLow}..${theirHigh}; upgrade the older side`;
      this.#sendControl(FrameType.ERROR, 0, { code: "VERSION_MISMATCH", message }, false);
      this.#outbox.flush(true);
      this.#end(
        new GuestlinkError("VERSION_MISMATCH", message, {
          details: { ours: PROTOCOL_VERSIONS, theirs: hello.protocol },
        }),
        true,
      );
      return;
    }
    if (this.#state === "handshaking") {
      const registry = this.#registry;
      if (registry !== undefined) {
        // We accepted this connection: the peer may be coming back to a session of ours.
        let refusal: ResumeRefusal | undefined;
        if (hello.resume !== undefined) {
          const target = registry.find(hello.resume.sessionId);
          refusal =
            target === undefined || target === this
              ? {
                  reason: "unknown-session",
                  message: "this side has no such session: it restarted, or the session expired",
                }
              : target.#adopt(link, hello);
          if (refusal === undefined) {
            this.#handedOver();
            return;
          }
        }
        registry.opened(this);
        if (this.#isClosed()) return;
        const answer: Partial<Hello> = refusal === undefined ? {} : { resumeRefused: refusal };
        if (hello.nonce !== undefined) answer.answers = hello.nonce;
        if (this.#seesNoEnd(link)) answer.confirmsClose = true;
        this.#sendControl(FrameType.HELLO, 0, this.#helloMessage(link, answer), false);
      }
      this.#open(link, hello, version);
      return;
    }
    // We dialled again: did the peer resume our session?
    const old = this.#peer as PeerInfo;
    const same = hello.sessionId === old.sessionId && hello.incarnation === old.incarnation;
    if (this.#resumeFrom !== undefined && hello.resumed !== undefined && same) {
      if (this.#outbox.canReplayFrom(hello.resumed.received)) {
        this.#closeConfirmed = this.#confirmsClose(link, hello);
        this.#resumeOn(link, hello, hello.resumed.received, undefined);
        return;
      }
      const err = this.#replayExceeded(hello.resumed.received);
      this.#sendDirect(link, FrameType.ERROR, { code: "RESUME_FAILED", message: err.message });
      this.#restart(err);
      this.#disconnect(link, err);
      return;
    }
    if (this.#resumeFrom !== undefined) {
      const lost = this.#outgoing.size + this.#incoming.size + this.#streams.size;
      const why =
        hello.incarnation !== old.incarnation
          ? `${this.#description} restarted (a new process), so the session could not be resumed`
          : `${this.#description} could not resume the session: ${hello.resumeRefused?.message ?? "no reason given"}`;
      this.#restart(
        new GuestlinkError(
          "RESUME_FAILED",
          `${why}; ${lost} calls and streams in flight were lost`,
          {
            details: {
              reason:
                hello.incarnation !== old.incarnation
                  ? "peer-restarted"
                  : (hello.resumeRefused?.reason ?? "refused"),
              lost,
            },
          },
        ),
      );
    }
    this.#outbox.attach(link.transport, undefined, 0);
    this.#open(link, hello, version);
  }

  /**
   * Whether this side asks to go without payload checksums on `link`: only when told to, and
   * never when it receives over a pipe that can damage bytes.
   */
  #wantsUnchecked(link: Link): boolean {
    return !this.options.payloadChecksum && link.transport.lossy !== true;
  }

  /**
   * Payload checksums on `link`, both ways: off only when both HELLOs asked to go without (9.1).
   * Otherwise every payload we send carries one, and one that arrives without is dropped.
   * Frames kept for replay go out again as they were encoded.
   */
  #agreeChecksums(link: Link, hello: Hello): void {
    const unchecked = this.#wantsUnchecked(link) && hello.uncheckedPayloads === true;
    link.decoder.requirePayloadChecksum = !unchecked;
    this.#outbox.encoder = new FrameEncoder({
      payloadChecksum: !unchecked,
      checksum: this.options.checksum,
      maxFrameBytes: Math.max(1024, Math.min(hello.limits.maxFrameBytes, 64 * 1024 * 1024)),
    });
  }

  /** Whether this side cannot see `link` end: it accepted it on a guest's virtio-serial port. */
  #seesNoEnd(link: Link): boolean {
    return this.#registry !== undefined && link.transport.reconnectsInBand === true;
  }

  /** Whether closing on `link` waits for ACKs (see `#closeConfirmed`): either side says so. */
  #confirmsClose(link: Link, peerHello: Hello): boolean {
    return peerHello.confirmsClose === true || this.#seesNoEnd(link);
  }

  /** The handshake on `link` is done and this is a session from the start: take the peer's terms. */
  #open(link: Link, hello: Hello, version: number): void {
    const o = this.options;
    this.#closeConfirmed = this.#confirmsClose(link, hello);
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
    if (o.resume !== false)
      this.#resumeFrom = { sessionId: hello.sessionId, token: hello.resumeToken };
    // Send what the peer can take: frames up to its limit, bytes up to its windows.
    this.#agreeChecksums(link, hello);
    this.#maxDataFrame = Math.min(DEFAULT_MAX_DATA_FRAME_BYTES, hello.limits.maxFrameBytes);
    this.#sessionSendCredit = hello.limits.sessionWindowBytes;
    for (const stream of this.#streams.values()) stream.sendCredit = hello.limits.streamWindowBytes;
    link.handshaking = false;
    if (this.#state === "handshaking") this.#state = "open";
    this.#startKeepalive(link);
    const queued = this.#afterHandshake;
    this.#afterHandshake = [];
    for (const fn of queued) fn();
    this.#readyDeferred.resolve(this.#peer);
    link.ready.resolve();
    this.#pump();
  }

  #startKeepalive(link: Link): void {
    const o = this.options;
    if (!o.keepalive) return;
    const deadAfterMs = o.keepalive.deadAfterMs;
    link.keepalive = new Keepalive(o.runtime.clock, o.keepalive, {
      sendPing: (sentAt) => this.#sendControl(FrameType.PING, 0, { sentAt }, false),
      notReading: () => this.#readWaiter !== undefined,
      tick: () => {
        this.#checkStuckFrame(link);
        this.#checkProgress(link, deadAfterMs);
        this.#maybeAck(true);
      },
      peerDead: (silentForMs) =>
        this.#end(
          new GuestlinkError(
            "PEER_UNRESPONSIVE",
            `${link.transport.description} has not answered for ${Math.round(silentForMs)} ms; it is presumed dead`,
            { details: { silentForMs, deadAfterMs } },
          ),
        ),
    });
    link.keepalive.start();
  }

  /**
   * A peer that dialled again asks this session (one of a registry's) to go on over `link`.
   * Returns why not, or undefined once the session has taken the connection over.
   */
  #adopt(link: Link, hello: Hello): ResumeRefusal | undefined {
    const ask = hello.resume as NonNullable<Hello["resume"]>;
    if (
      this.#state === "closed" ||
      ask.token !== this.#resumeToken ||
      hello.incarnation !== this.#peer?.incarnation
    ) {
      return { reason: "unknown-session", message: "this side has no such session to resume" };
    }
    if (!this.#outbox.canReplayFrom(ask.received)) {
      const err = this.#replayExceeded(ask.received);
      this.#end(err);
      return { reason: "replay-exceeded", message: err.message };
    }
    if (this.#link !== undefined) {
      // The old connection has not noticed it is gone yet (a half-open TCP): this one wins.
      const old = this.#link;
      this.#dropLink(old, new GuestlinkError("TRANSPORT_FAILED", "replaced by a new connection"));
      old.transport.abort();
    }
    link.owner = this;
    this.#link = link;
    this.#description = link.transport.description;
    this.#closeConfirmed = this.#confirmsClose(link, hello);
    const answer = this.#helloMessage(link, {
      resumed: { received: this.#rx.received },
      ...(hello.nonce === undefined ? {} : { answers: hello.nonce }),
      ...(this.#closeConfirmed ? { confirmsClose: true } : {}),
    });
    this.#resumeOn(link, hello, ask.received, this.#unsequenced(FrameType.HELLO, answer));
    return undefined;
  }

  /** Goes on over `link`: everything after `received` is sent again, after `first` if given. */
  #resumeOn(link: Link, hello: Hello, received: number, first: Uint8Array | undefined): void {
    this.#resumeTimer?.cancel();
    this.#resumeTimer = undefined;
    link.handshaking = false;
    this.#agreeChecksums(link, hello);
    this.#rx.newConnection();
    const replayed = this.#outbox.attach(link.transport, first, received);
    this.#startKeepalive(link);
    const now = this.options.runtime.clock.now();
    this.#emit({
      type: "resumed",
      downMs: now - this.#lostAt,
      handshakeMs: now - link.startedAt,
      replayedFrames: replayed.frames,
      replayedBytes: replayed.bytes,
    });
    link.ready.resolve();
    this.#pump();
    this.#maybeFinishClosing();
  }

  #replayExceeded(received: number): GuestlinkError {
    const limit = this.options.replayBufferBytes;
    return new GuestlinkError(
      "RESUME_FAILED",
      `the session could not be resumed: frames after ${received} that the peer lacks were dropped from the replay buffer (${limit} bytes); raise resume.replayBufferBytes`,
      { details: { reason: "replay-exceeded", received, replayBufferBytes: limit } },
    );
  }

  /** An accepted connection that resumed another session: this one ends without a word. */
  #handedOver(): void {
    this.#state = "closed";
    this.#link = undefined;
    this.#outbox.stop();
    this.#deadlines.clear();
    const gone = new GuestlinkError("SESSION_CLOSED", "the connection resumed another session");
    this.#readyDeferred.reject(gone);
    this.#closedDeferred.resolve(undefined);
  }

  /**
   * The peer could not resume: everything in flight fails with `err`, numbering starts again,
   * and the session goes on with whoever answers next.
   */
  #restart(err: GuestlinkError): void {
    this.#epoch++;
    this.#failPending(err);
    this.#outbox.reset();
    this.#rx.reset();
    this.#highestPeerId = 0;
    this.#sessionReceiveWindow = this.options.sessionWindowBytes;
    this.#sessionUngranted = 0;
    this.#resumeFrom = undefined;
    this.#emit({ type: "restarted", error: err });
  }

  /** Fails every call and stream in flight with `reason`. */
  #failPending(reason: GuestlinkError): void {
    for (const call of this.#outgoing.values()) {
      call.cleanup();
      if (!call.settled) call.reject(reason);
      call.confirm(undefined, reason);
    }
    this.#outgoing.clear();
    for (const call of this.#incoming.values()) call.abort(reason);
    this.#incoming.clear();
    for (const stream of this.#streams.values()) {
      stream.fail(reason);
      stream.releaseUnconsumed();
    }
    this.#streams.clear();
    this.#withOutput.clear();
    this.#wakeReader();
  }

  /** One unnumbered control frame on stream 0, encoded to write ahead of the numbered ones. */
  #unsequenced(type: FrameType, value: unknown): Uint8Array {
    return this.#outbox.encoder.encode({
      type,
      streamId: 0,
      seq: 0,
      payload: encodeControl(value),
    });
  }

  /** Writes one control frame straight to `link`, ahead of (and outside) the numbered frames. */
  #sendDirect(link: Link, type: FrameType, value: unknown): void {
    try {
      link.transport.send([this.#unsequenced(type, value)]);
    } catch {
      // The connection is going anyway.
    }
  }

  /**
   * Once per keepalive interval: with calls or streams waiting on the peer and no frame of theirs
   * arriving for `stallAfterMs`, the peer is stalled (it still answers PINGs, or it would be dead).
   */
  #checkProgress(link: Link, stallAfterMs: number): void {
    const now = this.options.runtime.clock.now();
    const waiting = this.#outgoing.size > 0 || this.#streams.size > 0;
    if (!waiting || this.#rx.expected !== link.progressSeq) {
      link.progressSeq = this.#rx.expected;
      link.progressAt = now;
      if (this.#stalled) {
        this.#stalled = false;
        this.#emit({ type: "progressing" });
      }
    } else if (!this.#stalled && now - link.progressAt >= stallAfterMs) {
      this.#stalled = true;
      this.#emit({ type: "stalled", forMs: now - link.progressAt });
    }
  }

  /** Tells the peer what has arrived, so it can forget it (`force`: if anything). */
  #maybeAck(force: boolean): void {
    if (this.#link === undefined || this.#link.handshaking) return;
    const closing = this.#closeConfirmed && (this.#goawaySent || this.#goawayReceived);
    if (!this.#rx.takeAck(force || closing)) return;
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
        `${this.#description} lost frames after ${received} that are no longer kept for sending again (replay buffer ${this.options.replayBufferBytes} bytes)`,
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
    const link = this.#link;
    if (link === undefined) return;
    const err = new GuestlinkError("FRAMES_LOST", message, {
      details: { ...details, wire: { ...link.decoder.stats } },
    });
    if (this.#canResume()) this.#disconnect(link, err);
    else this.#end(err);
  }

  /** A frame that stopped arriving mid-way for a whole keepalive interval was stale: rescan it. */
  #checkStuckFrame(link: Link): void {
    const received = this.stats.framesReceived;
    if (received === link.framesAtLastTick && link.decoder.bufferedBytes > 0) {
      const frames = link.decoder.resync();
      if (frames.length > 0) link.keepalive?.heard();
      for (const frame of frames) {
        this.#onFrame(link, frame);
        if (link.over) return;
      }
    }
    link.framesAtLastTick = this.stats.framesReceived;
  }

  #onCall(frame: Frame): void {
    const msg = this.#parse<{
      method: string;
      params?: unknown;
      timeoutMs?: number;
      notify?: boolean;
      streams?: Record<string, number>;
    }>(CallSchema, frame, isPlainCall);
    if (!msg) return;
    const id = frame.streamId;
    if (id === 0) {
      if (!msg.notify) {
        this.#protocolError("BAD_MESSAGE", "CALL on stream 0 must be a notification");
        return;
      }
      const handler = this.#handlers.get(msg.method);
      if (!handler) {
        this.stats.notificationErrors++;
        return;
      }
      const ctx = new HandlerContext(msg.method, new LazyAbortController(), Infinity, {}, this);
      this.#notificationsRunning++;
      Promise.resolve()
        .then(() => handler(msg.params, ctx))
        .catch(() => {
          this.stats.notificationErrors++;
        })
        .finally(() => {
          this.#notificationsRunning--;
          this.#wakeReader();
        });
      return;
    }
    if (!this.#claimPeerId(id, "call")) return;
    const streams: Record<string, SessionStream> = {};
    let streamCount = 0;
    if (msg.streams !== undefined) {
      for (const [name, streamId] of Object.entries(msg.streams)) {
        if (!this.#claimPeerId(streamId, "stream")) return;
        const stream = this.#newStream(streamId, name);
        stream.sendCredit = this.#peer?.limits.streamWindowBytes ?? 0;
        streams[name] = stream;
        streamCount++;
      }
    }
    const epoch = this.#epoch;
    const reply = (err: unknown) => {
      if (this.#epoch !== epoch) return; // the peer this was for is gone
      const payload = errorPayload(err);
      for (const s of Object.values(streams)) s.reset(payload.code, payload.message);
      this.#sendControl(FrameType.ERROR, id, payload);
    };
    if (this.#goawaySent || this.#goawayReceived) {
      reply(
        new GuestlinkError("SESSION_CLOSING", "the session is closing and accepts no new calls"),
      );
      return;
    }
    const handler = this.#handlers.get(msg.method);
    if (!handler) {
      reply(
        new GuestlinkError("METHOD_NOT_FOUND", `no such method: ${msg.method}`, {
          details: { method: msg.method, available: [...this.#handlers.keys()] },
        }),
      );
      return;
    }
    const clock = this.options.runtime.clock;
    const controller = new LazyAbortController();
    const deadline = msg.timeoutMs === undefined ? Infinity : clock.now() + msg.timeoutMs;
    const timer =
      msg.timeoutMs === undefined
        ? undefined
        : this.#deadlines.add(deadline, () =>
            controller.abort(
              new GuestlinkError("DEADLINE_EXCEEDED", `call ${msg.method} ran past its deadline`),
            ),
          );
    this.#incoming.set(id, controller);
    const ctx = new HandlerContext(msg.method, controller, deadline, streams, this);
    const finish = () => {
      timer?.cancel();
      if (this.#epoch !== epoch) return;
      this.#incoming.delete(id);
      this.#wakeReader();
      this.#maybeFinishClosing();
    };
    const sendResult = (value: unknown) => {
      if (this.#state === "closed" || this.#epoch !== epoch) return;
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
        this.#send(FrameType.RESULT, id, payload);
      } catch (err) {
        reply(err); // larger than the peer accepts: the caller gets FRAME_TOO_LARGE instead
      }
    };
    const fail = (err: unknown) => {
      if (this.#state !== "closed") reply(err);
    };
    const hasStreams = streamCount > 0;
    // The handler runs in a microtask (so frames that arrived with the CALL, a CANCEL say, are
    // handled first). A call without streams whose handler returns a plain value is answered
    // right there: the promise chain the general case needs costs more than the call itself.
    RESOLVED.then(() => {
      let value: unknown;
      let then: unknown;
      try {
        value = handler(msg.params, ctx);
        // Read once, as resolving a promise with `value` would.
        then = isObjectLike(value) ? (value as { then?: unknown }).then : undefined;
      } catch (err) {
        try {
          fail(err);
        } finally {
          finish();
        }
        return;
      }
      if (!hasStreams && typeof then !== "function") {
        try {
          sendResult(value);
        } finally {
          finish();
        }
        return;
      }
      const outcome =
        typeof then === "function"
          ? new Promise((resolve, reject) => then.call(value, resolve, reject))
          : Promise.resolve(value);
      // The call is finished here as soon as its reply is sent (the peer may close at once).
      outcome.then(
        async (value) => {
          try {
            // All stream output reaches the caller before the result does.
            if (hasStreams) {
              for (const s of Object.values(streams)) s.end();
              await Promise.all(Object.values(streams).map((s) => this.#outputDone(s)));
            }
            sendResult(value);
          } finally {
            finish();
          }
        },
        (err: unknown) => {
          try {
            fail(err);
          } finally {
            finish();
          }
        },
      );
    });
  }

  #onReply(frame: Frame): void {
    const id = frame.streamId;
    if (id === 0 && frame.type === FrameType.ERROR) {
      this.#onSessionError(this.#link as Link, frame);
      return;
    }
    if (!this.#outgoing.has(id)) {
      this.#protocolError(
        "UNEXPECTED_REPLY",
        `${frameTypeName(frame.type)} for call ${id}, which is not in flight`,
      );
      return;
    }
    if (frame.type === FrameType.RESULT) {
      const msg = this.#parse<{ value?: unknown }>(ResultSchema, frame, isPlainResult);
      if (msg) this.#settleOutgoing(id, msg.value, undefined);
    } else {
      const msg = this.#parse<{ code: string; message: string; details?: Record<string, unknown> }>(
        ErrorSchema,
        frame,
        isPlainError,
      );
      if (msg)
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
    this.#maybeFinishClosing();
  }

  #onSessionError(link: Link, frame: Frame): void {
    let msg: { code?: unknown; message?: unknown } = {};
    try {
      msg = decodeControl(frame.payload);
    } catch {
      // A peer that cannot even say why is still ending the session.
    }
    const code = typeof msg.code === "string" ? msg.code : "PROTOCOL_ERROR";
    const text = typeof msg.message === "string" ? msg.message : "no reason given";
    if (code === RECONNECT) {
      // Before the peer's HELLO it is stale: an answer to what an earlier connection left behind.
      if (link.handshaking) {
        this.#staleFrame(link);
        return;
      }
      const err = new GuestlinkError(
        "TRANSPORT_FAILED",
        `${this.#description} has no session on this connection (it restarted, or lost the connection without this side seeing it): ${text}`,
      );
      if (this.#canResume()) this.#disconnect(link, err);
      else this.#end(err);
      return;
    }
    this.#end(new RemoteError(code, `${this.#description} ended the session: ${text}`));
  }

  /**
   * A frame before the peer's HELLO: left in the transport by an earlier connection (a
   * virtio-serial port keeps what a host that went away sent), so it is skipped and counted. On
   * a guest's port it also means the host believes a connection exists that this side does not
   * know (this agent restarted, or dropped the connection): the host is asked, at most once a
   * second, to dial again, since it cannot see that from its side of the port.
   */
  #staleFrame(link: Link): void {
    this.stats.staleFrames++;
    if (this.#registry === undefined || !link.transport.reconnectsInBand) return;
    const now = this.options.runtime.clock.now();
    if (now - link.hintedAt < RECONNECT_HINT_INTERVAL_MS) return;
    link.hintedAt = now;
    this.#sendDirect(link, FrameType.ERROR, {
      code: RECONNECT,
      message: "this side has no session on this connection: dial again",
    });
  }

  /**
   * A HELLO in mid-stream on a transport whose peer reconnects unseen (a guest's virtio-serial
   * port): the host began a new connection, so this one is over. The new one goes to a session
   * of the registry's, which hands it to the session it resumes: most often this one.
   */
  #helloInBand(link: Link, frame: Frame): void {
    const next = (this.#registry as SessionRegistry).acceptInBand(link.transport, link.decoder)
      .#link as Link;
    link.successor = next;
    const err = new GuestlinkError(
      "TRANSPORT_FAILED",
      `${link.transport.description}: the peer began a new connection`,
    );
    if (this.#canResume()) {
      this.#disconnect(link, err, false);
    } else {
      this.#dropLink(link, err);
      this.#link = undefined;
      this.#end(err);
    }
    next.owner.#onFrame(next, frame);
  }

  #onCancel(frame: Frame): void {
    const msg = this.#parse<{ reason?: string; code?: "CANCELLED" | "DEADLINE_EXCEEDED" }>(
      CancelSchema,
      frame,
    );
    if (!msg) return;
    // A CANCEL for a call already finished crossed our reply on the wire: nothing to do.
    const code = msg.code ?? "CANCELLED";
    const why =
      code === "DEADLINE_EXCEEDED" ? "the caller's deadline passed" : "cancelled by the caller";
    this.#incoming
      .get(frame.streamId)
      ?.abort(new GuestlinkError(code, `${why}: ${msg.reason ?? "no reason given"}`));
  }

  #onData(frame: Frame): void {
    const length = frame.payload.length;
    this.stats.dataBytesReceived += length;
    const stream = this.#streams.get(frame.streamId);
    if (!stream) {
      if (!this.#isClosedStream(frame.streamId)) {
        this.#protocolError(
          "UNKNOWN_STREAM",
          `DATA for stream ${frame.streamId}, which was never opened`,
        );
        return;
      }
      // Data that crossed our RESET on the wire: drop it, but give the session credit back.
      if (length > this.#sessionReceiveWindow) {
        this.#protocolError("FLOW_CONTROL", "DATA beyond the session window");
        return;
      }
      this.#sessionReceiveWindow -= length;
      this.#grantSession(length);
      return;
    }
    if (stream.remoteEnded) {
      this.#protocolError("DATA_AFTER_END", `DATA on stream ${stream.id} after its END`);
      return;
    }
    if (length > stream.receiveWindow || length > this.#sessionReceiveWindow) {
      this.#protocolError(
        "FLOW_CONTROL",
        `DATA of ${length} bytes on stream ${stream.id} beyond the window granted (${Math.min(stream.receiveWindow, this.#sessionReceiveWindow)} bytes)`,
      );
      return;
    }
    stream.receiveWindow -= length;
    this.#sessionReceiveWindow -= length;
    stream.deliver(frame.payload);
  }

  #onWindow(frame: Frame): void {
    const msg = this.#parse<{ credit: number }>(WindowSchema, frame, isPlainWindow);
    if (!msg) return;
    if (frame.streamId === 0) {
      this.#sessionSendCredit += msg.credit;
      if (this.#sessionSendCredit > MAX_CREDIT) {
        this.#protocolError("FLOW_CONTROL", "session window grown beyond 2^31-1 bytes");
        return;
      }
    } else {
      const stream = this.#streams.get(frame.streamId);
      if (!stream) {
        if (this.#isClosedStream(frame.streamId)) return;
        this.#protocolError(
          "UNKNOWN_STREAM",
          `WINDOW for stream ${frame.streamId}, which was never opened`,
        );
        return;
      }
      stream.sendCredit += msg.credit;
      if (stream.sendCredit > MAX_CREDIT) {
        this.#protocolError("FLOW_CONTROL", `stream ${stream.id} window grown beyond 2^31-1 bytes`);
        return;
      }
    }
    this.#pump();
  }

  #onEnd(frame: Frame): void {
    const stream = this.#streams.get(frame.streamId);
    if (!stream) {
      if (this.#isClosedStream(frame.streamId)) return;
      this.#protocolError(
        "UNKNOWN_STREAM",
        `END for stream ${frame.streamId}, which was never opened`,
      );
      return;
    }
    stream.remoteEnd();
    this.#forgetIfClosed(stream);
  }

  #onReset(frame: Frame): void {
    const msg = this.#parse<{ code: string; message: string }>(ErrorSchema, frame, isPlainError);
    if (!msg) return;
    const stream = this.#streams.get(frame.streamId);
    if (!stream) {
      if (this.#isClosedStream(frame.streamId)) return;
      this.#protocolError(
        "UNKNOWN_STREAM",
        `RESET for stream ${frame.streamId}, which was never opened`,
      );
      return;
    }
    this.#release(stream);
    stream.fail(
      new GuestlinkError(
        "STREAM_RESET",
        `stream "${stream.name}" reset by the peer: ${msg.message}`,
        {
          details: { code: msg.code, by: "peer" },
        },
      ),
    );
  }

  // ---- ids and streams -----------------------------------------------------------------------

  #allocateId(): number {
    const id = this.#nextId;
    this.#nextId += 2;
    return id;
  }

  #isPeerParity(id: number): boolean {
    return id % 2 === (this.options.role === "client" ? 0 : 1);
  }

  /** Checks a new id from the peer: its parity, and higher than any it used before. */
  #claimPeerId(id: number, what: string): boolean {
    if (!this.#isPeerParity(id)) {
      this.#protocolError("BAD_ID", `${what} id ${id} is from this side's half of the id space`);
      return false;
    }
    if (id <= this.#highestPeerId) {
      this.#protocolError("DUPLICATE_ID", `${what} id ${id} was already used`);
      return false;
    }
    this.#highestPeerId = id;
    return true;
  }

  /** An id that was opened once (by either side) and is gone now. */
  #isClosedStream(id: number): boolean {
    return this.#isPeerParity(id) ? id <= this.#highestPeerId : id < this.#nextId;
  }

  #newStream(id: number, name: string): SessionStream {
    const stream = new SessionStream(
      this,
      id,
      name,
      this.#peer?.limits.streamWindowBytes ?? 0,
      this.options.streamWindowBytes,
      this.options.streamWindowBytes,
    );
    this.#streams.set(id, stream);
    return stream;
  }

  /** A stream for a call refused before it started: never registered, failed at once. */
  #detachedStream(name: string): SessionStream {
    return new SessionStream(this, 0, name, 0, 0, this.options.streamWindowBytes);
  }

  #forgetIfClosed(stream: SessionStream): void {
    if (stream.closed) this.#release(stream);
  }

  /** Forgets a stream that is gone, giving back the session credit of what nobody consumed. */
  #release(stream: SessionStream): void {
    this.#streams.delete(stream.id);
    this.#withOutput.delete(stream);
    const unconsumed = stream.releaseUnconsumed();
    if (unconsumed > 0 && this.#state !== "closed") this.#grantSession(unconsumed);
    this.#maybeFinishClosing();
  }

  #outputDone(stream: SessionStream): Promise<void> {
    return stream.outputDone
      ? Promise.resolve()
      : new Promise((resolve) => stream.whenOutputDone(resolve));
  }

  #grantSession(bytes: number): void {
    this.#sessionUngranted += bytes;
    if (this.#sessionUngranted >= this.options.sessionWindowBytes / 2) {
      this.#sessionReceiveWindow += this.#sessionUngranted;
      this.#sendControl(FrameType.WINDOW, 0, { credit: this.#sessionUngranted });
      this.#sessionUngranted = 0;
    }
  }

  // ---- sending -------------------------------------------------------------------------------

  #whenOpen(fn: () => void): void {
    if (this.#state === "handshaking") this.#afterHandshake.push(fn);
    else if (this.#state !== "closed") fn();
  }

  #assertCanStartCall(): void {
    if (this.#state === "closed")
      throw new GuestlinkError("SESSION_CLOSED", "the session is closed");
    if (this.#goawaySent || this.#goawayReceived || this.#closeRequested) {
      throw new GuestlinkError("SESSION_CLOSING", "the session is closing and starts no new calls");
    }
  }

  #sendControl(type: FrameType, streamId: number, value: unknown, sequenced = true): void {
    this.#send(type, streamId, encodeControl(value), sequenced);
  }

  /** Sends a CALL; one the peer could not accept fails the call instead. */
  #sendCall(id: number, payload: Uint8Array): void {
    try {
      this.#send(FrameType.CALL, id, payload);
    } catch (err) {
      this.#settleOutgoing(id, undefined, toGuestlinkError(err));
    }
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

  /** Moves queued stream bytes into DATA frames, as credit and the transport allow. */
  #pump(): void {
    if (this.#pumping || this.#state === "handshaking" || this.#state === "closed") return;
    this.#pumping = true;
    try {
      let progress = true;
      while (progress && !this.#outbox.congested && this.#withOutput.size > 0) {
        progress = false;
        for (const stream of this.#withOutput) {
          if (this.#outbox.congested || this.#isClosed()) break;
          const max = Math.min(stream.sendCredit, this.#sessionSendCredit, this.#maxDataFrame);
          const chunk = stream.takeOutput(max);
          if (chunk) {
            this.#sessionSendCredit -= chunk.length;
            this.stats.dataBytesSent += chunk.length;
            this.#send(FrameType.DATA, stream.id, chunk);
            progress = true;
          } else if (stream.takeEnd()) {
            this.#send(FrameType.END, stream.id, undefined);
            progress = true;
          }
          if (stream.queuedBytes === 0 && !stream.endPending) {
            this.#withOutput.delete(stream);
            this.#forgetIfClosed(stream);
          }
        }
      }
    } finally {
      this.#pumping = false;
    }
  }

  // ---- ending --------------------------------------------------------------------------------

  /** A method, not a property test, so TypeScript does not narrow it away across calls. */
  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #maybeFinishClosing(): void {
    if (this.#state !== "closing" && !(this.#state === "open" && this.#closeRequested)) return;
    if (this.#outgoing.size > 0 || this.#incoming.size > 0 || this.#streams.size > 0) return;
    const link = this.#link;
    if (link === undefined && this.#canResume() && this.#outbox.kept.frames > 0) {
      // Disconnected with frames the peer has not acknowledged (a call's final RESULT, say):
      // they wait for the peer to resume, within the resume window, rather than vanish.
      return;
    }
    if (this.#closeConfirmed && link !== undefined && !link.handshaking) {
      this.#maybeAck(true); // our last word: the peer may be waiting for it
      if (this.#outbox.kept.frames > 0) {
        this.#closeLinger ??= this.options.runtime.clock.setTimer(ERROR_LINGER_MS, () => {
          this.#outbox.flush(true);
          this.#end(undefined, true);
        });
        return;
      }
    }
    this.#outbox.flush(true);
    this.#end(undefined, true);
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
      new GuestlinkError("PROTOCOL_ERROR", `${this.#description} broke the protocol: ${message}`, {
        details: { violation },
      }),
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
    this.#wakeReader();
    this.#resumeTimer?.cancel();
    this.#closeLinger?.cancel();
    this.#deadlines.clear();
    const reason = err ?? new GuestlinkError("SESSION_CLOSED", "the session was closed");
    this.#failPending(reason);
    this.#afterHandshake = [];
    this.#readyDeferred.reject(reason);
    this.#closeRequested?.resolve();
    this.#closedDeferred.resolve(err);
    const link = this.#link;
    if (link === undefined) return;
    this.#dropLink(link, err);
    const transport = link.transport;
    if (err === undefined || gracefully) {
      const linger = this.options.runtime.clock.setTimer(ERROR_LINGER_MS, () =>
        transport.abort(reason),
      );
      transport.close().then(
        () => linger.cancel(),
        () => linger.cancel(),
      );
    } else {
      transport.abort(reason);
    }
  }
}

/**
 * Whether `frame` (a HELLO) carries `nonce`, the one already taken on its connection. A HELLO
 * that cannot be read is not a repeat: it is left to whoever takes it next to refuse.
 */
function isRepeatOf(nonce: string | undefined, frame: Frame): boolean {
  if (nonce === undefined) return false;
  try {
    return decodeControl(frame.payload).nonce === nonce;
  } catch {
    return false;
  }
}

function connectionOf(link: Link): SessionConnection {
  return {
    description: link.transport.description,
    ready: link.ready.promise,
    lost: link.lost.promise,
  };
}

/** A settled promise to queue microtasks on (`queueMicrotask` is not in ECMAScript's types). */
const RESOLVED = Promise.resolve();

function isObjectLike(value: unknown): value is object {
  return (typeof value === "object" && value !== null) || typeof value === "function";
}

/**
 * A session's connections over its life (docs/protocol.md 9.1, 9.7, 9.8): the handshake on each,
 * losing one, and with resume, waiting for the next and going on over it: on the side that dials
 * again (`redial`), on the side that accepts (`adopt`, a connection handed over from a session of
 * the registry's), and on a guest's virtio-serial port, where the host begins a new connection in
 * mid-stream. Sessions and connections outlive each other, as grpc-js's subchannel and transport
 * do. The session is reached through `LinksPort`; the outbox and receive numbering directly.
 */
import { GuestlinkError, toGuestlinkError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import { encodeControl } from "../wire/control.ts";
import { type DecoderStats, FrameDecoder, sumDecoderStats } from "../wire/decode.ts";
import { type Frame, FrameType } from "../wire/frame.ts";
import { Connection, type ConnectionOwner } from "./connection.ts";
import { agreeVersion, isRepeatOf } from "./handshake.ts";
import { InBand } from "./in-band.ts";
import { type Hello, HelloSchema, PROTOCOL_VERSIONS } from "./messages.ts";
import type { ResolvedSessionOptions } from "./options.ts";
import type { Outbox } from "./outbox.ts";
import type { ReceiveSequence } from "./receive-sequence.ts";
import { Resume, type ResumeFrom, type ResumeHost, type ResumeRefusal } from "./resume.ts";
import type { Terms } from "./terms.ts";
import { parseFrame } from "./violation.ts";

/**
 * How often the dialling side says HELLO again while it has no answer. A guest on a virtio-serial
 * port that closes it (no host yet) just as the host's HELLO arrives never sees that HELLO; the
 * next one gets through.
 */
const HELLO_REPEAT_MS = 1_000;
/** A session that ended gracefully cuts its transport if closing it takes longer than this. */
const CUT_AFTER_CLOSE_MS = 1_000;

/** What the connections need from their session. */
export interface LinksPort {
  /** "handshaking" until the first HELLO, then "open", "closing", "closed". */
  state(): "handshaking" | "open" | "closing" | "closed";
  /** Sends a control frame through the outbox (unsequenced unless `sequenced`). */
  sendControl(type: FrameType, streamId: number, value: unknown, sequenced?: boolean): void;
  /** Ends the session (see Session). */
  end(err: GuestlinkError | undefined, gracefully?: boolean): void;
  /** The connection lost was this session's; it waits for a resume. */
  disconnected(err: GuestlinkError): void;
  /** Calls and streams in flight. */
  busy(): number;
  /** GOAWAY went either way. */
  goaway(): boolean;
  /** A session of the same registry, by id (its connections), to resume. */
  find(sessionId: string): Links | undefined;
  /**
   * This accepted session is new: its registry gets it before it answers the HELLO, or refuses
   * it (a limit reached) with the error the peer is told instead.
   */
  registered(): GuestlinkError | undefined;
  /** The peer began a new connection on `transport`: a new session of the registry's reads it. */
  acceptInBand(transport: Transport, decoder: FrameDecoder): Connection;
  /** An accepted connection resumed another session: this one ends without a word. */
  handedOver(): void;
  /** A frame was skipped as stale (before the peer's HELLO). */
  stale(): void;
  /** A HELLO went straight to the transport. */
  sentDirect(): void;
}

export class Links implements ResumeHost {
  /** The current connection; undefined while a resumable session waits for a new one. */
  conn: Connection | undefined;
  /** The last connection's address, for messages. */
  description: string;
  /** The peer's session id and token, to ask for resume on the next connection. */
  resumeFrom: ResumeFrom | undefined;
  /** Counters of the connections before the current one. */
  #wireTotals: DecoderStats = sumDecoderStats();
  readonly #port: LinksPort;
  /** The session the frames are for. */
  readonly #owner: ConnectionOwner;
  readonly #options: ResolvedSessionOptions;
  readonly #outbox: Outbox;
  readonly #rx: ReceiveSequence<unknown>;
  readonly #terms: Terms;
  /** Whether this side accepted its connection (a registry's session): it answers HELLOs. */
  readonly #accepting: boolean;
  readonly #inBand: InBand;
  readonly #resume: Resume;

  constructor(
    port: LinksPort,
    owner: ConnectionOwner,
    parts: {
      options: ResolvedSessionOptions;
      outbox: Outbox;
      rx: ReceiveSequence<unknown>;
      terms: Terms;
    },
    accepting: boolean,
    resumeToken: string,
    description: string,
  ) {
    this.#port = port;
    this.#owner = owner;
    this.#options = parts.options;
    this.#outbox = parts.outbox;
    this.#rx = parts.rx;
    this.#terms = parts.terms;
    this.#accepting = accepting;
    this.description = description;
    this.#resume = new Resume(this, port, { ...parts, owner, resumeToken });
    this.#inBand = new InBand(
      {
        stale: () => port.stale(),
        sendDirect: (conn, type, value) => this.sendDirect(conn, type, value),
        acceptInBand: (transport, decoder) => port.acceptInBand(transport, decoder),
        superseded: (conn, err) => {
          if (this.canResume()) {
            this.disconnect(conn, err, false);
            return;
          }
          this.drop(conn, err);
          this.conn = undefined;
          port.end(err);
        },
      },
      parts.options.runtime.clock,
      accepting,
    );
  }

  /** A new connection of the session's; `decoder` carries on one begun on the same transport. */
  newConnection(transport: Transport, decoder?: FrameDecoder): Connection {
    const o = this.#options;
    return new Connection(
      transport,
      decoder ??
        new FrameDecoder({
          maxFrameBytes: o.maxFrameBytes,
          checksum: o.checksum,
          requirePayloadChecksum: true,
        }),
      this.#owner,
      this.#accepting ? undefined : o.runtime.randomId(),
      o.runtime.clock.now(),
    );
  }

  /** The decoders' counters, over every connection. */
  get wireStats(): DecoderStats {
    // A connection dropped is in the totals already (the last one stays `conn` after the end).
    const conn = this.conn;
    return conn !== undefined && !conn.over
      ? sumDecoderStats(this.#wireTotals, conn.decoder.stats)
      : this.#wireTotals;
  }

  /** Whether a lost connection leaves the session waiting for another (instead of ending it). */
  canResume(): boolean {
    const state = this.#port.state();
    return this.#options.resume !== false && state !== "handshaking" && state !== "closed";
  }

  // ---- starting a connection -----------------------------------------------------------------

  /** Starts talking on `conn`: the dialling side says HELLO; both wait for the peer's. */
  start(conn: Connection): void {
    if (!this.#accepting) this.#sayHello(conn);
    if (conn.over) return;
    this.#armHandshakeTimer(conn);
    void conn.read();
  }

  /** Goes on over a new connection we dialled (see `Session.reconnect`). */
  redial(conn: Connection): void {
    const refuse = (err: GuestlinkError) => {
      conn.transport.abort(err);
      throw err;
    };
    const state = this.#port.state();
    if (state === "closed") refuse(new GuestlinkError("SESSION_CLOSED", "the session is closed"));
    if (!this.#options.resume || this.#accepting || state === "handshaking") {
      refuse(
        new GuestlinkError(
          "INVALID_OPTION",
          "reconnect() needs a session with resume whose first handshake is done, on the side that dials",
        ),
      );
    }
    if (this.conn !== undefined) {
      this.disconnect(
        this.conn,
        new GuestlinkError("TRANSPORT_FAILED", "replaced by a new connection"),
      );
    }
    this.conn = conn;
    this.description = conn.description;
    this.start(conn);
  }

  /**
   * The dialling side's HELLO on `conn`, straight to the transport (nothing else may precede
   * it), said again each HELLO_REPEAT_MS until the peer answers (see there).
   */
  #sayHello(conn: Connection): void {
    const extra: Partial<Hello> = {};
    if (this.resumeFrom !== undefined) {
      const { sessionId, token } = this.resumeFrom;
      extra.resume = { sessionId, token, received: this.#rx.received };
    }
    try {
      conn.sendDirect(this.unsequenced(FrameType.HELLO, this.#terms.hello(conn, extra)));
    } catch (err) {
      this.lost(conn, toGuestlinkError(err));
      return;
    }
    this.#port.sentDirect();
    conn.helloTimer = this.#options.runtime.clock.setTimer(HELLO_REPEAT_MS, () => {
      if (conn.handshaking && !conn.over) this.#sayHello(conn);
    });
  }

  #armHandshakeTimer(conn: Connection): void {
    conn.handshakeTimer = this.#options.runtime.clock.setTimer(
      this.#options.handshakeTimeoutMs,
      () => this.#handshakeTimedOut(conn),
    );
  }

  #handshakeTimedOut(conn: Connection): void {
    if (!conn.handshaking || conn.over) return;
    // The peer's HELLO may sit inside a stale frame left in the pipe: give up on that frame once.
    for (const frame of conn.resync()) {
      conn.owner.frame(conn, frame);
      if (conn.over) return;
    }
    if (!conn.handshaking || conn.over) return;
    if (this.#accepting && conn.transport.reconnectsInBand) {
      // A guest's port with no host yet: wait on, checking again for a HELLO behind stale bytes.
      this.#armHandshakeTimer(conn);
      return;
    }
    const err = new GuestlinkError(
      "HANDSHAKE_TIMEOUT",
      `no handshake from ${conn.description} within ${this.#options.handshakeTimeoutMs} ms: is a guestlink peer on the other end?`,
      { details: { skippedBytes: conn.decoder.stats.skippedBytes } },
    );
    if (this.canResume()) this.disconnect(conn, err);
    else this.#port.end(err);
  }

  // ---- the peer's HELLO ----------------------------------------------------------------------

  /** A frame on `conn` before the peer's HELLO on it. */
  beforeHello(conn: Connection, frame: Frame): boolean {
    if (frame.type === FrameType.HELLO) {
      this.#onHello(conn, frame);
      return true;
    }
    if (frame.type === FrameType.ERROR && frame.streamId === 0) return false; // the session's
    this.staleFrame(conn);
    return true;
  }

  /** A HELLO after the handshake: a repeat, a new connection on a guest's port, or an error. */
  helloAgain(conn: Connection, frame: Frame): boolean {
    // The dialler says HELLO again until it hears an answer: a repeat is nothing new.
    if (isRepeatOf(conn.peerNonce, frame)) return true;
    if (this.#inBand.beginsConnection(conn)) {
      this.#inBand.helloInBand(conn, frame);
      return true;
    }
    return false;
  }

  #onHello(conn: Connection, frame: Frame): void {
    const hello = parseFrame<Hello>(HelloSchema, frame);
    if (hello.answers !== undefined && hello.answers !== conn.nonce) {
      // An answer to an earlier connection, which the transport kept (a virtio-serial port). A
      // HELLO without `answers` comes from a peer that spoke first too: it answers nothing.
      this.staleFrame(conn);
      return;
    }
    conn.heardHello();
    conn.peerNonce = hello.nonce;
    const agreed = agreeVersion(hello.protocol);
    if ("refusal" in agreed) {
      this.#port.sendControl(
        FrameType.ERROR,
        0,
        { code: "VERSION_MISMATCH", message: agreed.refusal },
        false,
      );
      this.#outbox.flush(true);
      this.#port.end(
        new GuestlinkError("VERSION_MISMATCH", agreed.refusal, {
          details: { ours: PROTOCOL_VERSIONS, theirs: hello.protocol },
        }),
        true,
      );
      return;
    }
    if (this.#port.state() === "handshaking") {
      if (this.#accepting) this.#answer(conn, hello, agreed.version);
      else this.opened(conn, hello, agreed.version);
      return;
    }
    this.#resume.answered(conn, hello, agreed.version);
  }

  /** We accepted `conn`: the peer may be coming back to a session of ours, or begin a new one. */
  #answer(conn: Connection, hello: Hello, version: number): void {
    let refusal: ResumeRefusal | undefined;
    if (hello.resume !== undefined) {
      const target = this.#port.find(hello.resume.sessionId);
      refusal =
        target === undefined || target === this
          ? {
              reason: "unknown-session",
              message: "this side has no such session: it restarted, or the session expired",
            }
          : target.adopt(conn, hello);
      if (refusal === undefined) {
        this.#port.handedOver();
        return;
      }
    }
    const refused = this.#port.registered();
    if (refused !== undefined) {
      // Told before any HELLO: the peer's handshake ends with this error (protocol.md 9.1).
      this.#port.sendControl(
        FrameType.ERROR,
        0,
        {
          code: refused.code,
          message: refused.message,
          ...(refused.details === undefined ? {} : { details: refused.details }),
        },
        false,
      );
      this.#outbox.flush(true);
      this.#port.end(refused, true);
      return;
    }
    if (this.#port.state() === "closed") return;
    const answer: Partial<Hello> = refusal === undefined ? {} : { resumeRefused: refusal };
    if (hello.nonce !== undefined) answer.answers = hello.nonce;
    if (this.#terms.seesNoEnd(conn)) answer.confirmsClose = true;
    this.#port.sendControl(FrameType.HELLO, 0, this.#terms.hello(conn, answer), false);
    this.opened(conn, hello, version);
  }

  /** A peer that dialled again asks this session (a registry's) to go on over `conn`. */
  adopt(conn: Connection, hello: Hello): ResumeRefusal | undefined {
    return this.#resume.adopt(conn, hello);
  }

  /** The handshake on `conn` opened the session from the start: resume it from now on. */
  opened(conn: Connection, hello: Hello, version: number): void {
    const peer = this.#terms.opened(conn, hello, version);
    if (this.#options.resume !== false) {
      const { sessionId, resumeToken: token, incarnation } = peer;
      this.resumeFrom = { sessionId, token, incarnation };
    }
  }

  // ---- losing a connection -------------------------------------------------------------------

  /** The connection ended (`err` undefined: the peer closed it) or writing to it failed. */
  lost(conn: Connection, err: GuestlinkError | undefined): void {
    if (conn.over || conn !== this.conn || this.#port.state() === "closed") return;
    const busy = this.#port.busy();
    const where = conn.description;
    if (this.canResume() && !(busy === 0 && this.#port.goaway())) {
      this.disconnect(
        conn,
        err ?? new GuestlinkError("TRANSPORT_FAILED", `${where} closed the connection`),
      );
      return;
    }
    if (this.#port.state() === "handshaking") {
      // Nothing answered as a guestlink peer. A port a hypervisor forwards (QEMU's hostfwd)
      // takes connections and drops them until the agent in the guest listens: marked, so a
      // caller can tell this from a broken session and dial again (`dialAgain`, where the
      // transport says a drop may mean the peer is not up yet).
      const mark = { beforeHandshake: true, dialAgain: conn.transport.dropsBeforePeer === true };
      if (err === undefined) {
        this.#port.end(
          new GuestlinkError(
            "SESSION_CLOSED",
            `${where} closed the connection during the handshake`,
            {
              details: mark,
            },
          ),
        );
        return;
      }
      // The transport's own error, of its own class, made for this failure: marked in place.
      (err as { details: Record<string, unknown> }).details = { ...err.details, ...mark };
      this.#port.end(err);
      return;
    }
    if (err !== undefined || busy === 0) {
      this.#port.end(err);
      return;
    }
    this.#port.end(
      new GuestlinkError(
        "SESSION_CLOSED",
        `${where} closed the connection with ${busy} calls and streams in flight`,
      ),
    );
  }

  /** Stops using `conn`: its frames are ignored from now on and its counters are kept. */
  drop(conn: Connection, err: GuestlinkError | undefined): void {
    if (!conn.drop(err)) return;
    // A decoder that a successor carries on with is counted when that one is dropped.
    if (conn.successor === undefined) {
      this.#wireTotals = sumDecoderStats(this.#wireTotals, conn.decoder.stats);
    }
  }

  /**
   * The connection is gone; the session waits up to the resume window for another. A redial
   * that is lost before its handshake (a peer that accepts and drops, or is going away) leaves
   * the session waiting as it was: the window still counts from the first loss, and no second
   * `disconnected` is said.
   */
  disconnect(conn: Connection, err: GuestlinkError, abortTransport = true): void {
    this.drop(conn, err);
    if (abortTransport) conn.transport.abort(err);
    if (this.conn !== conn) return;
    this.conn = undefined;
    this.#outbox.detach();
    this.#rx.newConnection();
    if (this.#options.resume === false || conn.handshaking) return;
    this.#resume.wait(err);
    this.#port.disconnected(err);
  }

  /**
   * The session ended: the current connection goes too, closed after what was sent drains (so
   * the peer can read our last words) when `gracefully`, else cut at once.
   */
  ended(err: GuestlinkError | undefined, reason: GuestlinkError, gracefully: boolean): void {
    this.#resume.stop();
    const conn = this.conn;
    if (conn === undefined) return;
    this.drop(conn, err);
    const transport = conn.transport;
    if (err === undefined || gracefully) {
      const linger = this.#options.runtime.clock.setTimer(CUT_AFTER_CLOSE_MS, () =>
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

  /** An accepted connection that resumed another session: this one lets go of it. */
  handedOver(): void {
    this.conn = undefined;
  }

  // ---- a guest's virtio-serial port ----------------------------------------------------------

  /** A frame before the peer's HELLO: skipped, and on a guest's port, a hint to dial again. */
  staleFrame(conn: Connection): void {
    this.#inBand.staleFrame(conn);
  }

  /** Writes one control frame straight to `conn`, ahead of (and outside) the numbered frames. */
  sendDirect(conn: Connection, type: FrameType, value: unknown): void {
    try {
      conn.sendDirect(this.unsequenced(type, value));
    } catch {
      // The connection is going anyway.
    }
  }

  /** One unnumbered control frame on stream 0, encoded to write ahead of the numbered ones. */
  unsequenced(type: FrameType, value: unknown): Uint8Array {
    return this.#outbox.encoder.encode({
      type,
      streamId: 0,
      seq: 0,
      payload: encodeControl(value),
    });
  }
}

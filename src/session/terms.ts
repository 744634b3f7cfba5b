/**
 * What a HELLO settles between the two sides of a connection (docs/protocol.md 9.1, 9.5, 9.7):
 * our HELLO, the peer's terms once its HELLO is in (payload checksums both ways, frame size,
 * windows, whether closing waits for its ACKs), keepalive on the new connection, and what
 * follows from the handshake's outcome: a session opened from the start, resumed on a new
 * connection, or started afresh because the peer could not resume.
 */
import { GuestlinkError } from "../errors.ts";
import { FrameEncoder } from "../wire/encode.ts";
import { type Frame, FrameType } from "../wire/frame.ts";
import type { Calls } from "./calls.ts";
import type { Closing } from "./closing.ts";
import type { Connection } from "./connection.ts";
import type { Delivery } from "./delivery.ts";
import type { PeerInfo, SessionEvent } from "./events.ts";
import { agreeUnchecked, buildHello } from "./handshake.ts";
import type { IdSpace } from "./ids.ts";
import { Keepalive } from "./keepalive.ts";
import { Progress } from "./liveness.ts";
import type { Hello } from "./messages.ts";
import type { ResolvedSessionOptions } from "./options.ts";
import type { Outbox } from "./outbox.ts";
import type { Streams } from "./streams.ts";

/** What the terms need from their session. */
export interface TermsPort {
  /** The session is open with `peer` (its first handshake, or afresh after a restart). */
  open(peer: PeerInfo): void;
  emit(event: SessionEvent): void;
  /** Fails everything in flight; with `restart`, work for the old peer must not reach the new. */
  failPending(err: GuestlinkError, restart: boolean): void;
  sendControl(type: FrameType, streamId: number, value: unknown, sequenced?: boolean): void;
  /** A frame found by rescanning a stuck one: handled as if it had just arrived. */
  frame(conn: Connection, frame: Frame): void;
  /** Whether the session holds its peer back by not reading (its silence is then ours). */
  readingPaused(): boolean;
  /** Ends the session (keepalive gave up on the peer). */
  end(err: GuestlinkError): void;
  /** A resume may have left nothing to wait for: close if closing. */
  maybeFinishClosing(): void;
}

/** The session's parts that the terms set. */
export interface TermsParts {
  options: ResolvedSessionOptions;
  outbox: Outbox;
  delivery: Delivery;
  streams: Streams;
  calls: Calls<unknown>;
  closing: Closing;
  ids: IdSpace;
}

export class Terms {
  /** Whether calls or streams wait on a peer that answers but does not move. */
  readonly progress: Progress;
  readonly #port: TermsPort;
  readonly #parts: TermsParts;
  readonly #identity: { sessionId: string; resumeToken: string };
  /** Whether this side accepted its connections (a registry's session). */
  readonly #accepting: boolean;

  constructor(
    port: TermsPort,
    parts: TermsParts,
    identity: { sessionId: string; resumeToken: string },
    accepting: boolean,
  ) {
    this.#port = port;
    this.#parts = parts;
    this.#identity = identity;
    this.#accepting = accepting;
    this.progress = new Progress(parts.options.runtime.clock.now());
  }

  /** Our HELLO on `conn`, with `extra` (an answer, or asking to resume). */
  hello(conn: Connection, extra: Partial<Hello>): Hello {
    const o = this.#parts.options;
    const hello = buildHello(
      {
        options: o,
        services: o.services ?? [...this.#parts.calls.handlers.keys()],
        ...this.#identity,
      },
      extra,
    );
    if (conn.nonce !== undefined) hello.nonce = conn.nonce;
    if (this.#wantsUnchecked(conn)) hello.uncheckedPayloads = true;
    return hello;
  }

  /** Whether this side cannot see `conn` end: it accepted it on a guest's virtio-serial port. */
  seesNoEnd(conn: Connection): boolean {
    return this.#accepting && conn.transport.reconnectsInBand === true;
  }

  /**
   * Takes the peer's terms for `conn`: payload checksums both ways (off only when both asked,
   * 9.1; frames kept for replay go out again as they were encoded), frames no larger than it
   * accepts, and whether closing waits for its ACKs (9.6).
   */
  agree(conn: Connection, hello: Hello): void {
    const { outbox, options, closing } = this.#parts;
    const unchecked = agreeUnchecked(this.#wantsUnchecked(conn), hello);
    conn.decoder.requirePayloadChecksum = !unchecked;
    outbox.encoder = new FrameEncoder({
      payloadChecksum: !unchecked,
      checksum: options.checksum,
      maxFrameBytes: Math.max(1024, Math.min(hello.limits.maxFrameBytes, 64 * 1024 * 1024)),
    });
    closing.confirmed = hello.confirmsClose === true || this.seesNoEnd(conn);
  }

  /** The handshake on `conn` is done and this is a session from the start: take the peer's terms. */
  opened(conn: Connection, hello: Hello, version: number): PeerInfo {
    this.agree(conn, hello);
    const peer: PeerInfo = {
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
    this.#parts.streams.peerLimits(hello.limits);
    conn.opened();
    this.#startKeepalive(conn);
    this.#port.open(peer);
    this.#parts.streams.pump();
    return peer;
  }

  /** Went on over `conn` after a resume: `replayed` is what was sent again. */
  resumed(
    conn: Connection,
    replayed: { frames: number; bytes: number },
    times: { downMs: number; handshakeMs: number },
  ): void {
    this.#startKeepalive(conn);
    this.#port.emit({
      type: "resumed",
      ...times,
      replayedFrames: replayed.frames,
      replayedBytes: replayed.bytes,
    });
    this.#parts.streams.pump();
    this.#port.maybeFinishClosing();
  }

  /**
   * The peer could not resume: everything in flight fails with `err`, numbering starts again,
   * and the session goes on with whoever answers next.
   */
  restarted(err: GuestlinkError): void {
    const { outbox, delivery, ids, streams } = this.#parts;
    this.#port.failPending(err, true);
    outbox.reset();
    delivery.rx.reset();
    ids.resetPeer();
    streams.window.reset();
    this.#port.emit({ type: "restarted", error: err });
  }

  /**
   * Whether this side asks to go without payload checksums on `conn`: only when told to, and
   * never when it receives over a pipe that can damage bytes.
   */
  #wantsUnchecked(conn: Connection): boolean {
    return !this.#parts.options.payloadChecksum && conn.transport.lossy !== true;
  }

  #startKeepalive(conn: Connection): void {
    const { options: o, delivery, calls, streams } = this.#parts;
    if (!o.keepalive) return;
    const clock = o.runtime.clock;
    const deadAfterMs = o.keepalive.deadAfterMs;
    this.progress.restart(clock.now(), delivery.rx.expected);
    conn.keepalive = new Keepalive(clock, o.keepalive, {
      sendPing: (sentAt) => this.#port.sendControl(FrameType.PING, 0, { sentAt }, false),
      notReading: () => this.#port.readingPaused(),
      tick: () => {
        for (const frame of conn.rescanStuckFrame()) {
          conn.keepalive?.heard();
          this.#port.frame(conn, frame);
          if (conn.over) return;
        }
        const waiting = calls.waiting || streams.size > 0;
        const change = this.progress.check(clock.now(), waiting, delivery.rx.expected, deadAfterMs);
        if (change !== undefined) this.#port.emit(change);
        delivery.maybeAck(true);
      },
      peerDead: (silentForMs) =>
        this.#port.end(
          new GuestlinkError(
            "PEER_UNRESPONSIVE",
            `${conn.description} has not answered for ${Math.round(silentForMs)} ms; it is presumed dead`,
            { details: { silentForMs, deadAfterMs } },
          ),
        ),
    });
    conn.keepalive.start();
  }
}

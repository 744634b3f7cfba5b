/**
 * What arrives on a session's connection, handed to the part that owns it: a table by frame type,
 * as yamux's and quic-go's sessions have, after the numbering of sequenced frames (duplicates and
 * frames after a gap go no further). One catch turns a `ProtocolViolation` thrown by any part
 * into the session's end (docs/protocol.md 9.6).
 */
import { GuestlinkError } from "../errors.ts";
import { decodeControl } from "../wire/control.ts";
import { type Frame, FrameType, isFrameType } from "../wire/frame.ts";
import { RemoteError } from "./call.ts";
import type { Calls } from "./calls.ts";
import type { Connection } from "./connection.ts";
import type { Delivery } from "./delivery.ts";
import type { SessionStats } from "./events.ts";
import { RECONNECT } from "./in-band.ts";
import type { Links } from "./links.ts";
import { AckSchema, GoawaySchema, PingSchema, PongSchema } from "./messages.ts";
import { Arrival } from "./receive-sequence.ts";
import type { Clock } from "./runtime.ts";
import type { Streams } from "./streams.ts";
import { ProtocolViolation, parseFrame } from "./violation.ts";

/**
 * Frames numbered for loss detection and resume. The rest belong to one connection: HELLO,
 * keepalive, acknowledgements, and the ERROR on stream 0 that ends a session.
 */
export function isSequenced(type: number, streamId: number): boolean {
  return (
    type !== FrameType.HELLO &&
    type !== FrameType.PING &&
    type !== FrameType.PONG &&
    type !== FrameType.ACK &&
    !(type === FrameType.ERROR && streamId === 0)
  );
}

export interface DispatchPort {
  sendControl(type: FrameType, streamId: number, value: unknown, sequenced?: boolean): void;
  /** The peer said GOAWAY: the session is closing. */
  goawayReceived(): void;
  /** The peer broke the protocol: tell it, and end the session. */
  protocolError(violation: string, message: string): void;
  /** Ends the session with `err`. */
  end(err: GuestlinkError): void;
}

export interface DispatchParts {
  links: Links;
  calls: Calls<unknown>;
  streams: Streams;
  delivery: Delivery;
  stats: SessionStats;
  clock: Clock;
}

export class Dispatch {
  readonly #port: DispatchPort;
  // The parts as fields, not looked up per frame: this runs for every frame received.
  readonly #links: Links;
  readonly #calls: Calls<unknown>;
  readonly #streams: Streams;
  readonly #delivery: Delivery;
  readonly #stats: SessionStats;
  readonly #clock: Clock;

  constructor(port: DispatchPort, parts: DispatchParts) {
    this.#port = port;
    this.#links = parts.links;
    this.#calls = parts.calls;
    this.#streams = parts.streams;
    this.#delivery = parts.delivery;
    this.#stats = parts.stats;
    this.#clock = parts.clock;
  }

  /** A frame arrived on `conn`. */
  frame(conn: Connection, frame: Frame): void {
    const links = this.#links;
    const delivery = this.#delivery;
    if (conn !== links.conn) return;
    this.#stats.framesReceived++;
    try {
      if (conn.handshaking) {
        if (!links.beforeHello(conn, frame)) this.#onSessionError(conn, frame);
        return;
      }
      if (!isFrameType(frame.type)) {
        throw new ProtocolViolation("UNKNOWN_FRAME_TYPE", `unknown frame type ${frame.type}`);
      }
      if (!isSequenced(frame.type, frame.streamId)) {
        this.#dispatch(conn, frame);
        return;
      }
      // A duplicate (replayed), or after a gap: held while what is missing is asked for again.
      const arrival = delivery.arrived(frame);
      if (arrival !== Arrival.NEXT) {
        if (arrival === Arrival.HELD && frame.type === FrameType.DATA) {
          this.#streams.onHeldData(frame);
        }
        return;
      }
      this.#dispatch(conn, frame);
      // What a gap held back, now in order (none, most of the time).
      if (!delivery.rx.behind) return;
      for (let next = delivery.takeHeld(); next !== undefined; next = delivery.takeHeld()) {
        if (conn.over || conn !== links.conn) return;
        this.#dispatch(conn, next);
      }
    } catch (err) {
      if (!(err instanceof ProtocolViolation)) throw err;
      this.#port.protocolError(err.violation, err.message);
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
        const wallTime = this.#clock.wallNow();
        this.#port.sendControl(FrameType.PONG, 0, { sentAt, wallTime }, false);
        break;
      }
      case FrameType.PONG: {
        const pong = parseFrame<{ sentAt: number; wallTime: number }>(PongSchema, frame);
        conn.keepalive?.pong(pong.sentAt, pong.wallTime);
        break;
      }
      case FrameType.ACK:
        this.#delivery.onAck(parseFrame<{ received: number; resend?: number }>(AckSchema, frame));
        break;
      case FrameType.GOAWAY:
        parseFrame(GoawaySchema, frame);
        this.#port.goawayReceived();
        break;
    }
  }

  /** ERROR on stream 0: the peer ends the session, or (RECONNECT) asks us to dial again. */
  #onSessionError(conn: Connection, frame: Frame): void {
    const links = this.#links;
    let msg: { code?: unknown; message?: unknown } = {};
    try {
      msg = decodeControl(frame.payload);
    } catch {
      // A peer that cannot even say why is still ending the session.
    }
    const code = typeof msg.code === "string" ? msg.code : "PROTOCOL_ERROR";
    const text = typeof msg.message === "string" ? msg.message : "no reason given";
    const where = links.description;
    if (code === RECONNECT) {
      // Before the peer's HELLO it is stale: an answer to what an earlier connection left behind.
      if (conn.handshaking) {
        links.staleFrame(conn);
        return;
      }
      const err = new GuestlinkError(
        "TRANSPORT_FAILED",
        `${where} has no session on this connection (it restarted, or lost the connection without this side seeing it): ${text}`,
      );
      if (links.canResume()) links.disconnect(conn, err);
      else this.#port.end(err);
      return;
    }
    this.#port.end(new RemoteError(code, `${where} ended the session: ${text}`));
  }
}

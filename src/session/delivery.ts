/**
 * Getting every numbered frame across a connection that may damage some (docs/protocol.md 9.2,
 * 9.7): what arrives is numbered in (`ReceiveSequence`), acknowledged so the sender can forget it,
 * and asked for again when lost; what the peer asks for again is written again from the frames
 * the outbox keeps. When resending does not heal the connection, the port is told to let it go.
 */
import { GuestlinkError } from "../errors.ts";
import { type Frame, FrameType, HEADER_BYTES } from "../wire/frame.ts";
import type { Connection } from "./connection.ts";
import type { SessionStats } from "./events.ts";
import type { Outbox } from "./outbox.ts";
import { Arrival, ReceiveSequence } from "./receive-sequence.ts";
import type { Clock } from "./runtime.ts";
import { ProtocolViolation } from "./violation.ts";

export interface DeliveryPort {
  /** The connection frames go over now, if any. */
  conn(): Connection | undefined;
  /** Where the peer is, for messages. */
  description(): string;
  sendControl(type: FrameType, streamId: number, value: unknown, sequenced?: boolean): void;
  /** Whether each frame received is acknowledged at once (closing with `confirmsClose`). */
  acksAtOnce(): boolean;
  /** An ACK came: a session that waits for the peer's last ACK may be done closing. */
  maybeFinishClosing(): void;
  /** Frames were lost and resending cannot bring them: let the connection (or session) go. */
  unhealed(err: GuestlinkError): void;
}

export class Delivery {
  readonly rx: ReceiveSequence;
  readonly #outbox: Outbox;
  readonly #port: DeliveryPort;
  readonly #stats: SessionStats;
  readonly #replayBufferBytes: number;

  constructor(
    port: DeliveryPort,
    parts: { clock: Clock; outbox: Outbox; stats: SessionStats },
    replayBufferBytes: number,
  ) {
    this.#port = port;
    this.#outbox = parts.outbox;
    this.#stats = parts.stats;
    this.#replayBufferBytes = replayBufferBytes;
    this.rx = new ReceiveSequence(parts.clock, {
      askResend: (received) => {
        this.#stats.resendAsks++;
        port.sendControl(FrameType.ACK, 0, { received, resend: true }, false);
      },
      unhealed: (expected, asks) =>
        this.#lost(
          `frame ${expected} from ${port.description()} was lost and ${asks} requests to send it again did not bring it`,
          { expected, asks },
        ),
      rttMs: () => port.conn()?.keepalive?.srttMs,
    });
  }

  /** Whether `frame` is the next to deliver (else a duplicate, or after a gap: ignored). */
  arrived(frame: Frame): boolean {
    return this.rx.arrive(frame.seq, HEADER_BYTES + frame.payload.length) === Arrival.NEXT;
  }

  /** After a read on `conn`: ask again for what a dropped frame may have been, and acknowledge. */
  afterRead(conn: Connection, live: boolean): void {
    if (conn.takeDamage() && live) this.rx.damaged();
    this.maybeAck(false);
  }

  /** Tells the peer what has arrived, so it can forget it (`force`: if anything). */
  maybeAck(force: boolean): void {
    const conn = this.#port.conn();
    if (conn === undefined || conn.handshaking) return;
    if (!this.rx.takeAck(force || this.#port.acksAtOnce())) return;
    this.#port.sendControl(FrameType.ACK, 0, { received: this.rx.received }, false);
  }

  /** The peer's ACK: it has everything up to `received`, or (`resend`) lacks what follows. */
  onAck(ack: { received: number; resend?: boolean }): void {
    if (ack.received > this.#outbox.lastSeq) {
      throw new ProtocolViolation(
        "BAD_ACK",
        `ACK of frame ${ack.received}, but only ${this.#outbox.lastSeq} were sent`,
      );
    }
    if (ack.resend === true) this.#resendAfter(ack.received);
    else this.#outbox.ack(ack.received);
    this.#port.maybeFinishClosing();
  }

  /**
   * The peer lost what we sent after `received` (it arrived damaged, or not at all): everything
   * kept after it goes again, on this connection. If some of it is no longer kept, resending
   * cannot heal the connection.
   */
  #resendAfter(received: number): void {
    if (!this.#outbox.canReplayFrom(received)) {
      this.#lost(
        `${this.#port.description()} lost frames after ${received} that are no longer kept for sending again (replay buffer ${this.#replayBufferBytes} bytes)`,
        { received, replayBufferBytes: this.#replayBufferBytes },
      );
      return;
    }
    this.#outbox.ack(received);
    this.#stats.resendsAnswered++;
    this.#stats.framesResent += this.#outbox.resendAll();
  }

  #lost(message: string, details: Record<string, unknown>): void {
    const conn = this.#port.conn();
    if (conn === undefined) return;
    this.#port.unhealed(
      new GuestlinkError("FRAMES_LOST", message, {
        details: { ...details, wire: { ...conn.decoder.stats } },
      }),
    );
  }
}

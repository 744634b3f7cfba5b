/**
 * Getting every numbered frame across a connection that may damage some (docs/protocol.md 9.2,
 * 9.7): what arrives is numbered in (`ReceiveSequence`), acknowledged so the sender can forget it,
 * and asked for again when lost; what the peer asks for again is written again from the frames
 * the outbox keeps. When resending does not heal the connection, the port is told to let it go.
 */
import { GuestlinkError } from "../errors.ts";
import { copyOf, discard } from "../recycle.ts";
import { type Frame, FrameType, HEADER_BYTES } from "../wire/frame.ts";
import type { Connection } from "./connection.ts";
import type { SessionStats } from "./events.ts";
import type { Outbox } from "./outbox.ts";
import { Arrival, ReceiveSequence } from "./receive-sequence.ts";
import type { Clock } from "./runtime.ts";
import { ProtocolViolation } from "./violation.ts";

/** Payloads up to this size held after a gap are copied (see `arrived`). */
const COPY_HELD_BELOW_BYTES = 4096;

export interface DeliveryPort {
  /** The connection frames go over now, if any. */
  conn(): Connection | undefined;
  /** Where the peer is, for messages. */
  description(): string;
  sendControl(type: FrameType, streamId: number, value: unknown, sequenced?: boolean): void;
  /** Sends an unnumbered control frame ahead of everything queued (see `Outbox.sendFirst`). */
  sendAhead(type: FrameType, value: unknown): void;
  /** Whether each frame received is acknowledged at once (closing with `confirmsClose`). */
  acksAtOnce(): boolean;
  /** An ACK came: a session that waits for the peer's last ACK may be done closing. */
  maybeFinishClosing(): void;
  /** Frames were lost and resending cannot bring them: let the connection (or session) go. */
  unhealed(err: GuestlinkError): void;
}

export class Delivery {
  readonly rx: ReceiveSequence<Frame>;
  readonly #outbox: Outbox;
  readonly #port: DeliveryPort;
  readonly #stats: SessionStats;
  readonly #replayBufferBytes: number;

  constructor(
    port: DeliveryPort,
    parts: { clock: Clock; outbox: Outbox; stats: SessionStats; giveUpAfterMs: number },
    replayBufferBytes: number,
  ) {
    this.#port = port;
    this.#outbox = parts.outbox;
    this.#stats = parts.stats;
    this.#replayBufferBytes = replayBufferBytes;
    this.rx = new ReceiveSequence(parts.clock, {
      askResend: (received, upTo) => {
        this.#stats.resendAsks++;
        // Ahead of our own backlog: the peer cannot go on until it has this.
        port.sendAhead(FrameType.ACK, { received, resend: upTo });
      },
      unhealed: (expected, asks) =>
        this.#lost(
          `frame ${expected} from ${port.description()} was lost and ${asks} requests to send it again did not bring it`,
          { expected, asks },
        ),
      rttMs: () => port.conn()?.keepalive?.srttMs,
      giveUpAfterMs: parts.giveUpAfterMs,
      dropped: discardData,
    });
  }

  /**
   * `NEXT` when `frame` is the next to deliver (then `takeHeld` gives the frames it unblocks).
   * Otherwise it is a duplicate, or after a gap: held (or dropped) while the gap is asked for.
   */
  arrived(frame: Frame): Arrival {
    const bytes = HEADER_BYTES + frame.payload.length;
    // A small payload may be a view into a read's whole chunk: hold a copy, not the chunk.
    const copied = frame.seq > this.rx.expected && frame.payload.length <= COPY_HELD_BELOW_BYTES;
    const held = copied ? { ...frame, payload: copyOf(frame.payload) } : frame;
    const arrival = this.rx.arrive(frame.seq, bytes, held);
    // Stream bytes that go no further give their read buffer back now (recycle.ts): a buffer
    // waiting for them was never read into again, and a damaged connection made a new one of
    // 1 MiB for nearly every frame sent again.
    if (arrival !== Arrival.NEXT && (copied || arrival !== Arrival.HELD)) discardData(frame);
    return arrival;
  }

  /** After a frame was delivered: the next held frame now in order, if any. */
  takeHeld(): Frame | undefined {
    return this.rx.takeHeld();
  }

  /** After a read on `conn`: ask again for what a dropped frame may have been, and acknowledge. */
  afterRead(conn: Connection): void {
    if (conn.takeDamage() && conn === this.#port.conn() && !conn.handshaking) this.rx.damaged();
    this.maybeAck(false);
  }

  /** Tells the peer what has arrived, so it can forget it (`force`: if anything). */
  maybeAck(force: boolean): void {
    const conn = this.#port.conn();
    if (conn === undefined || conn.handshaking) return;
    if (!this.rx.takeAck(force || this.#port.acksAtOnce())) return;
    this.#port.sendControl(FrameType.ACK, 0, { received: this.rx.received }, false);
  }

  /** The peer's ACK: it has everything up to `received`, and (`resend`) lacks what follows. */
  onAck(ack: { received: number; resend?: number }): void {
    if (ack.received > this.#outbox.lastSeq) {
      throw new ProtocolViolation(
        "BAD_ACK",
        `ACK of frame ${ack.received}, but only ${this.#outbox.lastSeq} were sent`,
      );
    }
    if (ack.resend !== undefined) this.#resend(ack.received, ack.resend);
    else this.#outbox.ack(ack.received);
    this.#port.maybeFinishClosing();
  }

  /**
   * The peer lost what we sent after `received` up to `upTo` (it arrived damaged, or not at
   * all): that goes again, on this connection. If some of it is no longer kept, resending cannot
   * heal the connection.
   */
  #resend(received: number, upTo: number): void {
    if (!this.#outbox.canReplayFrom(received)) {
      this.#lost(
        `${this.#port.description()} lost frames after ${received} that are no longer kept for sending again (replay buffer ${this.#replayBufferBytes} bytes)`,
        { received, replayBufferBytes: this.#replayBufferBytes },
      );
      return;
    }
    this.#outbox.ack(received);
    this.#stats.resendsAnswered++;
    this.#stats.framesResent += this.#outbox.resend(upTo);
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

/** A DATA frame's bytes that nobody will be given go back to their read buffer. */
function discardData(frame: Frame): void {
  if (frame.type === FrameType.DATA) discard(frame.payload);
}

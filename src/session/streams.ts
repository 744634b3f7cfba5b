/**
 * The session's streams (docs/protocol.md 9.4): the table of open streams, the frames that carry
 * them (DATA, WINDOW, END, RESET), the session-wide credit on top of each stream's, and the pump
 * that turns queued bytes into DATA frames as credit and the transport allow. A protocol
 * violation by the peer is thrown as `ProtocolViolation`.
 */
import { GuestlinkError } from "../errors.ts";
import { type Frame, FrameType } from "../wire/frame.ts";
import { ReceiveWindow, SendCredit } from "./flow-control.ts";
import type { IdSpace } from "./ids.ts";
import { ErrorSchema, type Hello, isPlainError, isPlainWindow, WindowSchema } from "./messages.ts";
import { DEFAULT_MAX_DATA_FRAME_BYTES } from "./options.ts";
import { MAX_HELD_BYTES } from "./receive-sequence.ts";
import { SessionStream, type StreamOwner } from "./stream.ts";
import { ProtocolViolation, parseFrame } from "./violation.ts";

/**
 * Credit lent at most at once for DATA held after a gap (`onHeldData`): with the default 4 MiB
 * session window, what the peer may then have sent stays within what a gap may hold.
 */
export const MAX_LENT_BYTES = MAX_HELD_BYTES / 2;

/** What the streams need from their session. */
export interface StreamsPort {
  /** Queues a sequenced frame to the peer. */
  send(type: FrameType, streamId: number, payload: Uint8Array | undefined): void;
  sendControl(type: FrameType, streamId: number, value: unknown): void;
  /** Whether DATA may be made now: the session is open and its transport takes more. */
  canSend(): boolean;
  /** Whether the session has ended (nothing is sent any more). */
  ended(): boolean;
  /** A stream went away: the session may be done closing. */
  maybeFinishClosing(): void;
  /** DATA payload bytes sent and received, for the session's stats. */
  counted(sent: number, received: number): void;
}

export class Streams implements StreamOwner {
  /** What the peer still lets us send on all streams together. */
  readonly credit = new SendCredit(0);
  /** What we still let the peer send on all streams together. */
  readonly window: ReceiveWindow;
  readonly #port: StreamsPort;
  readonly #ids: IdSpace;
  /** Our window for each stream, and how much a writer may queue on one before it is told to wait. */
  readonly #streamWindowBytes: number;
  readonly #open = new Map<number, SessionStream>();
  /** Ids of the open streams the peer opened, for `maxPeerStreams`. */
  readonly #fromPeer = new Set<number>();
  readonly #maxPeerStreams: number;
  readonly #withOutput = new Set<SessionStream>();
  #pumping = false;
  /** The peer's initial window for each stream, from its HELLO. */
  #peerStreamWindow = 0;
  #maxDataFrame = DEFAULT_MAX_DATA_FRAME_BYTES;

  constructor(
    port: StreamsPort,
    ids: IdSpace,
    streamWindowBytes: number,
    sessionWindowBytes: number,
    maxPeerStreams = Number.POSITIVE_INFINITY,
  ) {
    this.#port = port;
    this.#ids = ids;
    this.#maxPeerStreams = maxPeerStreams;
    this.#streamWindowBytes = streamWindowBytes;
    this.window = new ReceiveWindow(sessionWindowBytes);
  }

  get size(): number {
    return this.#open.size;
  }

  /** The handshake told us what the peer accepts: frame size and windows, ours to start from. */
  peerLimits(limits: Hello["limits"]): void {
    this.#maxDataFrame = Math.min(DEFAULT_MAX_DATA_FRAME_BYTES, limits.maxFrameBytes);
    this.credit.available = limits.sessionWindowBytes;
    this.#peerStreamWindow = limits.streamWindowBytes;
    for (const stream of this.#open.values()) stream.credit.available = limits.streamWindowBytes;
  }

  /** Streams the peer opened that are open now. */
  get peerOpen(): number {
    return this.#fromPeer.size;
  }

  /**
   * LIMIT_EXCEEDED if the peer opening `count` more streams would pass `maxPeerStreams`, else
   * undefined.
   */
  peerLimit(count: number): GuestlinkError | undefined {
    if (this.#fromPeer.size + count <= this.#maxPeerStreams) return undefined;
    return new GuestlinkError(
      "LIMIT_EXCEEDED",
      `this call would open ${count} streams and ${this.#fromPeer.size} are open already: at most ${this.#maxPeerStreams} may be open at once in a session (end the streams you are done with)`,
      {
        details: { limit: "maxPeerStreams", max: this.#maxPeerStreams, open: this.#fromPeer.size },
      },
    );
  }

  /** A new stream the peer opened with a call, with id `id`. */
  openPeer(id: number, name: string): SessionStream {
    const stream = this.open(id, name);
    this.#fromPeer.add(id);
    return stream;
  }

  /** A new stream with id `id`, ours or the peer's. */
  open(id: number, name: string): SessionStream {
    const stream = new SessionStream(
      this,
      id,
      name,
      new SendCredit(this.#peerStreamWindow),
      new ReceiveWindow(this.#streamWindowBytes),
      this.#streamWindowBytes,
    );
    this.#open.set(id, stream);
    return stream;
  }

  /** A stream for a call refused before it started: never registered, failed by the caller. */
  detached(name: string): SessionStream {
    return new SessionStream(
      this,
      0,
      name,
      new SendCredit(0),
      new ReceiveWindow(0),
      this.#streamWindowBytes,
    );
  }

  /** Drops a stream that never reached the peer. */
  discard(stream: SessionStream, err: GuestlinkError): void {
    this.#open.delete(stream.id);
    this.#fromPeer.delete(stream.id);
    stream.fail(err);
  }

  /** Resolves once `stream`'s output has all gone to the session (END included), or it failed. */
  outputDone(stream: SessionStream): Promise<void> {
    return stream.outputDone
      ? Promise.resolve()
      : new Promise((resolve) => stream.whenOutputDone(resolve));
  }

  /** Fails every stream with `reason` (the session ended, or the peer restarted). */
  failAll(reason: GuestlinkError): void {
    for (const stream of this.#open.values()) {
      stream.fail(reason);
      stream.releaseUnconsumed();
    }
    this.#open.clear();
    this.#fromPeer.clear();
    this.#withOutput.clear();
  }

  // ---- frames from the peer ------------------------------------------------------------------

  onData(frame: Frame): void {
    const length = frame.payload.length;
    this.#port.counted(0, length);
    const stream = this.#open.get(frame.streamId);
    if (stream === undefined) {
      this.#known(frame.streamId, "DATA");
      // Data that crossed our RESET on the wire: drop it, but give the session credit back.
      if (!this.window.accept(length)) {
        throw new ProtocolViolation("FLOW_CONTROL", "DATA beyond the session window");
      }
      this.#consumedOnSession(length);
      return;
    }
    if (stream.remoteEnded) {
      throw new ProtocolViolation("DATA_AFTER_END", `DATA on stream ${stream.id} after its END`);
    }
    if (length > stream.window.available || length > this.window.available) {
      throw new ProtocolViolation(
        "FLOW_CONTROL",
        `DATA of ${length} bytes on stream ${stream.id} beyond the window granted (${Math.min(stream.window.available, this.window.available)} bytes)`,
      );
    }
    stream.window.accept(length);
    this.window.accept(length);
    stream.deliver(frame.payload);
  }

  /**
   * A DATA frame was held after a gap (docs/protocol.md 9.4): its credit is lent back now, so the
   * peer keeps sending while the missing frame is sent again behind what it has queued, instead
   * of stalling once its window is full; consuming the frame later pays the loan back. At most
   * `MAX_LENT_BYTES` are lent at once, which keeps what is held within what may be held.
   */
  onHeldData(frame: Frame): void {
    const stream = this.#open.get(frame.streamId);
    if (stream === undefined || stream.remoteEnded || stream.closed) return;
    const length = frame.payload.length;
    // Both or neither: credit granted on one window and not the other would let the peer send
    // past the other (a stream's loans are repaid by its own reads, the session's by any).
    const limit = MAX_LENT_BYTES - length;
    if (this.window.lent > limit || stream.window.lent > limit) return;
    this.window.lend(length);
    stream.window.lend(length);
    this.#port.sendControl(FrameType.WINDOW, stream.id, { credit: length });
    this.#port.sendControl(FrameType.WINDOW, 0, { credit: length });
  }

  onWindow(frame: Frame): void {
    const msg = parseFrame<{ credit: number }>(WindowSchema, frame, isPlainWindow);
    if (frame.streamId === 0) {
      if (!this.credit.grant(msg.credit)) {
        throw new ProtocolViolation("FLOW_CONTROL", "session window grown beyond 2^31-1 bytes");
      }
    } else {
      const stream = this.#open.get(frame.streamId);
      if (stream === undefined) {
        this.#known(frame.streamId, "WINDOW");
        return;
      }
      if (!stream.credit.grant(msg.credit)) {
        throw new ProtocolViolation(
          "FLOW_CONTROL",
          `stream ${stream.id} window grown beyond 2^31-1 bytes`,
        );
      }
    }
    this.pump();
  }

  onEnd(frame: Frame): void {
    const stream = this.#open.get(frame.streamId);
    if (stream === undefined) {
      this.#known(frame.streamId, "END");
      return;
    }
    stream.remoteEnd();
    if (stream.closed) this.#release(stream);
  }

  onReset(frame: Frame): void {
    const msg = parseFrame<{ code: string; message: string }>(ErrorSchema, frame, isPlainError);
    const stream = this.#open.get(frame.streamId);
    if (stream === undefined) {
      this.#known(frame.streamId, "RESET");
      return;
    }
    this.#release(stream);
    stream.fail(
      new GuestlinkError(
        "STREAM_RESET",
        `stream "${stream.name}" reset by the peer: ${msg.message}`,
        { details: { code: msg.code, by: "peer" } },
      ),
    );
  }

  /** A frame for a stream not open: fine if it was open once (it crossed our close), else not. */
  #known(id: number, what: string): void {
    if (!this.#ids.wasUsed(id)) {
      throw new ProtocolViolation(
        "UNKNOWN_STREAM",
        `${what} for stream ${id}, which was never opened`,
      );
    }
  }

  // ---- StreamOwner ---------------------------------------------------------------------------

  streamHasOutput(stream: SessionStream): void {
    this.#withOutput.add(stream);
    this.pump();
  }

  streamConsumed(stream: SessionStream, bytes: number): void {
    if (this.#port.ended()) return;
    if (!stream.closed && !stream.remoteEnded) {
      const grant = stream.window.consumed(bytes);
      if (grant > 0) this.#port.sendControl(FrameType.WINDOW, stream.id, { credit: grant });
    }
    this.#consumedOnSession(bytes);
  }

  streamReset(stream: SessionStream, code: string, message: string): void {
    if (!this.#port.ended()) this.#port.sendControl(FrameType.RESET, stream.id, { code, message });
    this.#release(stream);
  }

  // ---- sending -------------------------------------------------------------------------------

  /** Moves queued stream bytes into DATA frames, as credit and the transport allow. */
  pump(): void {
    if (this.#pumping || !this.#port.canSend()) return;
    this.#pumping = true;
    try {
      let progress = true;
      while (progress && this.#withOutput.size > 0 && this.#port.canSend()) {
        progress = false;
        for (const stream of this.#withOutput) {
          if (!this.#port.canSend()) break;
          const max = Math.min(stream.credit.available, this.credit.available, this.#maxDataFrame);
          const chunk = stream.takeOutput(max);
          if (chunk) {
            this.credit.take(chunk.length);
            this.#port.counted(chunk.length, 0);
            this.#port.send(FrameType.DATA, stream.id, chunk);
            progress = true;
          } else if (stream.takeEnd()) {
            this.#port.send(FrameType.END, stream.id, undefined);
            progress = true;
          }
          if (stream.queuedBytes === 0 && !stream.endPending) {
            this.#withOutput.delete(stream);
            if (stream.closed) this.#release(stream);
          }
        }
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** Forgets a stream that is gone, giving back the session credit of what nobody consumed. */
  #release(stream: SessionStream): void {
    this.#open.delete(stream.id);
    this.#fromPeer.delete(stream.id);
    this.#withOutput.delete(stream);
    const unconsumed = stream.releaseUnconsumed();
    if (unconsumed > 0 && !this.#port.ended()) this.#consumedOnSession(unconsumed);
    this.#port.maybeFinishClosing();
  }

  #consumedOnSession(bytes: number): void {
    const grant = this.window.consumed(bytes);
    if (grant > 0) this.#port.sendControl(FrameType.WINDOW, 0, { credit: grant });
  }
}

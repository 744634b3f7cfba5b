/**
 * The session's way out: frames numbered, encoded and queued, then written to the transport in
 * batches. Small frames are assembled side by side in one shared slab, so a burst of calls is
 * one write; payloads over `COPY_PAYLOAD_MAX_BYTES` go out as they are, uncopied. A batch is
 * written at the end of the current microtask, or at once past `FLUSH_THRESHOLD_BYTES`. When the
 * transport reports its buffer full the outbox is `congested` until it drains: the session's
 * pump stops making DATA frames meanwhile, and other frames wait here (`queuedBytes`), where the
 * session can see how much a peer that does not read has made it hold.
 *
 * Every sequenced frame is also kept, as the bytes that were (or will be) written, until the peer
 * acknowledges it: frames the peer asks for again (damaged on the way) are written again on the
 * same transport (`resend`), and when the transport is replaced, what the peer has not received
 * is written again on the new one, byte for byte. Between transports (`detach`) the outbox is
 * congested, sequenced frames are only kept, and the rest (keepalive, acks) is dropped.
 */
import { GuestlinkError, toGuestlinkError } from "../errors.ts";
import { copyOf, release } from "../recycle.ts";
import type { Transport } from "../transport/transport.ts";
import type { FrameEncoder } from "../wire/encode.ts";
import { type FrameType, frameTypeName, HEADER_BYTES } from "../wire/frame.ts";

/** Outgoing bytes are written to the transport in batches of about this size (one writev). */
const FLUSH_THRESHOLD_BYTES = 256 * 1024;
/** Outgoing frames are assembled in buffers of this size. */
const SLAB_BYTES = 64 * 1024;
/** Payloads up to this size are copied next to their header; larger ones are sent as they are. */
const COPY_PAYLOAD_MAX_BYTES = 4 * 1024;

const RESOLVED = Promise.resolve();

export interface OutboxPort {
  /** Writing to `transport` failed: the connection is over. */
  failed(err: GuestlinkError, transport: Transport): void;
  /** The transport drained after being congested: more DATA may go. */
  drained(): void;
}

/** A sequenced frame kept for replay: its header (and small payload) bytes, and a large payload. */
interface Kept {
  seq: number;
  head: Uint8Array;
  payload: Uint8Array | undefined;
  bytes: number;
  /**
   * Replayed on the transport that may still queue its first write (`attach`): that write may
   * wait in the queue after the peer has the frame, so its payload never goes back for reuse.
   */
  again: boolean;
}

/** Frames dropped from the log before this many are kept unacknowledged compact it. */
const COMPACT_AFTER = 1024;

export class Outbox {
  /** Encodes for the peer; replaced once the handshake says what the peer accepts. */
  encoder: FrameEncoder;
  #transport: Transport | undefined;
  /** The transport written to last: what it still queues is written (see `attach`). */
  #lastTransport: Transport | undefined;
  readonly #port: OutboxPort;
  /** Largest number of bytes kept for replay. */
  readonly #replayLimit: number;
  #nextSeq = 1;
  /** Kept frames, oldest first, from `#logHead`; all unacknowledged. */
  #log: Kept[] = [];
  #logHead = 0;
  #logBytes = 0;
  /** The highest sequence number the peer has acknowledged. */
  #acked = 0;
  /** The highest sequence number dropped unacknowledged because the replay buffer overflowed. */
  #overflowedThrough = 0;
  #parts: Uint8Array[] = [];
  #bytes = 0;
  #slab = new Uint8Array(0);
  /** Where the bytes not yet moved into `#parts` start in `#slab`, and where they end. */
  #slabStart = 0;
  #slabEnd = 0;
  #flushQueued = false;
  #congested = false;
  #stopped = false;

  constructor(
    transport: Transport | undefined,
    encoder: FrameEncoder,
    port: OutboxPort,
    replayBufferBytes: number,
  ) {
    this.#transport = transport;
    this.#lastTransport = transport;
    this.#congested = transport === undefined;
    this.encoder = encoder;
    this.#port = port;
    this.#replayLimit = replayBufferBytes;
  }

  /** The last sequence number given to a frame (0 before the first). */
  get lastSeq(): number {
    return this.#nextSeq - 1;
  }

  /** Frames and bytes kept for replay, not yet acknowledged. */
  get kept(): { frames: number; bytes: number } {
    return { frames: this.#log.length - this.#logHead, bytes: this.#logBytes };
  }

  /** Whether a kept frame is of a type not in `types` (a frame header's type is its byte 5). */
  keepsOtherThan(types: readonly FrameType[]): boolean {
    for (let i = this.#logHead; i < this.#log.length; i++) {
      if (!types.includes((this.#log[i] as Kept).head[5] as FrameType)) return true;
    }
    return false;
  }

  /**
   * Whether the peer, having received everything up to `received`, can be given the rest: the
   * number is one we sent, not below what it acknowledged, and nothing after it was dropped.
   */
  canReplayFrom(received: number): boolean {
    return (
      Number.isInteger(received) &&
      received >= this.#acked &&
      received >= this.#overflowedThrough &&
      received <= this.lastSeq
    );
  }

  /** The peer has received every frame up to `received`: forget them. */
  ack(received: number): void {
    if (received <= this.#acked) return;
    this.#acked = received;
    const log = this.#log;
    let head = this.#logHead;
    while (head < log.length && (log[head] as Kept).seq <= received) {
      const kept = log[head] as Kept;
      this.#logBytes -= kept.bytes;
      // Written once and now received: nothing will write it again (recycle.ts).
      if (kept.payload !== undefined && !kept.again) release(kept.payload);
      head++;
    }
    this.#forget(head);
  }

  /** Stops writing: the transport is gone. Frames keep their numbers and are kept for replay. */
  detach(): void {
    this.#transport = undefined;
    this.#congested = true;
    this.#parts = [];
    this.#bytes = 0;
  }

  /**
   * Writes from now on to `transport`, starting with `first` (the HELLO, which must precede
   * everything), then every kept frame after `received` (what the peer lacks). `canReplayFrom`
   * must have said yes.
   */
  attach(
    transport: Transport,
    first: Uint8Array | undefined,
    received: number,
  ): { frames: number; bytes: number } {
    this.ack(received);
    this.#closeSlabRun();
    // A transport that was replaced was aborted, and what it still queued is never written: a
    // kept frame is then written once more in all, on this one. The same transport again (a
    // peer that began a new connection on it) may still hold earlier copies in its queue.
    const again = transport === this.#lastTransport;
    this.#transport = transport;
    this.#lastTransport = transport;
    this.#congested = false;
    const parts: Uint8Array[] = first === undefined ? [] : [first];
    let bytes = 0;
    for (let i = this.#logHead; i < this.#log.length; i++) {
      const kept = this.#log[i] as Kept;
      parts.push(kept.head);
      if (kept.payload !== undefined) parts.push(kept.payload);
      kept.again = again;
      bytes += kept.bytes;
    }
    // Frames queued since the transport went away are all in the log: send them once, from there.
    this.#parts = parts;
    this.#bytes = bytes;
    this.flush();
    return { frames: this.#log.length - this.#logHead, bytes };
  }

  /**
   * Writes again the kept frames up to `upTo`, ahead of what is queued and not yet handed to the
   * transport: the peer lost them, and holds what came after them until they arrive. Call `ack`
   * first with what the peer did receive. Returns how many frames.
   *
   * A payload goes as a copy, so the kept one still comes back to its read buffer once the peer
   * acknowledges it (recycle.ts): the copy is queued behind the first write, so a peer that has
   * either has had the first one written. Held back instead, every buffer a resent frame came
   * from was lost to reuse, and the agent read into a new 1 MiB one for nearly every junk burst
   * (14,000 more page faults in a `npm run chaos` round).
   */
  resend(upTo: number): number {
    if (this.#stopped || this.#transport === undefined) return 0;
    this.#closeSlabRun();
    const again: Uint8Array[] = [];
    let frames = 0;
    for (let i = this.#logHead; i < this.#log.length; i++) {
      const kept = this.#log[i] as Kept;
      if (kept.seq > upTo) break;
      again.push(kept.head);
      if (kept.payload !== undefined) again.push(copyOf(kept.payload));
      this.#bytes += kept.bytes;
      frames++;
    }
    if (frames > 0) this.#parts = [...again, ...this.#parts];
    this.flush();
    return frames;
  }

  /**
   * Writes an unnumbered control frame ahead of everything queued and not yet handed to the
   * transport: asking the peer to send again what it lost must not wait behind our own backlog.
   */
  sendFirst(type: FrameType, payload: Uint8Array): void {
    if (this.#stopped || this.#transport === undefined) return;
    const frame = this.encoder.encode({ type, streamId: 0, seq: 0, payload });
    this.#closeSlabRun();
    this.#parts.unshift(frame);
    this.#bytes += frame.length;
    this.flush();
  }

  /** Bytes queued here and not yet handed to the transport (it is congested, or not yet flushed). */
  get queuedBytes(): number {
    return this.#bytes;
  }

  /** Forgets everything: the session starts afresh with a new peer, numbering from 1. */
  reset(): void {
    this.#nextSeq = 1;
    this.#log = [];
    this.#logHead = 0;
    this.#logBytes = 0;
    this.#acked = 0;
    this.#overflowedThrough = 0;
  }

  /** The transport's buffer is full: wait for `drained()` before making more DATA. */
  get congested(): boolean {
    return this.#congested;
  }

  /**
   * Queues a frame. Sequenced frames take the next number of this direction. A payload larger
   * than the peer accepts is refused with FRAME_TOO_LARGE before it takes a number: a skipped
   * number would read as a lost frame.
   */
  send(
    type: FrameType,
    streamId: number,
    payload: Uint8Array | undefined,
    sequenced: boolean,
  ): void {
    if (this.#stopped) return;
    const length = payload === undefined ? 0 : payload.length;
    const max = this.encoder.options.maxFrameBytes;
    if (length > max) {
      throw new GuestlinkError(
        "FRAME_TOO_LARGE",
        `a ${frameTypeName(type)} of ${length} bytes is larger than the peer accepts (${max} bytes); send bulk data on a stream`,
        { details: { length, maxFrameBytes: max } },
      );
    }
    const seq = sequenced ? this.#nextSeq++ : 0;
    const copy = length <= COPY_PAYLOAD_MAX_BYTES;
    const need = HEADER_BYTES + (copy ? length : 0);
    if (this.#slab.length - this.#slabEnd < need) {
      this.#closeSlabRun();
      this.#slab = new Uint8Array(Math.max(SLAB_BYTES, need));
      this.#slabStart = 0;
      this.#slabEnd = 0;
    }
    const at = this.#slabEnd;
    const slab = this.#slab;
    this.encoder.encodeHeaderInto({ type, streamId, seq, payload }, slab, at);
    if (copy) {
      if (payload !== undefined && length > 0) {
        slab.set(payload, at + HEADER_BYTES);
        release(payload); // copied: the session no longer needs the caller's bytes
      }
      this.#slabEnd = at + need;
    } else {
      this.#slabEnd = at + HEADER_BYTES;
      this.#closeSlabRun();
      if (this.#transport !== undefined) this.#parts.push(payload as Uint8Array);
    }
    if (sequenced) {
      this.#keep(
        seq,
        slab.subarray(at, at + need),
        copy ? undefined : payload,
        HEADER_BYTES + length,
      );
    }
    this.#bytes += HEADER_BYTES + length;
    if (this.#bytes >= FLUSH_THRESHOLD_BYTES) this.flush();
    else if (!this.#flushQueued) {
      this.#flushQueued = true;
      RESOLVED.then(this.#flushLater);
    }
  }

  /**
   * Writes everything queued in one go; notes congestion so the pump pauses until drain. While the
   * transport is congested, frames stay queued here until it drains, unless `force` (last words
   * before the transport is closed or cut).
   */
  flush(force = false): void {
    this.#flushQueued = false;
    if (this.#stopped) return;
    if (this.#congested && !force && this.#transport !== undefined) return;
    this.#closeSlabRun();
    const transport = this.#transport;
    if (transport === undefined) {
      this.#parts = [];
      this.#bytes = 0;
      return;
    }
    if (this.#parts.length === 0) return;
    const parts = this.#parts;
    this.#parts = [];
    this.#bytes = 0;
    let below: boolean;
    try {
      below = transport.send(parts);
    } catch (err) {
      this.#port.failed(toGuestlinkError(err), transport);
      return;
    }
    if (!below && !this.#congested) {
      this.#congested = true;
      transport.drain().then(
        () => {
          if (this.#transport !== transport) return; // replaced meanwhile: attach() decides
          this.#congested = false;
          this.flush();
          this.#port.drained();
        },
        (err: unknown) => this.#port.failed(toGuestlinkError(err), transport),
      );
    }
  }

  /** Sends nothing more (the session ended); what is queued is dropped. */
  stop(): void {
    this.#stopped = true;
    this.#parts = [];
  }

  readonly #flushLater = (): void => this.flush();

  /** Moves the bytes written to the slab since the last run into the parts, as one part. */
  #closeSlabRun(): void {
    if (this.#slabEnd === this.#slabStart) return;
    if (this.#transport !== undefined) {
      this.#parts.push(this.#slab.subarray(this.#slabStart, this.#slabEnd));
    }
    this.#slabStart = this.#slabEnd;
  }

  #keep(seq: number, frame: Uint8Array, payload: Uint8Array | undefined, bytes: number): void {
    this.#log.push({ seq, head: frame, payload, bytes, again: false });
    this.#logBytes += bytes;
    const limit = this.#replayLimit;
    if (this.#logBytes <= limit) return;
    // Over the limit: the oldest frames go, and a peer that lacks them can no longer resume.
    const log = this.#log;
    let head = this.#logHead;
    while (this.#logBytes > limit && head < log.length) {
      const oldest = log[head] as Kept;
      this.#logBytes -= oldest.bytes;
      this.#overflowedThrough = oldest.seq;
      head++;
    }
    this.#forget(head);
  }

  /** Drops log entries before `head`, compacting the array once enough have gone. */
  #forget(head: number): void {
    if (head >= this.#log.length) {
      this.#log = [];
      this.#logHead = 0;
    } else if (head > COMPACT_AFTER && head * 2 > this.#log.length) {
      this.#log = this.#log.slice(head);
      this.#logHead = 0;
    } else {
      this.#logHead = head;
    }
  }
}

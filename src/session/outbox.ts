/**
 * The session's way out: frames numbered, encoded and queued, then written to the transport in
 * batches. Small frames are assembled side by side in one shared slab, so a burst of calls is
 * one write; payloads over `COPY_PAYLOAD_MAX_BYTES` go out as they are, uncopied. A batch is
 * written at the end of the current microtask, or at once past `FLUSH_THRESHOLD_BYTES`. When the
 * transport reports its buffer full the outbox is `congested` until it drains, and the session's
 * pump stops making DATA frames meanwhile.
 */
import { GuestlinkError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import type { FrameEncoder } from "../wire/encode.ts";
import { type FrameType, frameTypeName, HEADER_BYTES } from "../wire/frame.ts";
import { toGuestlinkError } from "./call.ts";

/** Outgoing bytes are written to the transport in batches of about this size (one writev). */
const FLUSH_THRESHOLD_BYTES = 256 * 1024;
/** Outgoing frames are assembled in buffers of this size. */
const SLAB_BYTES = 64 * 1024;
/** Payloads up to this size are copied next to their header; larger ones are sent as they are. */
const COPY_PAYLOAD_MAX_BYTES = 4 * 1024;

const RESOLVED = Promise.resolve();

export interface OutboxPort {
  /** Writing failed: the session ends with this. */
  failed(err: GuestlinkError): void;
  /** The transport drained after being congested: more DATA may go. */
  drained(): void;
}

export class Outbox {
  /** Encodes for the peer; replaced once the handshake says what the peer accepts. */
  encoder: FrameEncoder;
  readonly #transport: Transport;
  readonly #port: OutboxPort;
  #nextSeq = 1;
  #parts: Uint8Array[] = [];
  #bytes = 0;
  #slab = new Uint8Array(0);
  /** Where the bytes not yet moved into `#parts` start in `#slab`, and where they end. */
  #slabStart = 0;
  #slabEnd = 0;
  #flushQueued = false;
  #congested = false;
  #stopped = false;

  constructor(transport: Transport, encoder: FrameEncoder, port: OutboxPort) {
    this.#transport = transport;
    this.encoder = encoder;
    this.#port = port;
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
    this.encoder.encodeHeaderInto({ type, streamId, seq, payload }, this.#slab, at);
    if (copy) {
      if (payload !== undefined && length > 0) this.#slab.set(payload, at + HEADER_BYTES);
      this.#slabEnd = at + need;
    } else {
      this.#slabEnd = at + HEADER_BYTES;
      this.#closeSlabRun();
      this.#parts.push(payload as Uint8Array);
    }
    this.#bytes += HEADER_BYTES + length;
    if (this.#bytes >= FLUSH_THRESHOLD_BYTES) this.flush();
    else if (!this.#flushQueued) {
      this.#flushQueued = true;
      RESOLVED.then(this.#flushLater);
    }
  }

  /** Writes everything queued in one go; notes congestion so the pump pauses until drain. */
  flush(): void {
    this.#flushQueued = false;
    if (this.#stopped) return;
    this.#closeSlabRun();
    if (this.#parts.length === 0) return;
    const parts = this.#parts;
    this.#parts = [];
    this.#bytes = 0;
    let below: boolean;
    try {
      below = this.#transport.send(parts);
    } catch (err) {
      this.#port.failed(toGuestlinkError(err));
      return;
    }
    if (!below && !this.#congested) {
      this.#congested = true;
      this.#transport.drain().then(
        () => {
          this.#congested = false;
          this.#port.drained();
        },
        (err: unknown) => this.#port.failed(toGuestlinkError(err)),
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
    this.#parts.push(this.#slab.subarray(this.#slabStart, this.#slabEnd));
    this.#slabStart = this.#slabEnd;
  }
}

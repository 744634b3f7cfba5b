/**
 * A byte stream inside a session, attached to a call. Each direction is independent: ours ends
 * with `end()`, the peer's with its END frame; `reset()` aborts both.
 *
 * Flow control is credit-based, as in yamux and ssh2: we may send only as many bytes as the peer
 * has granted (its window), and we grant the peer more only as the application consumes what it
 * received. A reader that stops reading therefore stops the writer after at most one window, and
 * `write()` returning false tells the writer's source to pause rather than pile bytes up here.
 */
import { GuestlinkError } from "../errors.ts";
import type { ReceiveWindow, SendCredit } from "./flow-control.ts";

/** What a stream needs from its session. */
export interface StreamOwner {
  /** The stream has bytes or an END to send. */
  streamHasOutput(stream: SessionStream): void;
  /** The application consumed `bytes` received on the stream: credit may go back to the peer. */
  streamConsumed(stream: SessionStream, bytes: number): void;
  /** The application reset the stream: tell the peer. */
  streamReset(stream: SessionStream, code: string, message: string): void;
}

/** Receives what the peer sends on a stream. */
export interface StreamReader {
  data(chunk: Uint8Array): void;
  end(): void;
  error(err: GuestlinkError): void;
}

/** Chunks lying side by side in one buffer are sent as one DATA frame up to this size. */
export const MERGED_FRAME_BYTES = 64 * 1024;

export class SessionStream {
  readonly id: number;
  readonly name: string;

  /** Bytes the peer still lets us send (its window for this stream). */
  readonly credit: SendCredit;
  /** Bytes we still let the peer send, and what was consumed since we last granted more. */
  readonly window: ReceiveWindow;

  /** Called once after `write()` returned false, when the queue has room again. */
  onDrain: (() => void) | undefined;

  readonly #owner: StreamOwner;
  readonly #highWaterBytes: number;
  readonly #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #endQueued = false;
  #endSent = false;
  #remoteEnded = false;
  #closedError: GuestlinkError | undefined;
  #closed = false;
  #reader: StreamReader | undefined;
  #outputDoneWaiters: (() => void)[] = [];
  /** What arrived before a reader was attached (bounded by our receive window). */
  readonly #inbox: Uint8Array[] = [];
  #delivered = 0;
  #consumed = 0;
  #released = false;

  constructor(
    owner: StreamOwner,
    id: number,
    name: string,
    credit: SendCredit,
    window: ReceiveWindow,
    highWaterBytes: number,
  ) {
    this.#owner = owner;
    this.id = id;
    this.name = name;
    this.credit = credit;
    this.window = window;
    this.#highWaterBytes = highWaterBytes;
  }

  /** True once both directions have ended or the stream was reset. */
  get closed(): boolean {
    return this.#closed;
  }

  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Our direction has ended and everything queued, END included, has gone to the session. */
  get outputDone(): boolean {
    return this.#endSent || this.#closed;
  }

  // ---- our direction -------------------------------------------------------------------------

  /**
   * Queues `chunk` to send. Returns false when the queue holds a window's worth or more: pause
   * the source until `onDrain`. The chunk must not be modified afterwards.
   */
  write(chunk: Uint8Array): boolean {
    if (this.#closed) throw this.#closedError ?? streamClosed(this);
    if (this.#endQueued)
      throw new GuestlinkError("STREAM_CLOSED", `stream "${this.name}" was ended`);
    if (chunk.length > 0) {
      this.#queue.push(chunk);
      this.#queuedBytes += chunk.length;
      this.#owner.streamHasOutput(this);
    }
    return this.#queuedBytes < this.#highWaterBytes;
  }

  /** Ends our direction once the queued bytes are sent. */
  end(): void {
    if (this.#closed || this.#endQueued) return;
    this.#endQueued = true;
    this.#owner.streamHasOutput(this);
  }

  /** Aborts both directions and tells the peer why. */
  reset(code = "CANCELLED", message = "stream reset"): void {
    if (this.#closed) return;
    this.#owner.streamReset(this, code, message);
    this.fail(
      new GuestlinkError("STREAM_RESET", `stream "${this.name}" reset: ${message}`, {
        details: { code, by: "local" },
      }),
    );
  }

  /** For the session: takes up to `max` queued bytes as the payload of one DATA frame. */
  takeOutput(max: number): Uint8Array | undefined {
    const queue = this.#queue;
    const head = queue[0];
    if (head === undefined || max <= 0) return undefined;
    let length = Math.min(head.length, max);
    let whole = length === head.length ? 1 : 0;
    // Chunks read one after another into one buffer (recycle.ts) go as one frame, uncopied, up
    // to the size of a pipe's read: larger frames are more often hit by damage on a lossy link.
    const merged = Math.min(max, MERGED_FRAME_BYTES);
    while (whole > 0 && length < merged) {
      const next = queue[whole];
      if (
        next === undefined ||
        next.buffer !== head.buffer ||
        next.byteOffset !== head.byteOffset + length
      ) {
        break;
      }
      const take = Math.min(next.length, merged - length);
      length += take;
      if (take < next.length) {
        queue[whole] = next.subarray(take);
        break;
      }
      whole++;
    }
    if (whole === 0) queue[0] = head.subarray(length);
    else if (whole === 1) queue.shift();
    else queue.splice(0, whole);
    const chunk =
      length === head.length ? head : new Uint8Array(head.buffer, head.byteOffset, length);
    this.#queuedBytes -= chunk.length;
    this.credit.take(chunk.length);
    if (this.onDrain && this.#queuedBytes < this.#highWaterBytes) {
      const drain = this.onDrain;
      this.onDrain = undefined;
      drain();
    }
    return chunk;
  }

  /** For the session: true when the queue is empty and an END is due. */
  takeEnd(): boolean {
    if (!this.#endQueued || this.#endSent || this.#queuedBytes > 0) return false;
    this.#endSent = true;
    this.#maybeClosed();
    this.#notifyOutputDone();
    return true;
  }

  /** Calls `fn` once our direction is done: END handed to the session, or the stream failed. */
  whenOutputDone(fn: () => void): void {
    if (this.outputDone) fn();
    else this.#outputDoneWaiters.push(fn);
  }

  /** For the session: whether an END is still owed after the queue. */
  get endPending(): boolean {
    return this.#endQueued && !this.#endSent;
  }

  // ---- the peer's direction ------------------------------------------------------------------

  /** Starts delivering what the peer sends; what arrived before is delivered at once. */
  attach(reader: StreamReader): void {
    if (this.#reader)
      throw new GuestlinkError("STREAM_CLOSED", `stream "${this.name}" already has a reader`);
    this.#reader = reader;
    for (const chunk of this.#inbox.splice(0)) reader.data(chunk);
    if (this.#closedError) reader.error(this.#closedError);
    else if (this.#remoteEnded) reader.end();
  }

  /** The application is done with `bytes` of what it was given. */
  consumed(bytes: number): void {
    if (bytes <= 0 || this.#released) return;
    this.#consumed += bytes;
    this.#owner.streamConsumed(this, bytes);
  }

  /**
   * For the session, once the stream is gone: the bytes the peer sent that were never consumed
   * (still in the inbox, or held by a reader that gave up), so their session credit can go back.
   * Later `consumed()` calls are ignored: they were counted here.
   */
  releaseUnconsumed(): number {
    if (this.#released) return 0;
    this.#released = true;
    return this.#delivered - this.#consumed;
  }

  /** For the session: bytes from a DATA frame (already checked against our window). */
  deliver(chunk: Uint8Array): void {
    this.#delivered += chunk.length;
    if (this.#reader) this.#reader.data(chunk);
    else this.#inbox.push(chunk);
  }

  /** For the session: the peer's END. */
  remoteEnd(): void {
    if (this.#remoteEnded) return;
    this.#remoteEnded = true;
    if (this.#reader && !this.#closedError) this.#reader.end();
    this.#maybeClosed();
  }

  get remoteEnded(): boolean {
    return this.#remoteEnded;
  }

  /** For the session: the stream failed (peer RESET, session end). Idempotent. */
  fail(err: GuestlinkError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closedError = err;
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#reader?.error(err);
    const drain = this.onDrain;
    this.onDrain = undefined;
    drain?.();
    this.#notifyOutputDone();
  }

  #notifyOutputDone(): void {
    for (const fn of this.#outputDoneWaiters.splice(0)) fn();
  }

  #maybeClosed(): void {
    if (this.#endSent && this.#remoteEnded) this.#closed = true;
  }
}

function streamClosed(stream: SessionStream): GuestlinkError {
  return new GuestlinkError("STREAM_CLOSED", `stream "${stream.name}" is closed`);
}

/**
 * An in-process connected pair of transports for deterministic tests, honouring backpressure the
 * way ws's `test/duplex-pair.js` does: what one end sends queues, unread, for the other end's
 * iterator; `send` reports false once the unread bytes reach the high-water mark, and `drain()`
 * resolves only when the reader has pulled them below it. No timers: everything moves on promise
 * resolution, so a test's outcome depends only on the order of its own awaits.
 */
import { InvalidOptionError, TransportClosedError, TransportFailedError } from "../errors.ts";
import { shared } from "../recycle.ts";
import { abortedError, CloseLatch, SendGate } from "./gates.ts";
import { Inbound } from "./inbound.ts";
import type { Transport } from "./transport.ts";

export interface MemoryPairOptions {
  /** Unread bytes (per direction) at which `send` returns false. Default 64 KiB. */
  highWaterMark?: number;
}

export const MEMORY_HIGH_WATER_MARK_BYTES = 64 * 1024;
const MAX_HIGH_WATER_MARK_BYTES = 2 ** 31;

/** Two connected transports: what one sends, the other reads. */
export function memoryPair(options: MemoryPairOptions = {}): [Transport, Transport] {
  const highWaterMark = options.highWaterMark ?? MEMORY_HIGH_WATER_MARK_BYTES;
  if (
    !Number.isInteger(highWaterMark) ||
    highWaterMark < 1 ||
    highWaterMark > MAX_HIGH_WATER_MARK_BYTES
  ) {
    throw new InvalidOptionError(
      `highWaterMark must be an integer from 1 to ${MAX_HIGH_WATER_MARK_BYTES}`,
      { details: { highWaterMark } },
    );
  }
  const a = new MemoryTransport("memory:a", highWaterMark);
  const b = new MemoryTransport("memory:b", highWaterMark);
  a.connect(b);
  b.connect(a);
  return [a, b];
}

class MemoryTransport implements Transport {
  readonly description: string;
  /** What the peer sent us; the peer's `send` pushes here and watches its high-water mark. */
  readonly inbound: Inbound;
  #peer: MemoryTransport | undefined;
  /** Closes once nothing more may be sent: we closed, aborted, or the peer aborted. */
  readonly #send = new SendGate();
  /** Set when the peer aborted before we closed: close() reports it. */
  #broken: TransportFailedError | undefined;
  #aborted = false;
  readonly #close = new CloseLatch();
  #fullyClosed = false;

  constructor(description: string, highWaterMark: number) {
    this.description = description;
    this.inbound = new Inbound(description, highWaterMark, () => this.#peer?.onPeerRead());
  }

  connect(peer: MemoryTransport): void {
    this.#peer = peer;
  }

  send(chunks: readonly Uint8Array[]): boolean {
    this.#send.check();
    const inbound = this.#target().inbound;
    for (const chunk of chunks) {
      // The peer gets these very bytes, and its reader may keep them (src/recycle.ts).
      shared(chunk);
      inbound.push(chunk);
    }
    return inbound.belowHighWater;
  }

  drain(): Promise<void> {
    return this.#send.drain(this.#target().inbound.belowHighWater);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.inbound.iterator();
  }

  close(): Promise<void> {
    if (this.#close.promise !== undefined) return this.#close.promise;
    const closing = this.#close.begin(this.#aborted);
    if (this.#aborted) return closing;
    if (this.#broken !== undefined) {
      // The peer aborted before we closed: what we had sent may never have been read.
      this.#finishClose(this.#broken);
      return closing;
    }
    this.#send.stop(new TransportClosedError(`${this.description} is closed`));
    this.#target().inbound.end();
    this.checkClosed();
    this.#target().checkClosed();
    return closing;
  }

  abort(reason?: Error): void {
    if (this.#aborted) return;
    this.#aborted = true;
    const closed = abortedError(this.description, reason);
    this.#send.stop(closed);
    this.inbound.fail(closed, true);
    const peer = this.#target();
    if (!this.#fullyClosed) peer.peerAborted(reason);
    this.#finishClose();
  }

  /** The peer's reader took bytes: wake our drains if its queue fell below the mark. */
  onPeerRead(): void {
    if (this.#send.waiting && this.#target().inbound.belowHighWater) this.#send.wake();
  }

  peerAborted(reason: Error | undefined): void {
    const failed = new TransportFailedError(
      `the peer of ${this.description} aborted the connection${reason === undefined ? "" : `: ${reason.message}`}`,
      reason === undefined ? undefined : { cause: reason },
    );
    if (this.#send.closed === undefined) this.#broken = failed;
    this.#send.stop(
      new TransportClosedError(`${this.description} cannot send: the connection broke`, {
        cause: failed,
      }),
    );
    this.inbound.fail(failed, true);
    this.checkClosed();
  }

  /** Completes a pending close() once the peer's side has ended too. */
  checkClosed(): void {
    if (this.#close.pending && this.inbound.settled) this.#finishClose();
  }

  #finishClose(err?: Error): void {
    this.#fullyClosed = true;
    this.#close.finish(err);
  }

  #target(): MemoryTransport {
    return this.#peer as MemoryTransport;
  }
}

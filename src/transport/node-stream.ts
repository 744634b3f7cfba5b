/**
 * The adapter from Node streams to a Transport, shared by the socket, stdio and child-process
 * transports. It wraps a Duplex (a socket) or a Readable plus a Writable (stdin/stdout, a child's
 * stdout/stdin):
 *
 * - `send` writes all chunks under one cork, so a stream with `_writev` (sockets, pipes) gets them
 *   in one vectored write, without copying; its result and `drain()` follow `write()` and 'drain'.
 * - Incoming chunks go to our own small queue (`Inbound`) straight from 'data' events, and the
 *   readable is paused while the queue is at its high-water mark. A consumer that is waiting gets
 *   a chunk in the same tick it arrives; Readable's own async iterator adds a buffer and a few
 *   promise hops per chunk, which shows in round-trip latency.
 * - `close()` ends the writable and waits for it to close. A socket closes once both directions
 *   are done, so `close()` also waits for the peer to end its side (bytes it sends meanwhile are
 *   still delivered to the iterator); `abort()` destroys at once.
 */
import type { Readable, Writable } from "node:stream";
import { TransportClosedError, TransportFailedError } from "../errors.ts";
import { abortedError, CLOSE_TIMEOUT_MS, CloseLatch, SendGate } from "./gates.ts";
import { Inbound } from "./inbound.ts";
import type { SlabReads } from "./slab-reads.ts";
import type { Transport } from "./transport.ts";

/** Received bytes queued for the consumer before the readable is paused. */
export const READ_HIGH_WATER_MARK_BYTES = 256 * 1024;

export interface NodeStreamTransportOptions {
  /** The address, for `description` and error messages. */
  description: string;
  /** Received bytes held for the consumer before reading pauses. Default 256 KiB. */
  readHighWaterMark?: number;
  /**
   * Awaited when the readable ends, before the iteration ends; an error it returns makes the
   * iteration throw it instead (a child process that died says how, after its last bytes).
   */
  beforeEnd?: () => Promise<Error | undefined>;
  /** Replaces destroying both streams on `abort()` (TCP resets the connection instead). */
  destroy?: () => void;
  /** How long `close()` waits before cutting the connection. Default `CLOSE_TIMEOUT_MS`. */
  closeTimeoutMs?: number;
  /**
   * The socket was made with `onread` from this (see slab-reads.ts): its bytes come from there,
   * not from 'data' events.
   */
  reads?: SlabReads;
  /** What the connection is: see `Transport`. */
  lossy?: boolean;
  redialable?: boolean;
  dropsBeforePeer?: boolean;
  keyId?: string;
}

/** What to call an errno-style error in a message: its code when it has one. */
export function errorLabel(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" ? code : err.message;
  }
  return String(err);
}

export class NodeStreamTransport implements Transport {
  readonly description: string;
  readonly lossy: boolean;
  readonly redialable: boolean;
  readonly dropsBeforePeer: boolean;
  readonly keyId: string | undefined;
  readonly #readable: Readable;
  readonly #writable: Writable;
  readonly #duplex: boolean;
  readonly #inbound: Inbound;
  readonly #options: NodeStreamTransportOptions;
  #paused = false;
  /** All our bytes were handed to the system and the end was sent ('finish'). */
  #finished = false;
  #inputDone = false;
  /** Bytes arrived since the quiet timer was armed. */
  #arrived = false;
  /** Reading was paused at some point since the quiet timer was armed. */
  #pausedInWindow = false;
  #quietTimer: ReturnType<typeof setTimeout> | undefined;
  /** Closes once nothing more may be sent. */
  readonly #send = new SendGate();
  /** The failure that broke the sending side before all our bytes were written, if any. */
  #sendFailure: TransportFailedError | undefined;
  #aborted = false;
  readonly #close = new CloseLatch();
  readonly #writableClosed: Promise<void>;

  constructor(readable: Readable, writable: Writable, options: NodeStreamTransportOptions) {
    this.description = options.description;
    this.lossy = options.lossy === true;
    this.redialable = options.redialable === true;
    this.dropsBeforePeer = options.dropsBeforePeer === true;
    this.keyId = options.keyId;
    this.#readable = readable;
    this.#writable = writable;
    this.#duplex = (readable as unknown) === writable;
    this.#options = options;
    this.#inbound = new Inbound(
      options.description,
      options.readHighWaterMark ?? READ_HIGH_WATER_MARK_BYTES,
      () => this.#onRead(),
    );

    this.#writableClosed = new Promise<void>((resolve) => {
      if (writable.closed || writable.destroyed) resolve();
      else writable.once("close", () => resolve());
    });
    // Our own flag: process.stdout resets its state when "destroyed", so `writableFinished` lies.
    writable.once("finish", () => {
      this.#finished = true;
    });
    writable.on("drain", () => this.#send.wake());
    if (!this.#duplex) {
      writable.on("error", (err: Error) => this.#onWritableBroken(err));
      writable.once("close", () => {
        if (!this.#finished) this.#onWritableBroken(undefined);
      });
    }
    if (options.reads === undefined)
      readable.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    else options.reads.attach((chunk) => this.#onData(chunk));
    readable.once("end", () => this.#onEnd());
    readable.on("error", (err: Error) => this.#onError(err));
    readable.once("close", () => this.#onReadableClose());
    // Nothing is read into its buffers any more (see #destroy for the sooner case).
    if (options.reads !== undefined) readable.once("close", () => options.reads?.closed());
    if (readable.readableEnded) this.#onEnd();
    else if (readable.destroyed) this.#onReadableClose();
  }

  send(chunks: readonly Uint8Array[]): boolean {
    this.#send.check();
    const w = this.#writable;
    if (chunks.length === 1) {
      const chunk = chunks[0] as Uint8Array;
      if (chunk.length > 0) w.write(chunk);
    } else {
      w.cork();
      for (const chunk of chunks) if (chunk.length > 0) w.write(chunk);
      w.uncork();
    }
    return !w.writableNeedDrain;
  }

  drain(): Promise<void> {
    return this.#send.drain(!this.#writable.writableNeedDrain);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.#inbound.iterator();
  }

  close(): Promise<void> {
    if (this.#close.promise !== undefined) return this.#close.promise;
    const closing = this.#close.begin(this.#aborted);
    if (this.#aborted) return closing;
    if (this.#sendFailure !== undefined) {
      // It broke before we closed: what we sent may not have arrived, and close() must say so.
      // The input is left alone: a child whose stdin broke may still be writing to its stdout.
      this.#finishClose(this.#sendFailure);
      return closing;
    }
    this.#send.stop(new TransportClosedError(`${this.description} is closed`));
    this.#writable.end();
    this.#waitClosed();
    const timeoutMs = this.#options.closeTimeoutMs ?? CLOSE_TIMEOUT_MS;
    this.#close.deadline(timeoutMs, () => {
      // The peer never closed its side (or never read what we sent): cut. If all our bytes had
      // left, the close still did its job; if not, it must say so.
      this.#finishClose(
        this.#finished
          ? undefined
          : new TransportFailedError(
              `${this.description}: what was sent had not left ${timeoutMs} ms after closing (the peer does not read); the connection was cut`,
              { details: { timeoutMs } },
            ),
      );
      this.abort();
    });
    return closing;
  }

  abort(reason?: Error): void {
    if (this.#aborted) return;
    this.#aborted = true;
    const closed = abortedError(this.description, reason);
    this.#send.stop(closed);
    this.#inbound.fail(closed, true);
    this.#inputDone = true;
    this.#clearQuietTimer();
    this.#destroy();
    this.#finishClose();
  }

  /**
   * Ends the input without waiting for the readable's end (after a child process exited while
   * something else keeps its stdout open): the iteration ends after what was received, or
   * throws `err`.
   */
  finishInput(err?: Error): void {
    if (this.#inputDone) return;
    this.#inputDone = true;
    this.#clearQuietTimer();
    if (err === undefined) this.#inbound.end();
    else this.#inbound.fail(err, false);
    this.#readable.destroy();
  }

  /**
   * Ends the input once no bytes have arrived for `quietMs` (timers unref'd), counting only
   * quiet that is not our own doing: while the consumer's backpressure holds the readable
   * paused, the bytes behind it are still owed to the consumer and the wait goes on.
   */
  finishInputWhenQuiet(err: Error | undefined, quietMs: number): void {
    if (this.#inputDone || this.#quietTimer !== undefined) return;
    const arm = () => {
      this.#arrived = false;
      this.#pausedInWindow = this.#paused;
      this.#quietTimer = setTimeout(check, quietMs);
      this.#quietTimer.unref();
    };
    // A window counts as quiet only if reading was on throughout it: bytes behind a pause need
    // a pass of the event loop's I/O phase after resuming to show up.
    const check = () => {
      this.#quietTimer = undefined;
      if (this.#inputDone) return;
      if (
        this.#arrived ||
        this.#pausedInWindow ||
        this.#paused ||
        this.#readable.readableLength > 0
      ) {
        arm();
      } else {
        this.finishInput(err);
      }
    };
    arm();
  }

  async #waitClosed(): Promise<void> {
    await this.#writableClosed;
    this.#finishClose(this.#sendFailure);
  }

  #finishClose(err?: Error): void {
    this.#close.finish(err);
  }

  #destroy(): void {
    if (this.#options.destroy !== undefined) {
      this.#options.destroy();
    } else {
      this.#readable.destroy();
      if (!this.#duplex) this.#writable.destroy();
    }
    // A destroyed socket has closed its handle at once: no read comes after this, though its
    // 'close' event does only later. A connection dialled again may then reuse its buffers.
    if (this.#readable.destroyed) this.#options.reads?.closed();
  }

  #onData(chunk: Uint8Array): void {
    if (this.#inputDone) return;
    this.#arrived = true;
    if (!this.#inbound.push(chunk) && !this.#paused) {
      this.#paused = true;
      this.#pausedInWindow = true;
      this.#readable.pause();
    }
  }

  #onRead(): void {
    if (this.#paused && this.#inbound.belowHighWater && !this.#inputDone) {
      this.#paused = false;
      this.#readable.resume();
    }
  }

  #onEnd(): void {
    if (this.#inputDone) return;
    this.#clearQuietTimer();
    const beforeEnd = this.#options.beforeEnd;
    if (beforeEnd === undefined) {
      this.#inputDone = true;
      this.#inbound.end();
      return;
    }
    beforeEnd().then(
      (err) => this.finishInput(err),
      (err: unknown) => this.finishInput(err instanceof Error ? err : new Error(String(err))),
    );
  }

  #clearQuietTimer(): void {
    if (this.#quietTimer !== undefined) clearTimeout(this.#quietTimer);
    this.#quietTimer = undefined;
  }

  #onError(err: Error): void {
    const failed = this.#failed(err);
    if (this.#duplex) this.#breakSending(failed);
    if (!this.#inputDone) {
      this.#inputDone = true;
      this.#clearQuietTimer();
      this.#inbound.fail(failed, false);
    }
  }

  #onReadableClose(): void {
    if (this.#inputDone || this.#readable.readableEnded) return;
    // Destroyed without an 'end' or an 'error': whatever did it, the stream did not finish.
    this.#onError(new Error("the stream was closed before its end"));
  }

  #onWritableBroken(err: Error | undefined): void {
    this.#breakSending(
      this.#failed(err ?? new Error("the stream was closed before everything was written")),
    );
  }

  #breakSending(failed: TransportFailedError): void {
    if (this.#sendFailure === undefined && !this.#finished && !this.#aborted) {
      this.#sendFailure = failed;
    }
    this.#send.stop(
      new TransportClosedError(`${this.description} cannot send: the connection broke`, {
        cause: failed,
      }),
    );
  }

  #failed(err: Error): TransportFailedError {
    return new TransportFailedError(
      `the connection to ${this.description} broke (${errorLabel(err)})`,
      { cause: err },
    );
  }
}

/**
 * The bookkeeping every transport does the same way: whether it may still send and who waits
 * for a drain (`SendGate`), the one promise its `close()` returns (`CloseLatch`), and the error
 * an aborted one fails with (`abortedError`).
 */
import { TransportClosedError } from "../errors.ts";

type Drain = { resolve(): void; reject(err: unknown): void };

export class SendGate {
  #closed: TransportClosedError | undefined;
  #drains: Drain[] = [];

  /** Why nothing more may be sent, once that is so. */
  get closed(): TransportClosedError | undefined {
    return this.#closed;
  }

  /** Throws why sending stopped, if it has. */
  check(): void {
    if (this.#closed !== undefined) throw this.#closed;
  }

  /** For `drain()`: at once when below the high-water mark, else when `wake()` is called. */
  drain(belowHighWater: boolean): Promise<void> {
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    if (belowHighWater) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#drains.push({ resolve, reject });
    });
  }

  get waiting(): boolean {
    return this.#drains.length > 0;
  }

  /** The send buffer fell below its mark: everyone waiting may send again. */
  wake(): void {
    for (const d of this.#take()) d.resolve();
  }

  /** Nothing more may be sent (the first reason given is kept); waiting drains fail with it. */
  stop(err: TransportClosedError): void {
    if (this.#closed === undefined) this.#closed = err;
    for (const d of this.#take()) d.reject(err);
  }

  #take(): Drain[] {
    const drains = this.#drains;
    this.#drains = [];
    return drains;
  }
}

/** How long `close()` waits for our bytes to leave and the peer to close its side before cutting. */
export const CLOSE_TIMEOUT_MS = 10_000;

export class CloseLatch {
  #promise: Promise<void> | undefined;
  #done: ((err?: Error) => void) | undefined;
  #deadline: ReturnType<typeof setTimeout> | undefined;

  /** The close under way (or done), if `close()` was called. */
  get promise(): Promise<void> | undefined {
    return this.#promise;
  }

  /** A close has begun and not finished. */
  get pending(): boolean {
    return this.#done !== undefined;
  }

  /** Begins the close; with `done`, it is over at once (after an abort). */
  begin(done = false): Promise<void> {
    this.#promise = done
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          this.#done = (err) => (err === undefined ? resolve() : reject(err));
        });
    return this.#promise;
  }

  /**
   * Calls `onTimeout` if the close is still pending after `ms` (a peer that never closes its
   * side must not hold a close forever); it should cut the transport and `finish`.
   */
  deadline(ms: number, onTimeout: () => void): void {
    if (this.#done === undefined || this.#deadline !== undefined) return;
    this.#deadline = setTimeout(() => {
      this.#deadline = undefined;
      if (this.#done !== undefined) onTimeout();
    }, ms);
    this.#deadline.unref();
  }

  /** Settles a pending close, with `err` if what was sent may not have arrived. */
  finish(err?: Error): void {
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    this.#deadline = undefined;
    const done = this.#done;
    this.#done = undefined;
    done?.(err);
  }
}

/** What `abort(reason)` fails the sender and reader of `description` with. */
export function abortedError(description: string, reason?: Error): TransportClosedError {
  return new TransportClosedError(
    `${description} was aborted`,
    reason === undefined ? undefined : { cause: reason },
  );
}

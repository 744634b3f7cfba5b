/**
 * A listener's accepted connections, in order, for its one consumer: what the accept loop's
 * `next()` waits on. Connections accepted but not yet taken when the listener closes are
 * aborted; those already taken belong to the consumer.
 */
import { TransportClosedError } from "../errors.ts";
import type { Transport } from "./transport.ts";

type Waiter = { resolve(r: IteratorResult<Transport>): void; reject(err: unknown): void };

export class AcceptQueue {
  readonly #address: string;
  #accepted: Transport[] = [];
  #waiters: Waiter[] = [];
  #error: Error | undefined;
  #closed = false;
  #iterated = false;

  /** `address` is the listener's, for messages. */
  constructor(address: string) {
    this.#address = address;
  }

  /** The listener's iterator: one reader only; leaving the loop early calls `close`. */
  iterator(close: () => Promise<void>): AsyncIterator<Transport> {
    if (this.#iterated) {
      throw new TypeError(`the listener on ${this.#address} already has a reader`);
    }
    this.#iterated = true;
    return {
      next: () =>
        new Promise((resolve, reject) => {
          this.#waiters.push({ resolve, reject });
          this.#wake();
        }),
      // Leaving the accept loop early means no more connections are wanted.
      return: async () => {
        await close();
        return { done: true, value: undefined };
      },
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A new connection for the consumer; aborted if the listener closed meanwhile. */
  push(transport: Transport): void {
    if (this.#closed) {
      transport.abort(this.#closedError());
      return;
    }
    this.#accepted.push(transport);
    this.#wake();
  }

  /** Accepting failed for good: the consumer's next `next()` rejects with `err`. */
  fail(err: Error): void {
    this.#error ??= err;
    this.#wake();
  }

  /** No more connections: those not taken are aborted, and the consumer's loop ends. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const unclaimed = this.#accepted;
    this.#accepted = [];
    const reason = this.#closedError();
    for (const t of unclaimed) t.abort(reason);
    this.#wake();
  }

  #closedError(): TransportClosedError {
    return new TransportClosedError(`the listener on ${this.#address} was closed`);
  }

  #wake(): void {
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters[0] as Waiter;
      const transport = this.#accepted.shift();
      if (transport !== undefined) {
        this.#waiters.shift();
        waiter.resolve({ done: false, value: transport });
      } else if (this.#error !== undefined) {
        this.#waiters.shift();
        waiter.reject(this.#error);
      } else if (this.#closed) {
        this.#waiters.shift();
        waiter.resolve({ done: true, value: undefined });
      } else {
        return;
      }
    }
  }
}

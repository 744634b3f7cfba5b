/**
 * Received bytes waiting for the transport's one consumer. Every transport feeds one of these and
 * hands out its iterator: chunks come out in order and unchanged (no copies, no merging); the
 * consumer's pace is reported back through `onRead` so the producer can apply backpressure.
 */

type Waiter = {
  resolve(result: IteratorResult<Uint8Array>): void;
  reject(err: unknown): void;
};

const DONE: IteratorResult<Uint8Array> = { done: true, value: undefined };
/** Compact the chunk array once this many consumed slots sit at its front. */
const COMPACT_AFTER_CHUNKS = 1024;

export class Inbound {
  readonly #highWaterMark: number;
  readonly #onRead: () => void;
  readonly #description: string;
  #chunks: Uint8Array[] = [];
  #head = 0;
  #bytes = 0;
  #ended = false;
  #error: Error | undefined;
  #discarding = false;
  #iterated = false;
  readonly #waiters: Waiter[] = [];

  /**
   * @param highWaterMark queued bytes at or above which `push` returns false.
   * @param onRead called after the consumer took bytes (or stopped consuming), so the producer
   *   can resume once `belowHighWater` holds again.
   */
  constructor(description: string, highWaterMark: number, onRead: () => void) {
    this.#description = description;
    this.#highWaterMark = highWaterMark;
    this.#onRead = onRead;
  }

  /** Bytes received and not yet taken by the consumer. */
  get bytes(): number {
    return this.#bytes;
  }

  get belowHighWater(): boolean {
    return this.#bytes < this.#highWaterMark;
  }

  /** True once the end or a failure was recorded: nothing more will be queued. */
  get settled(): boolean {
    return this.#ended || this.#error !== undefined;
  }

  /** True when the consumer stopped iterating early; pushed bytes are dropped. */
  get discarding(): boolean {
    return this.#discarding;
  }

  /** Queues a chunk for the consumer; returns false once the queue reaches the high-water mark. */
  push(chunk: Uint8Array): boolean {
    if (this.settled || this.#discarding || chunk.length === 0) return this.belowHighWater;
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) {
      // Someone is already waiting: hand the chunk over without queueing it.
      waiter.resolve({ done: false, value: chunk });
      return true;
    }
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    return this.belowHighWater;
  }

  /** The peer finished sending: the iteration ends after the queued chunks. */
  end(): void {
    if (this.settled) return;
    this.#ended = true;
    this.#wake();
  }

  /**
   * The stream broke: the iteration throws `err`, after the queued chunks unless `dropQueued`
   * (an abort discards what was not read yet).
   */
  fail(err: Error, dropQueued: boolean): void {
    if (dropQueued) this.#clear();
    // The first failure is the one that explains what happened.
    if (this.#error !== undefined) return;
    // After a clean end the bytes were complete; only an abort, which drops bytes, overrides it.
    if (this.#ended && !dropQueued) return;
    this.#ended = false;
    this.#error = err;
    this.#wake();
  }

  /** Removes and returns the chunks not yet taken, in order (a transport handing them on). */
  takeQueued(): Uint8Array[] {
    const queued = this.#chunks.slice(this.#head);
    this.#clear();
    return queued;
  }

  /** The consumer's iterator; a transport has one consumer, so this works once. */
  iterator(): AsyncIterableIterator<Uint8Array> {
    if (this.#iterated) {
      throw new TypeError(`${this.#description} is already being read: a transport has one reader`);
    }
    this.#iterated = true;
    const iterator: AsyncIterableIterator<Uint8Array> = {
      next: () => this.#next(),
      return: () => {
        this.#stop();
        return Promise.resolve(DONE);
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  #next(): Promise<IteratorResult<Uint8Array>> {
    if (this.#waiters.length === 0) {
      if (this.#head < this.#chunks.length) return Promise.resolve(this.#take());
      if (this.#error !== undefined) return Promise.reject(this.#error);
      if (this.#ended || this.#discarding) return Promise.resolve(DONE);
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
    });
  }

  #take(): IteratorResult<Uint8Array> {
    const chunk = this.#chunks[this.#head] as Uint8Array;
    this.#head++;
    if (this.#head === this.#chunks.length) {
      this.#chunks = [];
      this.#head = 0;
    } else if (this.#head >= COMPACT_AFTER_CHUNKS && this.#head * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
    this.#bytes -= chunk.length;
    this.#onRead();
    return { done: false, value: chunk };
  }

  /** Settles waiters that can be settled now: queued chunks first, then the end or the error. */
  #wake(): void {
    while (this.#waiters.length > 0) {
      if (this.#head < this.#chunks.length) {
        (this.#waiters.shift() as Waiter).resolve(this.#take());
      } else if (this.#error !== undefined) {
        (this.#waiters.shift() as Waiter).reject(this.#error);
      } else if (this.#ended || this.#discarding) {
        (this.#waiters.shift() as Waiter).resolve(DONE);
      } else {
        return;
      }
    }
  }

  /** The consumer stopped early: drop what is queued and whatever arrives, so nothing stalls. */
  #stop(): void {
    this.#discarding = true;
    this.#clear();
    this.#wake();
    this.#onRead();
  }

  #clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#bytes = 0;
  }
}

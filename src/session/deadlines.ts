/**
 * Every call carries a deadline, on both sides. Arming a runtime timer for each (and cancelling
 * it again a few microseconds later, when the reply arrives) was a measurable part of a call's
 * cost (bench/session: 1–1.8 µs of about 10). One timer per session over a min-heap of deadlines
 * does the same work: cancelling is a flag, and the heap drops cancelled entries as it goes and
 * rebuilds itself when they pile up.
 */
import type { Clock, Timer } from "./runtime.ts";

/** A scheduled deadline; `cancel()` is idempotent. */
export interface Deadline {
  cancel(): void;
}

interface Entry extends Deadline {
  at: number;
  fn: (() => void) | undefined;
}

export class DeadlineQueue {
  readonly #clock: Clock;
  #heap: Entry[] = [];
  #cancelled = 0;
  #timer: Timer | undefined;
  #armedAt = Infinity;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Runs `fn` at `at` (monotonic ms) unless cancelled first. */
  add(at: number, fn: () => void): Deadline {
    const entry: Entry = {
      at,
      fn,
      cancel: () => {
        if (entry.fn === undefined) return;
        entry.fn = undefined;
        this.#cancelled++;
        if (this.#cancelled > 64 && this.#cancelled * 2 > this.#heap.length) this.#compact();
      },
    };
    this.#push(entry);
    if (at < this.#armedAt) this.#arm();
    return entry;
  }

  /** Cancels everything (the session ended). */
  clear(): void {
    this.#heap = [];
    this.#cancelled = 0;
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#armedAt = Infinity;
  }

  #arm(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#armedAt = Infinity;
    this.#dropCancelledTop();
    const next = this.#heap[0];
    if (!next) return;
    this.#armedAt = next.at;
    this.#timer = this.#clock.setTimer(Math.max(0, next.at - this.#clock.now()), () =>
      this.#fire(),
    );
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const now = this.#clock.now();
    for (;;) {
      this.#dropCancelledTop();
      const top = this.#heap[0];
      if (!top || top.at > now) break;
      this.#pop();
      const fn = top.fn;
      top.fn = undefined;
      fn?.();
    }
    if (this.#timer === undefined) this.#arm();
  }

  #dropCancelledTop(): void {
    while (this.#heap.length > 0 && (this.#heap[0] as Entry).fn === undefined) {
      this.#pop();
      this.#cancelled--;
    }
  }

  #compact(): void {
    this.#heap = this.#heap.filter((e) => e.fn !== undefined);
    this.#cancelled = 0;
    // Heapify bottom-up.
    for (let i = (this.#heap.length >> 1) - 1; i >= 0; i--) this.#siftDown(i);
  }

  #push(entry: Entry): void {
    const heap = this.#heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as Entry).at <= entry.at) break;
      heap[i] = heap[parent] as Entry;
      i = parent;
    }
    heap[i] = entry;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    heap[0] = last;
    this.#siftDown(0);
  }

  #siftDown(start: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const entry = heap[start] as Entry;
    let i = start;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child =
        right < n && (heap[right] as Entry).at < (heap[left] as Entry).at ? right : left;
      if ((heap[child] as Entry).at >= entry.at) break;
      heap[i] = heap[child] as Entry;
      i = child;
    }
    heap[i] = entry;
  }
}

/**
 * A clock that moves only when told. `advance(ms)` runs every timer that falls due, in order of
 * due time, letting promise callbacks settle between timers, so protocol time passes in tests
 * without a single sleep.
 */
import type { Clock, Runtime, Timer } from "../../src/session/runtime.ts";

interface Pending {
  due: number;
  order: number;
  fn: () => void;
  cancelled: boolean;
}

/** Lets queued promise callbacks (and callbacks they queue) run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class FakeClock implements Clock {
  #now = 1_000;
  #wall = 1_700_000_000_000;
  #order = 0;
  #timers: Pending[] = [];

  now(): number {
    return this.#now;
  }

  wallNow(): number {
    return this.#wall + this.#now;
  }

  setTimer(ms: number, fn: () => void): Timer {
    const pending: Pending = { due: this.#now + ms, order: this.#order++, fn, cancelled: false };
    this.#timers.push(pending);
    return {
      cancel: () => {
        pending.cancelled = true;
      },
    };
  }

  /** Timers not yet run or cancelled. */
  get pendingTimers(): number {
    return this.#timers.filter((t) => !t.cancelled).length;
  }

  /** Moves time forward by `ms`, running due timers in order and settling promises between. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (;;) {
      this.#timers = this.#timers.filter((t) => !t.cancelled);
      const next = this.#timers
        .filter((t) => t.due <= target)
        .sort((a, b) => a.due - b.due || a.order - b.order)[0];
      if (!next) break;
      this.#now = Math.max(this.#now, next.due);
      next.cancelled = true;
      next.fn();
      await settle();
    }
    this.#now = target;
    await settle();
  }
}

/** The same monotonic time as `base`, but a wall clock `skewMs` ahead (another machine). */
export function skewedClock(base: FakeClock, skewMs: number): Clock {
  return {
    now: () => base.now(),
    wallNow: () => base.wallNow() + skewMs,
    setTimer: (ms, fn) => base.setTimer(ms, fn),
  };
}

let runtimes = 0;

export function fakeRuntime(clock: Clock = new FakeClock()): Runtime {
  const name = `rt${++runtimes}`;
  let n = 0;
  return { clock, incarnation: `${name}-incarnation`, randomId: () => `${name}-id-${++n}` };
}

/** Timers on an injected clock, for the layers that run under a fake one (supervisor, scheduler). */
import type { Clock, Timer } from "../session/runtime.ts";

/** The longest delay a platform timer takes (setTimeout's limit); longer waits are armed in steps. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Runs `fn` at monotonic time `at` on `clock`, however far away. */
export function timerAt(clock: Clock, at: number, fn: () => void): Timer {
  let timer: Timer;
  const arm = () => {
    const left = at - clock.now();
    timer =
      left > MAX_TIMER_MS
        ? clock.setTimer(MAX_TIMER_MS, arm)
        : clock.setTimer(Math.max(0, left), fn);
  };
  arm();
  return { cancel: () => timer.cancel() };
}

/** Milliseconds for a message: `250 ms`, `1.5 s`. */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * `{ signal, deadline }` for the transport's async operations (connect, listen, spawn): reject
 * with `signal.reason` when aborted, with the caller's own error when the deadline passes, undo
 * the half-done attempt, and leave no listener or timer behind.
 */
import { InvalidOptionError } from "../errors.ts";
import type { CallOptions } from "./transport.ts";

/** Longest delay `setTimeout` accepts; a deadline further away than this is not armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RaceHandlers<T> {
  /** The error to reject with when the deadline passes. */
  onDeadline(): Error;
  /** Undoes the attempt in progress after giving up on it. */
  cancel(): void;
  /** Releases a result that arrived after giving up (closes a late connection). */
  discard?(value: T): void;
}

/** Milliseconds left before `options.deadline`, or Infinity without one. Validates the option. */
export function remainingMs(options: CallOptions | undefined): number {
  const deadline = options?.deadline;
  if (deadline === undefined) return Number.POSITIVE_INFINITY;
  if (typeof deadline !== "number" || Number.isNaN(deadline)) {
    throw new InvalidOptionError(
      "deadline must be a number of milliseconds on the performance.now() clock",
      { details: { deadline } },
    );
  }
  return deadline - performance.now();
}

/** Throws (the abort reason, or `onDeadline()`) if the operation must not even start. */
export function throwIfDone(options: CallOptions | undefined, onDeadline: () => Error): void {
  if (options?.signal?.aborted) throw options.signal.reason;
  if (remainingMs(options) <= 0) throw onDeadline();
}

/** Settles with `attempt`, unless the signal aborts or the deadline passes first. */
export function raceCallOptions<T>(
  attempt: Promise<T>,
  options: CallOptions | undefined,
  handlers: RaceHandlers<T>,
): Promise<T> {
  const signal = options?.signal;
  const remaining = remainingMs(options);
  if (signal === undefined && !(remaining < Number.POSITIVE_INFINITY)) return attempt;

  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cleanup = () => {
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const giveUp = (err: unknown) => {
      if (settled) return;
      cleanup();
      handlers.cancel();
      reject(err);
    };
    const onAbort = () => giveUp(signal?.reason);

    attempt.then(
      (value) => {
        if (settled) {
          handlers.discard?.(value);
          return;
        }
        cleanup();
        resolve(value);
      },
      (err: unknown) => {
        if (settled) return;
        cleanup();
        reject(err);
      },
    );
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    if (remaining <= 0) {
      giveUp(handlers.onDeadline());
    } else if (remaining <= MAX_TIMER_MS) {
      timer = setTimeout(() => giveUp(handlers.onDeadline()), remaining);
      // The attempt itself keeps the process alive while it matters; the timer must not.
      timer.unref();
    }
  });
}

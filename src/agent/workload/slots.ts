/**
 * Running operations `concurrency` at a time: each slot takes the next operation number and runs
 * it, until the count is reached, the duration has passed, or the run is stopped. Operations
 * already started finish (a stop also aborts `signal`, which operations may watch).
 */
import type { AbortSignalLike } from "../../abort.ts";
import type { Clock } from "../../session/runtime.ts";

export interface SlotPlan {
  concurrency: number;
  /** Operations in all (undefined: until `durationMs`). */
  count: number | undefined;
  /** Stop starting operations this long after the start (undefined: until `count`). */
  durationMs: number | undefined;
}

/**
 * Runs `operation(n, slot)` for n = 0, 1, 2, … on `plan.concurrency` slots. Resolves when every
 * slot is done. `operation` must not throw: it records its own failures.
 */
export async function runSlots(
  plan: SlotPlan,
  clock: Clock,
  signal: AbortSignalLike,
  operation: (n: number, slot: number) => Promise<void>,
): Promise<void> {
  const endAt = plan.durationMs === undefined ? Infinity : clock.now() + plan.durationMs;
  let next = 0;
  const more = () =>
    !signal.aborted && (plan.count === undefined ? clock.now() < endAt : next < plan.count);
  const slot = async (index: number) => {
    while (more()) await operation(next++, index);
  };
  await Promise.all(Array.from({ length: plan.concurrency }, (_, i) => slot(i)));
}

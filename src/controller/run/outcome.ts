/** How a fleet run ends: its barriers, and the exit statuses of `guestlink run` (docs/fleet.md). */
import type { Barrier } from "./plan.ts";

export const EXIT = {
  completed: 0,
  failed: 1,
  partial: 2,
  aborted: 3,
  unreachable: 4,
  invalid: 5,
  timeout: 6,
  thresholds: 7,
} as const;
export type RunOutcomeName = keyof typeof EXIT;

/**
 * Why `barrier` is not met by `count` of the plan's `total` agents, or undefined when it is.
 * Every barrier counts the plan's agents: `all` needs each of them.
 */
export function unmetBarrier(barrier: Barrier, count: number, total: number): string | undefined {
  const need =
    barrier.kind === "all"
      ? total
      : barrier.kind === "majority"
        ? Math.floor(total / 2) + 1
        : barrier.kind === "min"
          ? barrier.min
          : 0;
  if (count >= need) return undefined;
  const name = barrier.kind === "min" ? `{ min: ${barrier.min} }` : barrier.kind;
  return `the barrier (${name}) needs ${need} of ${total} agents, and ${count} can go on`;
}

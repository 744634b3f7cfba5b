/**
 * The seed for fast-check properties: `GUESTLINK_SEED=n npm test` replays a run; otherwise a fresh
 * seed each run. On failure the error names the seed (fast-check adds the counterexample's path).
 */
import fc from "fast-check";

export const SEED = process.env.GUESTLINK_SEED
  ? Number(process.env.GUESTLINK_SEED)
  : Math.floor(Math.random() * 2 ** 31);

/** Runs a synchronous property with the run's seed. */
export function check<T>(property: fc.IProperty<T>, numRuns = 200): void {
  try {
    fc.assert(property, { seed: SEED, numRuns });
  } catch (err) {
    throw new Error(`property failed; replay with GUESTLINK_SEED=${SEED}`, { cause: err });
  }
}

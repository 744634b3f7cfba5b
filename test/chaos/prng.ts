/**
 * Seeded randomness for the chaos suite. Every fault decision draws from a stream derived from
 * (seed, connection, direction, purpose), so one purpose's draws never shift another's: the cut
 * schedule stays the same whether or not delays are on, and whatever the chunking of the input.
 */

import { mulberry32, type Random } from "../../src/prng.ts";

export { mulberry32, type Random };

/** murmur3's 32-bit finaliser: spreads nearby inputs (connection 0, 1, 2…) far apart. */
function fmix32(h: number): number {
  let x = h >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** An independent stream for one purpose, derived from the run's seed and small integers. */
export function deriveRandom(seed: number, ...parts: number[]): Random {
  let h = fmix32(seed ^ 0x9e3779b9);
  for (const part of parts) h = fmix32(h ^ fmix32(part + 0x632be5ab));
  return mulberry32(h);
}

/** An integer in [lo, hi]. */
export function randomInt(random: Random, lo: number, hi: number): number {
  return lo + Math.floor(random() * (hi - lo + 1));
}

/** `every` jittered by ±50%, never below 1. */
export function jitter(random: Random, every: number): number {
  return Math.max(1, Math.round(every * (0.5 + random())));
}

/** `length` random bytes. */
export function randomBytes(random: Random, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256);
  return out;
}

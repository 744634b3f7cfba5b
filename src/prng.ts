/**
 * mulberry32: a tiny seeded PRNG, uniform in [0, 1). Whatever must replay from a seed uses it —
 * the demo's channel faults, backoff jitter in tests, the chaos proxy's schedule — never
 * Math.random. No Node APIs: any layer may use it.
 */
export type Random = () => number;

export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { isGuestlinkError } from "../../src/errors.ts";
import { mulberry32 } from "../../src/prng.ts";
import {
  Backoff,
  DEFAULT_BACKOFF_BASE_MS,
  DEFAULT_BACKOFF_CEILING_MS,
  MAX_BACKOFF_CEILING_MS,
  resolveBackoffOptions,
} from "../../src/supervise/backoff.ts";
import { check, SEED } from "../helpers/seed.ts";

const invalidOption = (err: unknown) => isGuestlinkError(err, "INVALID_OPTION");

describe("Backoff", () => {
  it("doubles the upper bound from 100 ms up to the 30 s ceiling by default", () => {
    const backoff = new Backoff(undefined, () => 1);
    assert.equal(DEFAULT_BACKOFF_BASE_MS, 100);
    assert.equal(DEFAULT_BACKOFF_CEILING_MS, 30_000);
    const delays = Array.from({ length: 12 }, () => backoff.next());
    assert.deepEqual(
      delays,
      [100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000, 30_000],
    );
  });

  it("draws each delay uniformly from [0, min(ceiling, base·2^n)] (full jitter)", () => {
    check(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 40 }),
        (baseMs, extra, draws) => {
          const ceilingMs = baseMs + extra;
          let i = 0;
          const backoff = new Backoff({ baseMs, ceilingMs }, () => draws[i++] as number);
          for (let n = 0; n < draws.length; n++) {
            const limit = Math.min(ceilingMs, baseMs * 2 ** n);
            assert.equal(backoff.nextLimitMs, limit);
            const delay = backoff.next();
            assert.ok(delay >= 0 && delay <= limit, `delay ${delay} outside [0, ${limit}]`);
            assert.equal(delay, Math.floor((draws[n] as number) * limit));
          }
        },
      ),
    );
  });

  it("gives the same delays from the same seed", () => {
    const run = (seed: number) => {
      const backoff = new Backoff({ baseMs: 50, ceilingMs: 5_000 }, mulberry32(seed));
      return Array.from({ length: 20 }, () => backoff.next());
    };
    assert.deepEqual(run(SEED), run(SEED), `seed ${SEED}`);
    assert.notDeepEqual(run(SEED), run(SEED + 1), `seed ${SEED}`);
  });

  it("starts again from the base delay after reset()", () => {
    const backoff = new Backoff({ baseMs: 10, ceilingMs: 1_000 }, () => 1);
    for (let i = 0; i < 5; i++) backoff.next();
    assert.equal(backoff.attempt, 5);
    assert.equal(backoff.nextLimitMs, 320);
    backoff.reset();
    assert.equal(backoff.attempt, 0);
    assert.equal(backoff.next(), 10);
    assert.equal(backoff.next(), 20);
  });

  it("stays at the ceiling however many attempts pass", () => {
    const backoff = new Backoff({ baseMs: 1, ceilingMs: 7_000 }, () => 1);
    for (let i = 0; i < 2_000; i++) backoff.next();
    assert.equal(backoff.nextLimitMs, 7_000);
    assert.equal(backoff.next(), 7_000);
  });

  it("raises the default ceiling to the base when the base is larger", () => {
    assert.deepEqual(resolveBackoffOptions({ baseMs: 60_000 }), {
      baseMs: 60_000,
      ceilingMs: 60_000,
    });
  });

  it("rejects bases, ceilings and random() results out of range with INVALID_OPTION", () => {
    for (const options of [
      { baseMs: 0 },
      { baseMs: -1 },
      { baseMs: Number.NaN },
      { baseMs: Number.POSITIVE_INFINITY },
      { baseMs: "100" as unknown as number },
      { baseMs: 500, ceilingMs: 100 },
      { ceilingMs: MAX_BACKOFF_CEILING_MS + 1 },
      { ceilingMs: Number.NaN },
    ]) {
      assert.throws(() => resolveBackoffOptions(options), invalidOption, JSON.stringify(options));
    }
    assert.throws(() => new Backoff({}, undefined as unknown as () => number), invalidOption);
    for (const bad of [1.5, -0.1, Number.NaN]) {
      assert.throws(() => new Backoff({}, () => bad).next(), invalidOption, String(bad));
    }
  });
});

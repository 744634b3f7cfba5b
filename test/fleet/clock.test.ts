import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  estimateOffset,
  fromAgentClock,
  measureOffset,
  toAgentClock,
} from "../../src/controller/run/clock.ts";

describe("an agent's clock offset", () => {
  it("brackets the true offset within half the best round trip, however the delays fall", () => {
    fc.assert(
      fc.property(
        fc.double({ min: -1e9, max: 1e9, noNaN: true }),
        fc.array(
          fc.record({
            at: fc.double({ min: 0, max: 1e6, noNaN: true }),
            out: fc.double({ min: 0, max: 50, noNaN: true }),
            back: fc.double({ min: 0, max: 50, noNaN: true }),
          }),
          { minLength: 1, maxLength: 10 },
        ),
        (trueOffset, exchanges) => {
          const samples = exchanges.map(({ at, out, back }) => ({
            sentWallMs: at,
            rttMs: out + back,
            remoteWallMs: at + out + trueOffset,
          }));
          const estimate = estimateOffset(samples);
          const best = Math.min(...samples.map((s) => s.rttMs));
          assert.equal(estimate.rttMs, best);
          assert.equal(estimate.uncertaintyMs, best / 2);
          const error = Math.abs(estimate.offsetMs - trueOffset);
          assert.ok(error <= estimate.uncertaintyMs + 1e-6 * Math.max(1, Math.abs(trueOffset)));
          const instant = 1.7e12;
          assert.ok(
            Math.abs(fromAgentClock(toAgentClock(instant, estimate), estimate) - instant) < 1e-3,
          );
        },
      ),
    );
  });

  it("keeps the exchange with the smallest round trip, measured on the monotonic clock", async () => {
    // Our wall clock jumps by an hour during the run: the round trip must not see it.
    let mono = 0;
    let wall = 1_000_000;
    const agentAhead = 5_000;
    const delays = [
      [8, 2],
      [1, 1],
      [30, 3],
    ] as const;
    let i = 0;
    const offset = await measureOffset(
      async () => {
        const [out, back] = delays[i++] as readonly [number, number];
        mono += out;
        wall += out;
        const remote = wall + agentAhead;
        mono += back;
        wall += back + (i === 2 ? 3_600_000 : 0);
        return remote;
      },
      { now: () => mono, wallNow: () => wall },
      3,
    );
    assert.equal(offset.rttMs, 2);
    assert.equal(offset.uncertaintyMs, 1);
    assert.equal(offset.samples, 3);
    assert.equal(offset.offsetMs, agentAhead);
  });
});

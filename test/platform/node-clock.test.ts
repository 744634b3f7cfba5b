/**
 * The keep-alive clock that redials wait on (platform/node.ts): a timer of 0 ms (setImmediate,
 * not setTimeout's millisecond) and one of more both run once, and both cancel.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nodeKeepAliveClock } from "../../src/platform/node.ts";

describe("nodeKeepAliveClock", () => {
  it("runs a timer of 0 ms, as one of more, once", async () => {
    const fired: number[] = [];
    nodeKeepAliveClock.setTimer(0, () => fired.push(0));
    nodeKeepAliveClock.setTimer(2, () => fired.push(2));
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(fired.sort(), [0, 2]);
  });

  it("cancels timers of 0 ms and of more", async () => {
    let fired = 0;
    nodeKeepAliveClock.setTimer(0, () => fired++).cancel();
    nodeKeepAliveClock.setTimer(1, () => fired++).cancel();
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(fired, 0);
  });
});

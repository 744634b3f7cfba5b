import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LazyAbortController } from "../src/abort.ts";

describe("LazyAbortController", () => {
  it("light: listeners run once on abort, removed ones do not, and it reads as aborted after", () => {
    const c = new LazyAbortController();
    const light = c.light;
    const seen: string[] = [];
    const removed = () => seen.push("removed");
    light.addEventListener("abort", () => seen.push(`a ${String(light.reason)}`), { once: true });
    light.addEventListener("abort", removed);
    light.addEventListener("abort", () => seen.push("b"));
    light.removeEventListener("abort", removed);
    assert.equal(light.aborted, false);
    c.abort("why");
    c.abort("again");
    assert.deepEqual(seen, ["a why", "b"]);
    assert.equal(light.aborted, true);
    assert.equal(light.reason, "why");
    // As with an AbortSignal, a listener added after the abort is not called.
    light.addEventListener("abort", () => seen.push("late"));
    assert.deepEqual(seen, ["a why", "b"]);
  });

  it("light and signal agree, whichever is asked for first and whether before or after the abort", () => {
    const before = new LazyAbortController();
    const signal = before.signal;
    const light = before.light;
    before.abort("x");
    assert.equal(signal.aborted && light.aborted, true);
    assert.equal(signal.reason, "x");
    const after = new LazyAbortController();
    after.abort("y");
    assert.equal(after.light.aborted, true);
    assert.equal(after.light.reason, "y");
    assert.equal(after.signal.aborted, true);
    assert.equal(after.signal.reason, "y");
  });
});

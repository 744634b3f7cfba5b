import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { DeadlineQueue } from "../../src/session/deadlines.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { SEED } from "../helpers/seed.ts";

describe("DeadlineQueue", () => {
  it("fires due deadlines in time order, skips cancelled ones, and keeps one timer", async () => {
    const clock = new FakeClock();
    const queue = new DeadlineQueue(clock);
    const fired: string[] = [];
    const t0 = clock.now();
    queue.add(t0 + 30, () => fired.push("c"));
    queue.add(t0 + 10, () => fired.push("a"));
    const b = queue.add(t0 + 20, () => fired.push("b"));
    queue.add(t0 + 10, () => fired.push("a2"));
    b.cancel();
    b.cancel();
    assert.equal(clock.pendingTimers, 1, "one runtime timer, however many deadlines");
    await clock.advance(15);
    assert.deepEqual(fired, ["a", "a2"]);
    await clock.advance(15);
    assert.deepEqual(fired, ["a", "a2", "c"]);
    assert.equal(clock.pendingTimers, 0);
  });

  it("matches a naive model under random adds, cancels and time steps", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant("add" as const), delay: fc.nat({ max: 200 }) }),
            fc.record({ op: fc.constant("cancel" as const), which: fc.nat() }),
            fc.record({ op: fc.constant("advance" as const), ms: fc.nat({ max: 100 }) }),
          ),
          { maxLength: 300 },
        ),
        async (ops) => {
          const clock = new FakeClock();
          const queue = new DeadlineQueue(clock);
          const model: { at: number; id: number; cancelled: boolean; fired: boolean }[] = [];
          const fired: number[] = [];
          const handles: { cancel(): void }[] = [];
          for (const o of ops) {
            if (o.op === "add") {
              const id = model.length;
              model.push({ at: clock.now() + o.delay, id, cancelled: false, fired: false });
              handles.push(queue.add(clock.now() + o.delay, () => fired.push(id)));
            } else if (o.op === "cancel" && model.length > 0) {
              const i = o.which % model.length;
              (model[i] as { cancelled: boolean }).cancelled = true;
              handles[i]?.cancel();
            } else if (o.op === "advance") {
              await clock.advance(o.ms);
            }
          }
          await clock.advance(1000);
          // Every deadline not cancelled before it came due fired exactly once, in time order.
          assert.equal(new Set(fired).size, fired.length);
          for (let k = 1; k < fired.length; k++) {
            assert.ok(
              (model[fired[k - 1] as number]?.at ?? 0) <= (model[fired[k] as number]?.at ?? 0),
            );
          }
          for (const m of model)
            if (!m.cancelled) assert.ok(fired.includes(m.id), `deadline ${m.id} never fired`);
        },
      ),
      { seed: SEED, numRuns: 100 },
    );
  });
});

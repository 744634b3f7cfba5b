/**
 * The mediator's scheduler on its own: no workers, no sockets, a fake clock. Each rule of issue
 * 17's scheduling has a deterministic test; properties use a fixed seed (GUESTLINK_SEED overrides).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { AbortSignalLike } from "../../src/abort.ts";
import {
  type PoolSpec,
  type RunContext,
  Scheduler,
  type SchedulerOptions,
  type SubmitRequest,
} from "../../src/controller/mediator/scheduler.ts";
import { type ErrorCode, GuestlinkError, isGuestlinkError } from "../../src/errors.ts";
import type { Clock } from "../../src/session/runtime.ts";
import { FakeClock, settle } from "../helpers/fake-clock.ts";

const SEED = process.env.GUESTLINK_SEED ? Number(process.env.GUESTLINK_SEED) : 0x17;

const POOL: PoolSpec = {
  name: "p",
  slots: 1,
  weights: [1],
  queueLimit: Number.POSITIVE_INFINITY,
  guestLimit: Number.POSITIVE_INFINITY,
  maxWaitMs: Number.POSITIVE_INFINITY,
};

interface Started {
  pool: string;
  input: unknown;
  ctx: RunContext;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

interface Outcome {
  settled: boolean;
  ok: boolean | undefined;
  value: unknown;
  /** Clock time when it settled. */
  at: number | undefined;
}

/**
 * A scheduler whose runner records every start. Held (the default), each run waits for the test
 * to finish it; in `auto` mode it answers its input at once, so queues drain in one settle.
 */
class Rig {
  readonly clock = new FakeClock();
  readonly started: Started[] = [];
  /** Inputs in the order they started. */
  readonly order: unknown[] = [];
  auto = false;
  readonly sched: Scheduler;

  constructor(
    pools: Partial<PoolSpec>[] = [{}],
    options: Partial<Omit<SchedulerOptions, "pools">> = {},
  ) {
    this.sched = new Scheduler({
      clock: this.clock,
      keepMs: 60_000,
      run: (pool, input, ctx) => {
        this.order.push(input);
        if (this.auto) return Promise.resolve({ answer: input });
        return new Promise((resolve, reject) =>
          this.started.push({ pool, input, ctx, resolve, reject }),
        );
      },
      ...options,
      pools: pools.map((p) => ({ ...POOL, ...p })),
    });
  }

  submit(input: unknown, request: Partial<SubmitRequest> = {}): Outcome {
    return track(
      this.sched.submit({ pool: "p", priority: 1, flow: "a", input, ...request }),
      this.clock,
    );
  }

  /** The held run of `input`. */
  run(input: unknown): Started {
    const run = this.started.find((s) => s.input === input);
    assert.ok(run, `${String(input)} started`);
    return run;
  }

  /** Finishes the held run of `input` with `{ answer: input }` and lets the next start. */
  async finish(input: unknown): Promise<void> {
    this.run(input).resolve({ answer: input });
    await settle();
  }
}

function track(promise: Promise<unknown>, clock: Clock): Outcome {
  const outcome: Outcome = { settled: false, ok: undefined, value: undefined, at: undefined };
  promise.then(
    (value) => Object.assign(outcome, { settled: true, ok: true, value, at: clock.now() }),
    (err: unknown) =>
      Object.assign(outcome, { settled: true, ok: false, value: err, at: clock.now() }),
  );
  return outcome;
}

function assertRejected(outcome: Outcome, code: ErrorCode): GuestlinkError {
  assert.ok(outcome.settled, `settled with ${code}`);
  assert.equal(outcome.ok, false, `rejected with ${code}, not ${JSON.stringify(outcome.value)}`);
  assert.ok(isGuestlinkError(outcome.value, code), `${code}, not ${String(outcome.value)}`);
  return outcome.value as GuestlinkError;
}

/** An abort signal that counts its listeners, so tests can see none is left behind. */
function countingSignal() {
  const listeners = new Set<() => void>();
  const signal = {
    aborted: false,
    reason: undefined as unknown,
    addEventListener: (_type: "abort", listener: () => void) => listeners.add(listener),
    removeEventListener: (_type: "abort", listener: () => void) => listeners.delete(listener),
    abort(reason: unknown) {
      signal.aborted = true;
      signal.reason = reason;
      for (const l of [...listeners]) {
        listeners.delete(l);
        l();
      }
    },
    get listeners() {
      return listeners.size;
    },
  };
  return signal satisfies AbortSignalLike;
}

/** Round robin over groups in order: one from each per turn. */
function interleave<T>(groups: T[][]): T[] {
  const out: T[] = [];
  for (let round = 0; out.length < groups.reduce((n, g) => n + g.length, 0); round++) {
    for (const g of groups) if (round < g.length) out.push(g[round] as T);
  }
  return out;
}

/** `items` grouped by `by`, groups in order of first appearance. */
function groupsOf<T>(items: T[], by: (item: T) => string): T[][] {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = by(item);
    const g = groups.get(k);
    if (g === undefined) groups.set(k, [item]);
    else g.push(item);
  }
  return [...groups.values()];
}

describe("the mediator's scheduler", () => {
  describe("order", () => {
    it("runs one flow's jobs at one level first in, first out", async () => {
      const rig = new Rig([{ weights: [1, 1] }]);
      rig.submit("blocker", { flow: "z" });
      for (let i = 0; i < 5; i++) rig.submit(`a${i}`, { priority: 2 });
      rig.auto = true;
      await rig.finish("blocker");
      assert.deepEqual(rig.order, ["blocker", "a0", "a1", "a2", "a3", "a4"]);
    });

    it("takes flows at one level in turns, so a flood from one does not starve another", async () => {
      const rig = new Rig();
      rig.submit("blocker", { flow: "z" });
      for (let i = 1; i <= 4; i++) rig.submit(`a${i}`, { flow: "A" });
      rig.submit("b1", { flow: "B" });
      rig.submit("b2", { flow: "B" });
      rig.submit("c1", { flow: "C" });
      rig.auto = true;
      await rig.finish("blocker");
      assert.deepEqual(rig.order.slice(1), ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]);
    });

    it("drops a flow that empties from the ring; with work again it rejoins at the end", async () => {
      const rig = new Rig();
      rig.submit("a1", { flow: "A" }); // starts at once
      rig.submit("a2", { flow: "A" });
      rig.submit("a3", { flow: "A" });
      rig.submit("b1", { flow: "B" }); // ring: A B
      await rig.finish("a1"); // a2 starts; ring: B A
      rig.submit("c1", { flow: "C" }); // ring: B A C
      await rig.finish("a2"); // b1 starts, B leaves; ring: A C
      rig.submit("b2", { flow: "B" }); // ring: A C B
      rig.auto = true;
      await rig.finish("b1");
      assert.deepEqual(rig.order, ["a1", "a2", "b1", "a3", "c1", "b2"]);
    });

    it("keeps FIFO per flow and level, and round robin within each level, whatever arrives (property)", async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({
              flow: fc.constantFrom("a", "b", "c", "d"),
              priority: fc.integer({ min: 1, max: 3 }),
            }),
            { maxLength: 150 },
          ),
          async (requests) => {
            const rig = new Rig([{ weights: [4, 2, 1] }]);
            rig.submit("blocker", { flow: "z" });
            const jobs = requests.map((r, i) => ({ ...r, id: i }));
            for (const job of jobs) rig.submit(job.id, job);
            rig.auto = true;
            await rig.finish("blocker");
            const ran = rig.order.slice(1) as number[];
            assert.equal(ran.length, jobs.length);
            for (const priority of [1, 2, 3]) {
              const atLevel = jobs.filter((j) => j.priority === priority);
              const expected = interleave(groupsOf(atLevel, (j) => j.flow)).map((j) => j.id);
              const actual = ran.filter((id) => jobs[id]?.priority === priority);
              assert.deepEqual(actual, expected, `level ${priority}`);
            }
          },
        ),
        { seed: SEED, numRuns: 100 },
      );
    });

    it("shares dispatches across levels by weight: 12,000 of them split 6:3:1 within ±2%", async () => {
      const rig = new Rig([{ weights: [6, 3, 1] }]);
      rig.submit("blocker", { flow: "z" });
      const perLevel = 12_000;
      for (let priority = 1; priority <= 3; priority++) {
        for (let i = 0; i < perLevel; i++)
          rig.submit({ priority, i }, { priority, flow: `g${i % 3}` });
      }
      rig.auto = true;
      await rig.finish("blocker");
      const levels = (rig.order.slice(1) as { priority: number }[]).map((j) => j.priority);
      const first = levels.slice(0, 12_000);
      const total = 6 + 3 + 1;
      for (const [priority, weight] of [
        [1, 6],
        [2, 3],
        [3, 1],
      ] as const) {
        const share = first.filter((p) => p === priority).length / first.length;
        assert.ok(
          Math.abs(share - weight / total) <= 0.02,
          `level ${priority}: share ${share}, expected ${weight / total} ± 0.02`,
        );
      }
      // The low level moves all along: never more than 9 others between two of its turns.
      let gap = 0;
      for (const p of first) {
        gap = p === 3 ? 0 : gap + 1;
        assert.ok(gap <= 9, "level 3 waited more than 9 dispatches");
      }
    });

    it("gives a level that refills one job at a time no more than its share (8:1 → 1 in 9 ±2%)", async () => {
      // The trickling guest submits its next job only when its last one starts, so its level
      // empties after every turn and comes back: it must not gain by starting afresh each time.
      const order: number[] = [];
      let release!: (value: unknown) => void;
      const sched: Scheduler = new Scheduler({
        clock: new FakeClock(),
        keepMs: 0,
        pools: [{ ...POOL, weights: [8, 1] }],
        run: (_pool, input) => {
          const priority = input as number;
          if (priority === 0) return new Promise((resolve) => (release = resolve));
          order.push(priority);
          if (priority === 2 && order.length < 9_000)
            void sched.submit({ pool: "p", priority: 2, flow: "t", input: 2 });
          return Promise.resolve(priority);
        },
      });
      void sched.submit({ pool: "p", priority: 1, flow: "z", input: 0 });
      for (let i = 0; i < 9_000; i++)
        void sched.submit({ pool: "p", priority: 1, flow: "busy", input: 1 });
      void sched.submit({ pool: "p", priority: 2, flow: "t", input: 2 });
      release(undefined);
      await settle();
      const first = order.slice(0, 9_000);
      const share = first.filter((p) => p === 2).length / first.length;
      assert.ok(Math.abs(share - 1 / 9) <= 0.02, `trickle share ${share}, expected 1/9 ± 0.02`);
      await sched.close();
    });

    it("serves every level with work within 2×(sum of weights) dispatches, whatever arrives (property)", async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 4 }),
          fc.array(fc.array(fc.nat(), { maxLength: 3 }), { minLength: 50, maxLength: 300 }),
          async (weights, arrivals) => {
            const levels = weights.length;
            const bound = 2 * weights.reduce((a, b) => a + b, 0);
            const queued = new Array<number>(levels).fill(0);
            const gap = new Array<number>(levels).fill(0);
            let turn = 0;
            const submit = (priority: number) => {
              queued[priority - 1] = (queued[priority - 1] as number) + 1;
              void sched.submit({ pool: "p", priority, flow: `f${turn % 3}`, input: priority });
            };
            const sched: Scheduler = new Scheduler({
              clock: new FakeClock(),
              keepMs: 0,
              pools: [{ ...POOL, weights }],
              run: (_pool, input) => {
                const priority = input as number;
                queued[priority - 1] = (queued[priority - 1] as number) - 1;
                for (let l = 0; l < levels; l++) {
                  if (l === priority - 1 || queued[l] === 0) gap[l] = 0;
                  else gap[l] = (gap[l] as number) + 1;
                  assert.ok((gap[l] as number) <= bound, `level ${l + 1} waited ${gap[l]} turns`);
                }
                // New work arrives between dispatches, at random levels, for a while.
                for (const n of arrivals[turn++] ?? []) submit(1 + (n % levels));
                return Promise.resolve();
              },
            });
            for (let l = 1; l <= levels; l++) submit(l);
            await settle();
            assert.deepEqual(queued, new Array(levels).fill(0));
          },
        ),
        { seed: SEED, numRuns: 100 },
      );
    });
  });

  describe("slots and bounds", () => {
    it("runs at most `slots` at once, and starts the next as soon as one finishes, with no timer", async () => {
      const rig = new Rig([{ slots: 3 }]);
      for (let i = 0; i < 7; i++) rig.submit(i);
      assert.deepEqual(rig.order, [0, 1, 2]);
      const pool = rig.sched.status().pools[0];
      assert.equal(pool?.running, 3);
      assert.equal(pool?.queued, 4);
      const now = rig.clock.now();
      rig.run(1).resolve("done");
      await Promise.resolve(); // the reply's callback…
      await Promise.resolve(); // …has started the next
      assert.deepEqual(rig.order, [0, 1, 2, 3]);
      assert.equal(rig.clock.now(), now);
      assert.equal(rig.clock.pendingTimers, 0);
      rig.run(0).reject(new Error("failed"));
      await settle();
      assert.deepEqual(rig.order, [0, 1, 2, 3, 4]);
      assert.equal(rig.sched.status().pools[0]?.running, 3);
    });

    it("never runs more than `slots`, whatever order jobs finish in (property)", async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 5 }),
          fc.array(fc.nat(), { minLength: 1, maxLength: 60 }),
          async (slots, picks) => {
            const rig = new Rig([{ slots }]);
            const outcomes = picks.map((_, i) => rig.submit(i, { flow: `g${i % 3}` }));
            let finished = 0;
            for (const pick of picks) {
              const live = rig.started.filter((s) => !(s as { done?: boolean }).done);
              assert.ok(live.length <= slots, `${live.length} running in ${slots} slots`);
              assert.equal(live.length, Math.min(slots, picks.length - finished));
              const run = live[pick % live.length] as Started & { done?: boolean };
              run.done = true;
              run.resolve("ok");
              finished++;
              await settle(2);
            }
            assert.ok(
              outcomes.every((o) => o.settled && o.ok),
              "outcomes.every((o) => o.settled && o.ok)",
            );
          },
        ),
        { seed: SEED, numRuns: 100 },
      );
    });

    it("refuses with QUEUE_FULL at once past queueLimit queued, counting none that run", async () => {
      const rig = new Rig([{ queueLimit: 3, slots: 2 }]);
      rig.submit("running");
      rig.submit("running too");
      for (let i = 0; i < 3; i++) rig.submit(i, { flow: `g${i}` });
      const refused = rig.submit("one too many", { flow: "g9", key: "k" });
      await Promise.resolve(); // rejected at once: no timer, no other job finishing
      const err = assertRejected(refused, "QUEUE_FULL");
      assert.deepEqual(err.details, { pool: "p", limit: 3, queued: 3 });
      assert.match(err.message, /queue_limit/);
      assert.equal(refused.at, rig.clock.now());
      const pool = rig.sched.status().pools[0];
      assert.equal(pool?.queued, 3);
      assert.equal(pool?.levels[0]?.rejected, 1);
      assert.equal(pool?.flows.find((f) => f.flow === "g9")?.rejected, 1);
      // A job that can start at once is never refused, even with no room to queue.
      const none = new Rig([{ queueLimit: 0, slots: 2 }]);
      const first = none.submit(1);
      const second = none.submit(2);
      const third = none.submit(3);
      await settle();
      assertRejected(third, "QUEUE_FULL");
      assert.deepEqual(none.order, [1, 2]);
      assert.ok(!first.settled && !second.settled, "!first.settled && !second.settled");
    });

    it("refuses a guest past guestLimit queued in the pool, while others still queue", async () => {
      const rig = new Rig([{ guestLimit: 2 }]);
      rig.submit("running", { flow: "A" }); // running: does not count
      rig.submit("a1", { flow: "A" });
      rig.submit("a2", { flow: "A" });
      const refused = rig.submit("a3", { flow: "A", priority: 1 });
      const b1 = rig.submit("b1", { flow: "B" });
      await settle();
      const err = assertRejected(refused, "QUEUE_FULL");
      assert.deepEqual(err.details, { pool: "p", flow: "A", limit: 2, queued: 2 });
      assert.match(err.message, /guest_limit/);
      assert.ok(!b1.settled, "!b1.settled");
      assert.equal(rig.sched.status().pools[0]?.queued, 3);
      // Once one of A's starts, A has room again.
      await rig.finish("running");
      const a4 = rig.submit("a4", { flow: "A" });
      await settle();
      assert.ok(!a4.settled, "!a4.settled");
    });

    it("keeps flows of different pools apart: limits, turns and slots", async () => {
      const rig = new Rig([
        { name: "p", guestLimit: 1 },
        { name: "q", guestLimit: 1 },
      ]);
      rig.submit("p-run", { pool: "p" });
      rig.submit("q-run", { pool: "q" });
      rig.submit("p1", { pool: "p" });
      const q1 = rig.submit("q1", { pool: "q" }); // A's queued job in p does not count in q
      const p2 = rig.submit("p2", { pool: "p" });
      await settle();
      assertRejected(p2, "QUEUE_FULL");
      assert.ok(!q1.settled, "!q1.settled");
      assert.deepEqual(rig.order, ["p-run", "q-run"]);
      await rig.finish("q-run");
      assert.deepEqual(rig.order, ["p-run", "q-run", "q1"]); // p's slot is still busy
      const [p, q] = rig.sched.status().pools;
      assert.deepEqual(
        [p?.flows[0]?.queued, p?.flows[0]?.running, q?.flows[0]?.queued, q?.flows[0]?.running],
        [1, 1, 0, 1],
      );
    });
  });

  describe("waiting too long", () => {
    it("removes a job not started within maxWaitMs with QUEUE_TIMEOUT; it never runs", async () => {
      const rig = new Rig([{ maxWaitMs: 100 }]);
      rig.submit("running");
      const late = rig.submit("late", { key: "k" });
      const next = rig.submit("next", { flow: "b" });
      await rig.clock.advance(99);
      assert.ok(!late.settled, "!late.settled");
      await rig.clock.advance(1);
      const err = assertRejected(late, "QUEUE_TIMEOUT");
      assert.equal(err.details?.pool, "p");
      assert.match(err.message, /max_wait/);
      assertRejected(next, "QUEUE_TIMEOUT");
      await rig.finish("running");
      assert.deepEqual(rig.order, ["running"]);
      const level = rig.sched.status().pools[0]?.levels[0];
      assert.equal(level?.rejected, 2);
      assert.equal(level?.queued, 0);
      // Not kept for its key: asked again, it runs.
      rig.submit("late again", { key: "k" });
      assert.deepEqual(rig.order, ["running", "late again"]);
    });

    it("cancels the max_wait timer when the job starts or leaves", async () => {
      const rig = new Rig([{ maxWaitMs: 100 }]);
      rig.submit("running");
      rig.submit("queued");
      const ac = new AbortController();
      rig.submit("cancelled", { signal: ac.signal });
      assert.equal(rig.clock.pendingTimers, 2);
      ac.abort();
      assert.equal(rig.clock.pendingTimers, 1);
      await rig.finish("running");
      assert.equal(rig.clock.pendingTimers, 0);
      await rig.clock.advance(1000);
      assert.deepEqual(rig.order, ["running", "queued"]);
    });
  });

  describe("deadlines", () => {
    it("rejects a queued job with DEADLINE_EXCEEDED the moment its deadline passes; it never runs", async () => {
      const rig = new Rig();
      rig.submit("running");
      const due = rig.clock.now() + 50;
      const job = rig.submit("job", { deadline: due });
      await rig.clock.advance(49);
      assert.ok(!job.settled, "!job.settled");
      await rig.clock.advance(1);
      const err = assertRejected(job, "DEADLINE_EXCEEDED");
      assert.equal(job.at, due);
      assert.match(err.message, /not started/);
      assert.equal(rig.sched.status().pools[0]?.queued, 0);
      await rig.finish("running");
      assert.deepEqual(rig.order, ["running"]);
      assert.equal(rig.sched.status().pools[0]?.levels[0]?.rejected, 1);
    });

    it("refuses a submit whose deadline has already passed", async () => {
      const rig = new Rig();
      const job = rig.submit("job", { deadline: rig.clock.now() });
      await settle();
      assertRejected(job, "DEADLINE_EXCEEDED");
      assert.deepEqual(rig.order, []);
    });

    it("checks the deadline again at dispatch, when its timer is late", async () => {
      const clock = new FakeClock();
      // A clock whose timers never fire: the deadline can only be caught at dispatch.
      const late: Clock = {
        now: () => clock.now(),
        wallNow: () => 0,
        setTimer: () => ({ cancel() {} }),
      };
      const rig = new Rig([{}], { clock: late });
      rig.submit("running");
      const expired = track(
        rig.sched.submit({
          pool: "p",
          priority: 1,
          flow: "a",
          input: "expired",
          deadline: clock.now() + 10,
        }),
        clock,
      );
      rig.submit("next", { flow: "b" });
      await clock.advance(20);
      assert.ok(!expired.settled, "!expired.settled");
      await rig.finish("running");
      assertRejected(expired, "DEADLINE_EXCEEDED");
      assert.deepEqual(rig.order, ["running", "next"]);
    });

    it("aborts a running job's signal at its deadline; the runner's rejection is the reply", async () => {
      const rig = new Rig();
      const due = rig.clock.now() + 100;
      const job = rig.submit("job", { deadline: due });
      const { ctx, reject } = rig.run("job");
      assert.equal(ctx.deadline, due);
      ctx.signal.addEventListener("abort", () =>
        reject(new Error(`stopped: ${(ctx.signal.reason as Error).message}`)),
      );
      await rig.clock.advance(100);
      assert.ok(ctx.signal.aborted, "the signal is aborted at the deadline");
      assert.ok(
        isGuestlinkError(ctx.signal.reason, "DEADLINE_EXCEEDED"),
        'isGuestlinkError(ctx.signal.reason, "DEADLINE_EXCEEDED")',
      );
      assert.equal(job.ok, false);
      assert.match((job.value as Error).message, /^stopped: .*deadline/);
      assert.equal(rig.sched.status().pools[0]?.levels[0]?.failed, 1);
      assert.equal(rig.clock.pendingTimers, 0);
    });

    it("rejects at the deadline with DEADLINE_EXCEEDED when the runner ignores the signal", async () => {
      const rig = new Rig();
      const due = rig.clock.now() + 100;
      const job = rig.submit("job", { deadline: due, key: "k" });
      rig.submit("next", { flow: "b" });
      await rig.clock.advance(100);
      assertRejected(job, "DEADLINE_EXCEEDED");
      assert.equal(job.at, due);
      // The runner still holds the slot until it settles; its late reply is not kept.
      assert.equal(rig.sched.status().pools[0]?.running, 1);
      assert.deepEqual(rig.order, ["job"]);
      await rig.finish("job");
      assert.deepEqual(rig.order, ["job", "next"]);
      rig.submit("job again", { key: "k" });
      await settle();
      assert.equal(rig.sched.status().pools[0]?.queued, 1); // queued behind "next": it runs again
    });
    it("gives each submitter of a shared key its own deadline; the job lasts until the last", async () => {
      const rig = new Rig();
      rig.submit("running");
      const t0 = rig.clock.now();
      const early = rig.submit("job", { key: "k", deadline: t0 + 10 });
      const late = rig.submit("job", { key: "k", deadline: t0 + 30 });
      const later = rig.submit("job", { key: "k", deadline: t0 + 50 });
      await rig.clock.advance(10);
      assertRejected(early, "DEADLINE_EXCEEDED");
      assert.equal(rig.sched.status().pools[0]?.queued, 1);
      await rig.finish("running");
      const { ctx } = rig.run("job");
      assert.equal(ctx.deadline, t0 + 50, "the latest deadline of those still waiting");
      await rig.clock.advance(20);
      assertRejected(late, "DEADLINE_EXCEEDED");
      assert.equal(ctx.signal.aborted, false, "one submitter still waits");
      await rig.clock.advance(20);
      assert.equal(ctx.signal.aborted, true, "the last deadline passed");
      assertRejected(later, "DEADLINE_EXCEEDED");
    });
  });

  describe("cancellation", () => {
    it("removes a queued job when its submitter cancels; it never runs", async () => {
      const rig = new Rig();
      rig.submit("running");
      const signal = countingSignal();
      const job = rig.submit("job", { signal });
      assert.equal(signal.listeners, 1);
      signal.abort(new GuestlinkError("CANCELLED", "the guest went away"));
      await settle();
      const err = assertRejected(job, "CANCELLED");
      assert.equal(err.message, "the guest went away");
      assert.equal(signal.listeners, 0);
      const level = rig.sched.status().pools[0]?.levels[0];
      assert.equal(level?.cancelled, 1);
      assert.equal(level?.queued, 0);
      await rig.finish("running");
      assert.deepEqual(rig.order, ["running"]);
      // A signal aborted before submitting: nothing queued.
      const ac = new AbortController();
      ac.abort();
      const already = rig.submit("never", { signal: ac.signal });
      await settle();
      assertRejected(already, "CANCELLED");
      assert.deepEqual(rig.order, ["running"]);
    });

    it("detaches only the submitter that cancels while others wait on the same key", async () => {
      const rig = new Rig();
      rig.submit("running");
      const one = new AbortController();
      const first = rig.submit("job", { key: "k", signal: one.signal });
      const second = rig.submit("job (attached)", { key: "k" });
      one.abort();
      await settle();
      assertRejected(first, "CANCELLED");
      assert.ok(!second.settled, "!second.settled");
      await rig.finish("running");
      await rig.finish("job");
      assert.deepEqual(second.value, { answer: "job" });
      assert.deepEqual(rig.order, ["running", "job"]);
    });

    it("aborts a running job's signal only when every submitter has cancelled; each is answered at once", async () => {
      const rig = new Rig();
      const a = new AbortController();
      const b = new AbortController();
      const first = rig.submit("job", { key: "k", signal: a.signal });
      const second = rig.submit("job", { key: "k", signal: b.signal });
      const { ctx } = rig.run("job");
      a.abort();
      await settle();
      assertRejected(first, "CANCELLED");
      assert.ok(!ctx.signal.aborted, "!ctx.signal.aborted");
      assert.ok(!second.settled, "!second.settled");
      b.abort(new Error("changed my mind"));
      await settle();
      const err = assertRejected(second, "CANCELLED");
      assert.equal(err.message, "changed my mind");
      assert.ok(ctx.signal.aborted, "ctx.signal.aborted");
      // The run ends later; its reply was asked for by no one, so it is not kept for the key.
      await rig.finish("job");
      rig.submit("job again", { key: "k" });
      assert.deepEqual(rig.order, ["job", "job again"]);
      const level = rig.sched.status().pools[0]?.levels[0];
      assert.equal(level?.cancelled, 0); // it started: it counts as done, not cancelled
      assert.equal(level?.done, 1);
    });
  });

  describe("keys", () => {
    it("attaches a submit whose key is queued or running to that job: run once, one reply", async () => {
      const rig = new Rig();
      rig.submit("running");
      const first = rig.submit("job", { key: "k" });
      const second = rig.submit("ignored input", { key: "k" }); // while queued
      await rig.finish("running");
      const third = rig.submit("ignored too", { key: "k" }); // while running
      await rig.finish("job");
      assert.deepEqual(rig.order, ["running", "job"]);
      for (const o of [first, second, third]) assert.deepEqual(o.value, { answer: "job" });
      const flow = rig.sched.status().pools[0]?.flows[0];
      assert.deepEqual(flow, {
        flow: "a",
        submitted: 4,
        served: 4,
        rejected: 0,
        queued: 0,
        running: 0,
      });
    });

    it("answers a finished key from the kept reply, success or the runner's rejection, for keepMs", async () => {
      const rig = new Rig([{}], { keepMs: 1000 });
      rig.submit("ok", { key: "good" });
      await rig.finish("ok");
      const failure = new Error("the worker said no");
      rig.submit("fails", { key: "bad" });
      rig.run("fails").reject(failure);
      await settle();
      await rig.clock.advance(999);
      const good = rig.submit("again", { key: "good" });
      const bad = rig.submit("again", { key: "bad" });
      await settle();
      assert.deepEqual(good.value, { answer: "ok" });
      assert.equal(bad.value, failure);
      assert.deepEqual(rig.order, ["ok", "fails"]);
      assert.equal(rig.sched.status().kept, 2);
      // After keepMs the key is forgotten: it runs again.
      await rig.clock.advance(1);
      rig.submit("good, later", { key: "good" });
      assert.deepEqual(rig.order, ["ok", "fails", "good, later"]);
      assert.equal(rig.sched.status().kept, 0);
    });

    it("keeps nothing for QUEUE_FULL, QUEUE_TIMEOUT, deadline or cancellation before the start: a retry runs", async () => {
      const rig = new Rig([{ guestLimit: 1, maxWaitMs: 50 }]);
      rig.submit("running", { flow: "z" });
      rig.submit("filler", { flow: "a" }); // times out below, with the others
      const full = rig.submit("full", { flow: "a", key: "k1" });
      const deadline = rig.submit("deadline", {
        flow: "b",
        key: "k2",
        deadline: rig.clock.now() + 5,
      });
      const ac = new AbortController();
      const cancelled = rig.submit("cancelled", { flow: "c", key: "k3", signal: ac.signal });
      ac.abort();
      await rig.clock.advance(5);
      assertRejected(full, "QUEUE_FULL");
      assertRejected(deadline, "DEADLINE_EXCEEDED");
      assertRejected(cancelled, "CANCELLED");
      const timeout = rig.submit("timeout", { flow: "d", key: "k4" });
      await rig.clock.advance(50);
      assertRejected(timeout, "QUEUE_TIMEOUT");
      rig.auto = true;
      await rig.finish("running");
      const retries = [
        ["a", "k1"],
        ["b", "k2"],
        ["c", "k3"],
        ["d", "k4"],
      ];
      for (const [flow, key] of retries) rig.submit(`${key} again`, { flow, key });
      await settle();
      assert.deepEqual(rig.order, ["running", "k1 again", "k2 again", "k3 again", "k4 again"]);
    });

    it("keeps at most maxKept replies, dropping the oldest first", async () => {
      const rig = new Rig([{}], { maxKept: 3 });
      rig.auto = true;
      for (let i = 1; i <= 4; i++) rig.submit(`k${i}`, { key: `k${i}` });
      await settle();
      assert.equal(rig.sched.status().kept, 3);
      for (let i = 1; i <= 4; i++) rig.submit(`k${i} again`, { key: `k${i}` });
      await settle();
      assert.deepEqual(rig.order, ["k1", "k2", "k3", "k4", "k1 again"]);
    });

    it("keeps at most maxKeptPerGuest replies of one guest: its own oldest go, never another's", async () => {
      const rig = new Rig([{}], { maxKeptPerGuest: 2 });
      rig.auto = true;
      rig.submit("b1", { key: "b1", flow: "b" });
      // Guest a submits under ever new keys.
      for (let i = 1; i <= 5; i++) rig.submit(`a${i}`, { key: `a${i}`, flow: "a" });
      await settle();
      assert.equal(rig.sched.status().kept, 3, "a's two newest and b's one");
      rig.submit("b1 again", { key: "b1", flow: "b" });
      rig.submit("a5 again", { key: "a5", flow: "a" });
      rig.submit("a1 again", { key: "a1", flow: "a" });
      await settle();
      // b's reply was kept, a's newest too; a's oldest was pushed out by a's own.
      assert.deepEqual(rig.order, ["b1", "a1", "a2", "a3", "a4", "a5", "a1 again"]);
    });

    it("scopes a key to its flow and pool", async () => {
      const rig = new Rig([{ name: "p" }, { name: "q" }]);
      rig.auto = true;
      rig.submit("a in p", { key: "k", flow: "a" });
      rig.submit("b in p", { key: "k", flow: "b" });
      rig.submit("a in q", { key: "k", flow: "a", pool: "q" });
      await settle();
      rig.submit("a in p again", { key: "k", flow: "a" });
      await settle();
      assert.deepEqual([...rig.order].sort(), ["a in p", "a in q", "b in p"]);
    });
  });

  describe("requests", () => {
    it("names the pools it has when asked for one it has not (POOL_NOT_FOUND)", async () => {
      const rig = new Rig([{ name: "fast" }, { name: "slow" }]);
      const o = rig.submit("x", { pool: "gpu" });
      await settle();
      const err = assertRejected(o, "POOL_NOT_FOUND");
      assert.deepEqual(err.details, { pool: "gpu", available: ["fast", "slow"] });
      assert.match(err.message, /"gpu".*"fast", "slow"/);
    });

    it("refuses a priority outside 1..levels with INVALID_OPTION naming the range", async () => {
      const rig = new Rig([{ weights: [4, 2, 1] }]);
      for (const priority of [0, 4, 1.5, Number.NaN, "1" as unknown as number]) {
        const o = rig.submit("x", { priority });
        await settle();
        const err = assertRejected(o, "INVALID_OPTION");
        assert.match(err.message, /from 1 .* to 3/);
        assert.equal(err.details?.max, 3);
      }
      assert.deepEqual(rig.order, []);
    });

    it("treats a runner that throws synchronously like one that rejects", async () => {
      const clock = new FakeClock();
      const sched = new Scheduler({
        clock,
        keepMs: 0,
        pools: [POOL],
        run: (_pool, input) => {
          if (input === "throw") throw new Error("bad worker");
          return Promise.resolve("fine");
        },
      });
      const thrown = track(
        sched.submit({ pool: "p", priority: 1, flow: "a", input: "throw" }),
        clock,
      );
      const after = track(sched.submit({ pool: "p", priority: 1, flow: "a", input: "ok" }), clock);
      await settle();
      assert.equal((thrown.value as Error).message, "bad worker");
      assert.equal(after.value, "fine");
      const level = sched.status().pools[0]?.levels[0];
      assert.deepEqual([level?.failed, level?.done, level?.running], [1, 1, 0]);
    });

    it("refuses options it cannot use with INVALID_OPTION", () => {
      const base = { clock: new FakeClock(), keepMs: 0, run: async () => {} };
      const bad: Partial<PoolSpec>[] = [
        { slots: 0 },
        { slots: 1.5 },
        { weights: [] },
        { weights: [1, 0] },
        { queueLimit: -1 },
        { guestLimit: Number.NaN },
        { maxWaitMs: -5 },
        { name: "" },
      ];
      for (const spec of bad) {
        assert.throws(
          () => new Scheduler({ ...base, pools: [{ ...POOL, ...spec }] }),
          (err: unknown) => isGuestlinkError(err, "INVALID_OPTION"),
          JSON.stringify(spec),
        );
      }
      assert.throws(() => new Scheduler({ ...base, pools: [POOL, POOL] }), /named twice/);
      assert.throws(() => new Scheduler({ ...base, pools: [] }), /at least one pool/);
      assert.throws(() => new Scheduler({ ...base, pools: [POOL], keepMs: -1 }), /keepMs/);
    });
  });

  describe("status", () => {
    it("counts per level and per flow, and lists the queue in dispatch order within each level", async () => {
      const rig = new Rig([{ weights: [2, 1], queueLimit: 6 }]);
      rig.submit("running", { flow: "z" }); // waited 0
      await rig.clock.advance(10);
      rig.submit("a1", { flow: "A", key: "ka" });
      rig.submit("a2", { flow: "A" });
      await rig.clock.advance(10);
      rig.submit("b1", { flow: "B" });
      rig.submit("low-a", { flow: "A", priority: 2 });
      rig.submit("low-c", { flow: "C", priority: 2 });
      rig.submit("low-c2", { flow: "C", priority: 2 });
      rig.submit("full", { flow: "C", priority: 2 }); // QUEUE_FULL
      await rig.clock.advance(5);

      let pool = rig.sched.status().pools[0];
      assert.equal(pool?.queued, 6);
      assert.deepEqual(pool?.queue, [
        { flow: "A", priority: 1, key: "ka", position: 1, waitingMs: 15 },
        { flow: "B", priority: 1, key: null, position: 2, waitingMs: 5 },
        { flow: "A", priority: 1, key: null, position: 3, waitingMs: 15 },
        { flow: "A", priority: 2, key: null, position: 1, waitingMs: 5 },
        { flow: "C", priority: 2, key: null, position: 2, waitingMs: 5 },
        { flow: "C", priority: 2, key: null, position: 3, waitingMs: 5 },
      ]);
      assert.deepEqual(
        rig.sched.status({ maxQueued: 2 }).pools[0]?.queue.map((q) => q.position),
        [1, 2],
      );
      assert.deepEqual(pool?.levels[1], {
        priority: 2,
        weight: 1,
        queued: 3,
        running: 0,
        done: 0,
        failed: 0,
        rejected: 1,
        cancelled: 0,
        waitP50Ms: null,
        waitP99Ms: null,
        oldestWaitingMs: 5,
      });
      assert.equal(pool?.levels[0]?.oldestWaitingMs, 15);
      assert.deepEqual(
        pool?.flows.find((f) => f.flow === "C"),
        {
          flow: "C",
          submitted: 3,
          served: 0,
          rejected: 1,
          queued: 2,
          running: 0,
        },
      );

      // Drain: waits at level 1 are 0 ("running"), 15 (a1), 5 (b1), 15 (a2); at level 2, 5 each.
      rig.auto = true;
      rig.run("running").reject(new Error("failed"));
      await settle();
      pool = rig.sched.status().pools[0];
      const [high, low] = pool?.levels ?? [];
      assert.deepEqual(
        [high?.done, high?.failed, high?.queued, high?.running, low?.done],
        [3, 1, 0, 0, 3],
      );
      assert.deepEqual([high?.waitP50Ms, high?.waitP99Ms], [5, 15]);
      assert.deepEqual([low?.waitP50Ms, low?.waitP99Ms], [5, 5]);
      assert.equal(high?.oldestWaitingMs, null);
      assert.deepEqual(
        pool?.flows.find((f) => f.flow === "A"),
        {
          flow: "A",
          submitted: 3,
          served: 3,
          rejected: 0,
          queued: 0,
          running: 0,
        },
      );
      assert.equal(rig.sched.status().kept, 1);
    });

    it("reports wait percentiles over the last 1024 waits only", async () => {
      const rig = new Rig();
      rig.submit(0);
      for (let i = 1; i <= 1124; i++) rig.submit(i);
      // One finishes each millisecond, so job i waits i ms: 0, 1, …, 1124.
      for (let i = 1; i <= 1124; i++) {
        await rig.clock.advance(1);
        rig.run(i - 1).resolve(undefined);
        await settle(2);
      }
      const level = rig.sched.status().pools[0]?.levels[0];
      // The last 1024 are 101..1124: nearest-rank p50 is the 512th, p99 the 1014th.
      assert.deepEqual([level?.waitP50Ms, level?.waitP99Ms], [612, 1114]);
    });
  });

  describe("lifecycle", () => {
    it("leaves no listener or timer behind once a job is answered", async () => {
      const rig = new Rig([{ maxWaitMs: 1000 }]);
      const signal = countingSignal();
      rig.submit("running", { signal, deadline: rig.clock.now() + 500 });
      const queued = rig.submit("queued", { signal, deadline: rig.clock.now() + 500, key: "k" });
      rig.submit("attached", { signal, key: "k", deadline: rig.clock.now() + 600 });
      assert.equal(signal.listeners, 3);
      // One for the earliest of the three deadlines (the scheduler keeps them in a heap), one max_wait.
      assert.equal(rig.clock.pendingTimers, 2);
      rig.auto = true;
      await rig.finish("running");
      assert.deepEqual(queued.value, { answer: "queued" });
      assert.equal(signal.listeners, 0);
      assert.equal(rig.clock.pendingTimers, 0);
    });

    it("close(): rejects queued jobs, aborts running ones, refuses new ones, resolves once all settled", async () => {
      const rig = new Rig([{ slots: 2, maxWaitMs: 1000 }]);
      const one = rig.submit("one", { deadline: rig.clock.now() + 10_000 });
      const two = rig.submit("two");
      const queued = rig.submit("queued", { key: "k" });
      let closed = false;
      const closing = rig.sched.close().then(() => (closed = true));
      await settle();
      const err = assertRejected(queued, "SESSION_CLOSED");
      assert.equal(err.message, "the mediator is shutting down");
      for (const name of ["one", "two"]) {
        const { ctx } = rig.run(name);
        assert.ok(ctx.signal.aborted, "ctx.signal.aborted");
        assert.ok(
          isGuestlinkError(ctx.signal.reason, "SESSION_CLOSED"),
          'isGuestlinkError(ctx.signal.reason, "SESSION_CLOSED")',
        );
      }
      const late = rig.submit("late");
      await settle();
      assertRejected(late, "SESSION_CLOSED");
      assert.equal(closed, false);
      rig.run("one").reject(rig.run("one").ctx.signal.reason);
      await settle();
      assertRejected(one, "SESSION_CLOSED");
      assert.equal(closed, false);
      rig.run("two").resolve("finished anyway");
      await closing;
      assert.equal(two.value, "finished anyway");
      assert.equal(rig.clock.pendingTimers, 0);
      assert.deepEqual(rig.order, ["one", "two"]);
      assert.equal(rig.sched.status().pools[0]?.queued, 0);
      assert.equal(rig.sched.status().kept, 0);
      await rig.sched.close(); // again: already closed
    });
  });

  describe("scale", () => {
    it("queues 100,000 jobs and drains them in order: FIFO per flow, turns per level, shares by weight", async () => {
      const count = 100_000;
      const rig = new Rig([{ weights: [3, 2, 1] }]);
      rig.submit("blocker", { flow: "z" });
      const jobs: { id: number; flow: string; priority: number }[] = [];
      let x = 0x17;
      for (let id = 0; id < count; id++) {
        x = (x * 1103515245 + 12345) % 2 ** 31;
        // Skewed: flow g0 floods, the others trickle in.
        const flow = x % 4 === 0 ? `g${1 + (x % 97)}` : "g0";
        const priority = 1 + (Math.floor(x / 7) % 3);
        jobs.push({ id, flow, priority });
        void rig.sched.submit({ pool: "p", priority, flow, input: id });
      }
      const status = rig.sched.status();
      assert.equal(status.pools[0]?.queued, count);
      assert.equal(status.pools[0]?.queue.length, 1000);
      rig.auto = true;
      await rig.finish("blocker");
      const ran = rig.order.slice(1) as number[];
      assert.equal(ran.length, count);
      for (const priority of [1, 2, 3]) {
        const atLevel = jobs.filter((j) => j.priority === priority);
        const expected = interleave(groupsOf(atLevel, (j) => j.flow)).map((j) => j.id);
        const actual = ran.filter((id) => jobs[id]?.priority === priority);
        assert.deepEqual(actual, expected, `level ${priority}`);
      }
      const first = ran.slice(0, 30_000).map((id) => jobs[id]?.priority);
      for (const [priority, weight] of [
        [1, 3],
        [2, 2],
        [3, 1],
      ] as const) {
        const share = first.filter((p) => p === priority).length / first.length;
        assert.ok(Math.abs(share - weight / 6) <= 0.02, `level ${priority}: ${share}`);
      }
      assert.equal(rig.sched.status().pools[0]?.queued, 0);
    });
  });
});

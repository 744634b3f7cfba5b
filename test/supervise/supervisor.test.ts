import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AbortSignalLike } from "../../src/abort.ts";
import {
  ConnectFailedError,
  GuestlinkError,
  InvalidAddressError,
  isGuestlinkError,
  TransportFailedError,
} from "../../src/errors.ts";
import { mulberry32 } from "../../src/prng.ts";
import {
  Supervisor,
  type SupervisorOptions,
  type SupervisorStateEvent,
} from "../../src/supervise/supervisor.ts";
import { FakeClock, settle } from "../helpers/fake-clock.ts";
import { SEED } from "../helpers/seed.ts";

/** A connection that ends when the test says so. */
class Conn {
  readonly closed: Promise<unknown>;
  #end!: (why: unknown) => void;

  constructor(readonly id: number) {
    this.closed = new Promise((resolve) => {
      this.#end = resolve;
    });
  }

  end(why?: unknown): void {
    this.#end(why);
  }
}

/** The far side: up (connects), down (refuses) or hanging (answers nothing until aborted). */
class Peer {
  mode: "up" | "down" | "hang" = "up";
  refusal: unknown = new ConnectFailedError(
    "no agent listening at unix:/run/test.sock (ECONNREFUSED): is the agent running?",
  );
  readonly conns: Conn[] = [];
  readonly attemptsAt: number[] = [];
  readonly signals: AbortSignalLike[] = [];

  constructor(readonly clock: FakeClock) {}

  connect = (signal: AbortSignalLike): Promise<Conn> => {
    this.attemptsAt.push(this.clock.now());
    this.signals.push(signal);
    if (this.mode === "down") return Promise.reject(this.refusal);
    if (this.mode === "hang") {
      return new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason), { once: true }),
      );
    }
    const conn = new Conn(this.conns.length + 1);
    this.conns.push(conn);
    return Promise.resolve(conn);
  };
}

function setup(options: Partial<SupervisorOptions<Conn>> = {}, mode: Peer["mode"] = "up") {
  const clock = new FakeClock();
  const peer = new Peer(clock);
  peer.mode = mode;
  const supervisor = new Supervisor<Conn>({
    connect: peer.connect,
    closed: (conn) => conn.closed,
    clock,
    random: mulberry32(SEED),
    ...options,
  });
  const events: SupervisorStateEvent[] = [];
  supervisor.onEvent((event) => events.push(event));
  const last = () => events.at(-1) as SupervisorStateEvent;
  return { clock, peer, supervisor, events, last };
}

/** Watches a promise without awaiting it (and without leaving a rejection unhandled). */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error: unknown) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

const transitions = (events: SupervisorStateEvent[]) =>
  events.map((e) => `${e.previous}->${e.state}`);

describe("Supervisor", () => {
  it("is ready after a first attempt that succeeds, and ready() gives that connection", async () => {
    const { supervisor, peer, events, clock } = setup();
    assert.equal(supervisor.state, "idle");
    supervisor.start();
    const conn = await supervisor.ready();
    assert.equal(conn, peer.conns[0]);
    assert.equal(supervisor.current, conn);
    assert.equal(supervisor.state, "ready");
    assert.deepEqual(events, [
      { type: "state", state: "connecting", previous: "idle", attempt: 1 },
      { type: "state", state: "ready", previous: "connecting", attempt: 1 },
    ]);
    assert.equal(clock.pendingTimers, 0, "no timer while connected and never giving up");
  });

  it("starts on its own when ready() is called while idle", async () => {
    const { supervisor, peer } = setup();
    assert.equal(await supervisor.ready(), peer.conns[0]);
  });

  it("waits min(ceiling, base·2^n) at most between failed attempts, drawn from the seeded random", async () => {
    const baseMs = 100;
    const ceilingMs = 10_000;
    const { supervisor, peer, clock, events, last } = setup(
      { backoff: { baseMs, ceilingMs } },
      "down",
    );
    supervisor.start();
    await settle();
    while (peer.attemptsAt.length < 15) {
      const before = peer.attemptsAt.length;
      const delay = last().nextRetryInMs as number;
      // The next attempt starts exactly when the delay has passed, not a millisecond sooner.
      if (delay > 0) {
        await clock.advance(delay - 1);
        assert.equal(peer.attemptsAt.length, before);
      }
      await clock.advance(delay > 0 ? 1 : 0);
      assert.ok(peer.attemptsAt.length > before);
    }
    const expected = mulberry32(SEED);
    const failures = events.filter((e) => e.state === "transient-failure").slice(0, 14);
    const delays = failures.map((event, n) => {
      assert.equal(event.error, peer.refusal);
      assert.equal(event.attempt, n + 1);
      const delay = event.nextRetryInMs as number;
      const limit = Math.min(ceilingMs, baseMs * 2 ** n);
      assert.ok(delay >= 0 && delay <= limit, `delay ${delay} outside [0, ${limit}], seed ${SEED}`);
      assert.equal(delay, Math.floor(expected() * limit), `seed ${SEED}`);
      return delay;
    });
    const times = peer.attemptsAt.slice(0, 15);
    const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
    assert.deepEqual(gaps, delays);
    supervisor.shutdown();
  });

  it("replays the same retry times from the same seed", async () => {
    const run = async (seed: number) => {
      const { supervisor, peer, clock } = setup({ random: mulberry32(seed) }, "down");
      supervisor.start();
      await clock.advance(120_000);
      supervisor.shutdown();
      return peer.attemptsAt;
    };
    const first = await run(SEED);
    assert.ok(first.length > 10);
    assert.deepEqual(await run(SEED), first, `seed ${SEED}`);
    assert.notDeepEqual(await run(SEED + 1), first, `seed ${SEED}`);
  });

  it("never waits longer than the ceiling", async () => {
    const { supervisor, clock, events } = setup(
      { backoff: { baseMs: 100, ceilingMs: 1_000 }, random: () => 1 },
      "down",
    );
    supervisor.start();
    await clock.advance(10_000);
    const delays = events
      .filter((e) => e.state === "transient-failure")
      .map((e) => e.nextRetryInMs);
    assert.deepEqual(delays.slice(0, 8), [100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000]);
    assert.ok(delays.every((d) => (d as number) <= 1_000));
    supervisor.shutdown();
  });

  it("resets the backoff when a connection that lasted stableAfterMs ends, not after a short one", async () => {
    const { supervisor, peer, clock, last } = setup(
      { backoff: { baseMs: 100, ceilingMs: 5_000 }, random: () => 1 },
      "down",
    );
    supervisor.start();
    await clock.advance(100 + 200 + 400 + 800);
    peer.mode = "up";
    await clock.advance(1_600);
    assert.equal(supervisor.state, "ready");
    assert.equal(last().attempt, 6);

    // Accepted, then dropped at once: a peer in a crash loop is not re-dialled at the base rate.
    await clock.advance(10);
    peer.conns[0]?.end(new TransportFailedError("reset by peer"));
    await settle();
    assert.equal(last().state, "transient-failure");
    assert.equal(last().nextRetryInMs, 3_200);

    await clock.advance(3_200);
    assert.equal(supervisor.state, "ready");
    // The default stableAfterMs is the ceiling.
    await clock.advance(5_000);
    peer.conns[1]?.end(new TransportFailedError("reset by peer"));
    await settle();
    assert.equal(last().state, "transient-failure");
    assert.equal(last().attempt, 0);
    assert.equal(last().nextRetryInMs, 100);
    supervisor.shutdown();
  });

  it("resets the backoff after every connection with stableAfterMs 0", async () => {
    const { supervisor, peer, clock, last } = setup({ stableAfterMs: 0, random: () => 1 }, "down");
    supervisor.start();
    await clock.advance(100 + 200 + 400);
    peer.mode = "up";
    await clock.advance(800);
    assert.equal(supervisor.state, "ready");
    peer.conns[0]?.end();
    await settle();
    assert.equal(last().nextRetryInMs, 100);
    supervisor.shutdown();
  });

  it("reconnects when the connection ends, reporting why", async () => {
    const { supervisor, peer, clock, last } = setup();
    const first = await supervisor.ready();
    const why = new TransportFailedError("the link failed");
    first.end(why);
    await settle();
    assert.equal(supervisor.state, "transient-failure");
    assert.equal(supervisor.current, undefined);
    assert.equal(last().error, why);
    const waiting = track(supervisor.ready());
    await clock.advance(last().nextRetryInMs as number);
    assert.equal(supervisor.state, "ready");
    assert.equal(waiting.value, peer.conns[1]);
    assert.equal(supervisor.current, peer.conns[1]);

    // A clean end is retried too, and its event carries no error.
    peer.conns[1]?.end();
    await settle();
    assert.equal(last().state, "transient-failure");
    assert.ok(!("error" in last()));
    await clock.advance(last().nextRetryInMs as number);
    assert.equal(supervisor.current, peer.conns[2]);
    supervisor.shutdown();
  });

  it("gives up after giveUpAfterMs: ready() rejects with CONNECT_FAILED saying how long and why, and it shuts down", async () => {
    const { supervisor, peer, clock, last } = setup({ giveUpAfterMs: 5_000 }, "down");
    const waiting = track(supervisor.ready());
    await clock.advance(4_999);
    assert.equal(waiting.settled, false);
    assert.equal(supervisor.state, "transient-failure");
    await clock.advance(1);
    const err = waiting.error;
    assert.ok(isGuestlinkError(err, "CONNECT_FAILED"), String(err));
    assert.match(err.message, /gave up connecting after 5 s and \d+ attempts/);
    assert.match(err.message, /ECONNREFUSED/);
    assert.equal(err.cause, peer.refusal);
    assert.equal(err.details?.reason, "gave-up");
    assert.equal(err.details?.attempts, peer.attemptsAt.length);

    assert.equal(supervisor.state, "shutdown");
    assert.equal(last().state, "shutdown");
    assert.equal(last().error, err);
    assert.equal(clock.pendingTimers, 0);
    await assert.rejects(supervisor.ready(), (e) => e === err);
    const attempts = peer.attemptsAt.length;
    await clock.advance(60_000);
    assert.equal(peer.attemptsAt.length, attempts, "no attempt after giving up");
  });

  it("counts giveUpAfterMs from the moment the connection ended, not from the start", async () => {
    const { supervisor, peer, clock } = setup({ giveUpAfterMs: 5_000 });
    const conn = await supervisor.ready();
    await clock.advance(60_000);
    assert.equal(supervisor.state, "ready");
    peer.mode = "down";
    conn.end(new TransportFailedError("the link failed"));
    await clock.advance(4_999);
    assert.equal(supervisor.state, "transient-failure");
    await clock.advance(1);
    assert.equal(supervisor.state, "shutdown");
  });

  it("gives up in the middle of an attempt, aborts it, and disposes a connection that arrives anyway", async () => {
    const clock = new FakeClock();
    const disposed: Conn[] = [];
    let deliver!: (conn: Conn) => void;
    let signal!: AbortSignalLike;
    const supervisor = new Supervisor<Conn>({
      // Ignores its signal, as a session mid-handshake does.
      connect: (s) => {
        signal = s;
        return new Promise((resolve) => {
          deliver = resolve;
        });
      },
      closed: (conn) => conn.closed,
      dispose: (conn) => disposed.push(conn),
      clock,
      random: mulberry32(SEED),
      giveUpAfterMs: 1_000,
    });
    const waiting = track(supervisor.ready());
    await clock.advance(1_000);
    assert.ok(signal.aborted);
    assert.ok(isGuestlinkError(waiting.error, "CONNECT_FAILED"));
    assert.match(
      (waiting.error as Error).message,
      /after 1 s and 1 attempt; an attempt was still in progress/,
    );
    assert.equal(signal.reason, waiting.error);
    const late = new Conn(99);
    deliver(late);
    await settle();
    assert.deepEqual(disposed, [late]);
    assert.equal(supervisor.current, undefined);
    assert.equal(supervisor.state, "shutdown");
  });

  it("stops everything when shut down during a backoff delay, leaving no timer", async () => {
    const { supervisor, peer, clock, last } = setup({ giveUpAfterMs: 60_000 }, "down");
    const waiting = track(supervisor.ready());
    await settle();
    assert.equal(supervisor.state, "transient-failure");
    assert.equal(clock.pendingTimers, 2, "the retry and the give-up");
    assert.equal(supervisor.shutdown(), undefined);
    assert.equal(clock.pendingTimers, 0);
    assert.equal(supervisor.state, "shutdown");
    assert.deepEqual(last(), {
      type: "state",
      state: "shutdown",
      previous: "transient-failure",
      attempt: 1,
    });
    await settle();
    assert.ok(isGuestlinkError(waiting.error, "CANCELLED"));
    await clock.advance(120_000);
    assert.equal(peer.attemptsAt.length, 1);
    supervisor.start();
    await settle();
    assert.equal(peer.attemptsAt.length, 1, "start() does not revive it");
  });

  it("aborts an attempt in flight on shutdown, with the reason given", async () => {
    const { supervisor, peer, clock } = setup({}, "hang");
    const waiting = track(supervisor.ready());
    await settle();
    assert.equal(supervisor.state, "connecting");
    const reason = new GuestlinkError("SESSION_CLOSED", "the agent is stopping");
    supervisor.shutdown(reason);
    assert.ok(peer.signals[0]?.aborted);
    assert.equal(peer.signals[0]?.reason, reason);
    await settle();
    assert.equal(waiting.error, reason);
    assert.equal(clock.pendingTimers, 0);
  });

  it("hands back the live connection on shutdown without closing it, and stops watching it", async () => {
    const { supervisor, peer, clock, events } = setup();
    const conn = await supervisor.ready();
    assert.equal(supervisor.shutdown(), conn);
    assert.equal(supervisor.current, undefined);
    const count = events.length;
    conn.end(new TransportFailedError("closed by the caller"));
    await clock.advance(60_000);
    assert.equal(peer.attemptsAt.length, 1);
    assert.equal(events.length, count);
    assert.equal(supervisor.shutdown(), undefined, "a second shutdown does nothing");
  });

  it("reports every transition in order, each previous being the state before", async () => {
    const { supervisor, peer, clock, events } = setup({ random: () => 0.5 }, "down");
    supervisor.start();
    await clock.advance(50);
    peer.mode = "up";
    await clock.advance(100);
    peer.conns[0]?.end(new TransportFailedError("cut"));
    await clock.advance(400);
    supervisor.shutdown();
    assert.deepEqual(transitions(events), [
      "idle->connecting",
      "connecting->transient-failure",
      "transient-failure->connecting",
      "connecting->transient-failure",
      "transient-failure->connecting",
      "connecting->ready",
      "ready->transient-failure",
      "transient-failure->connecting",
      "connecting->ready",
      "ready->shutdown",
    ]);
    assert.deepEqual(
      events.map((e) => e.attempt),
      [1, 1, 2, 2, 3, 3, 3, 4, 4, 4],
    );
    for (let i = 1; i < events.length; i++) {
      assert.equal(events[i]?.previous, events[i - 1]?.state);
    }
  });

  it("delivers events in order even when a listener shuts the supervisor down", async () => {
    const { supervisor } = setup();
    const seenByLater: string[] = [];
    supervisor.onEvent((e) => {
      if (e.state === "ready") supervisor.shutdown();
    });
    const unsubscribe = supervisor.onEvent((e) => seenByLater.push(`${e.previous}->${e.state}`));
    const waiting = track(supervisor.ready());
    await settle();
    assert.deepEqual(seenByLater, ["idle->connecting", "connecting->ready", "ready->shutdown"]);
    assert.ok(isGuestlinkError(waiting.error, "CANCELLED"));
    unsubscribe();
  });

  it("stops calling a listener once it unsubscribes", async () => {
    const { supervisor, peer } = setup();
    const seen: string[] = [];
    const unsubscribe = supervisor.onEvent((e) => seen.push(e.state));
    await supervisor.ready();
    unsubscribe();
    peer.conns[0]?.end();
    await settle();
    assert.deepEqual(seen, ["connecting", "ready"]);
    supervisor.shutdown();
  });

  it("rejects ready() with signal.reason on abort, removing its listener, and keeps retrying", async () => {
    const { supervisor, clock } = setup({}, "down");
    const listeners = new Set<() => void>();
    const controller = new AbortController();
    const signal: AbortSignalLike = {
      get aborted() {
        return controller.signal.aborted;
      },
      get reason() {
        return controller.signal.reason;
      },
      addEventListener: (_type, listener) => {
        listeners.add(listener);
        controller.signal.addEventListener("abort", listener, { once: true });
      },
      removeEventListener: (_type, listener) => {
        listeners.delete(listener);
        controller.signal.removeEventListener("abort", listener);
      },
    };
    const waiting = track(supervisor.ready({ signal }));
    await clock.advance(1_000);
    assert.equal(listeners.size, 1);
    const reason = new Error("the user pressed Ctrl-C");
    controller.abort(reason);
    await settle();
    assert.equal(waiting.error, reason);
    assert.equal(listeners.size, 0);
    assert.equal(supervisor.state, "transient-failure");

    const again = new AbortController();
    again.abort(reason);
    await assert.rejects(supervisor.ready({ signal: again.signal }), (e) => e === reason);
    supervisor.shutdown();
  });

  it("rejects ready() at its deadline with CONNECT_FAILED and the last error, cancelling its timer", async () => {
    const { supervisor, peer, clock } = setup({ backoff: { ceilingMs: 1_000 } }, "down");
    const waiting = track(supervisor.ready({ deadline: clock.now() + 2_500 }));
    await clock.advance(2_499);
    assert.equal(waiting.settled, false);
    await clock.advance(1);
    const err = waiting.error;
    assert.ok(isGuestlinkError(err, "CONNECT_FAILED"), String(err));
    assert.equal(err.details?.reason, "deadline");
    assert.match(err.message, /within 2\.5 s; the last error: no agent listening/);
    assert.equal(err.cause, peer.refusal);
    assert.equal(clock.pendingTimers, 1, "only the retry timer is left");
    assert.notEqual(supervisor.state, "shutdown");
    await assert.rejects(
      supervisor.ready({ deadline: clock.now() }),
      (e) => isGuestlinkError(e, "CONNECT_FAILED") && e.details?.reason === "deadline",
    );
    supervisor.shutdown();
  });

  it("shuts down at once, with the error itself, on a connect error no retry can fix", async () => {
    const { supervisor, peer, clock, last } = setup({}, "down");
    peer.refusal = new InvalidAddressError('"unix:" needs a path');
    await assert.rejects(supervisor.ready(), (e) => e === peer.refusal);
    assert.equal(supervisor.state, "shutdown");
    assert.equal(last().error, peer.refusal);
    assert.equal(clock.pendingTimers, 0);
  });

  it("follows a custom retryable() to fail at once", async () => {
    const { supervisor, peer } = setup(
      { retryable: (e) => !isGuestlinkError(e, "CONNECT_FAILED") },
      "down",
    );
    await assert.rejects(supervisor.ready(), (e) => e === peer.refusal);
  });

  it("treats a connect that throws synchronously as a failed attempt", async () => {
    const clock = new FakeClock();
    const boom = new Error("cannot spawn");
    const supervisor = new Supervisor<Conn>({
      connect: () => {
        throw boom;
      },
      closed: (conn) => conn.closed,
      clock,
      random: () => 0,
    });
    const events: SupervisorStateEvent[] = [];
    supervisor.onEvent((e) => events.push(e));
    supervisor.start();
    await settle();
    assert.equal(events.at(-1)?.state, "transient-failure");
    assert.equal(events.at(-1)?.error, boom);
    supervisor.shutdown();
  });

  it("rejects options out of range with INVALID_OPTION", () => {
    const clock = new FakeClock();
    const base = {
      connect: () => Promise.resolve(new Conn(1)),
      closed: (conn: Conn) => conn.closed,
      clock,
      random: () => 0,
    };
    const invalid = (e: unknown) => isGuestlinkError(e, "INVALID_OPTION");
    for (const bad of [
      { giveUpAfterMs: 0 },
      { giveUpAfterMs: -1 },
      { giveUpAfterMs: Number.NaN },
      { stableAfterMs: -1 },
      { backoff: { baseMs: 0 } },
      { connect: undefined },
      { closed: "no" },
      { clock: {} },
      { random: undefined },
      { retryable: 1 },
    ]) {
      assert.throws(
        () => new Supervisor({ ...base, ...(bad as object) } as SupervisorOptions<Conn>),
        invalid,
        JSON.stringify(bad),
      );
    }
    assert.doesNotThrow(() => new Supervisor({ ...base, giveUpAfterMs: Infinity }));
  });
});

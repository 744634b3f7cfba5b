import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import { RemoteError, Session } from "../../src/session/session.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { FakeClock, fakeRuntime, skewedClock } from "../helpers/fake-clock.ts";
import { sessionPair, settle } from "../helpers/session.ts";

const rejectsWith = async (p: Promise<unknown>, code: string) => {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isGuestlinkError(err), `expected a GuestlinkError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
};

describe("session: handshake", () => {
  it("exchanges identity, services, limits and agrees on a protocol version", async () => {
    const { client, server } = sessionPair({ server: { maxFrameBytes: 65536 } });
    server.handle("info", () => ({})).handle("exec", () => 0);
    const [serverSeen, clientSeen] = await Promise.all([client.ready, server.ready]);
    assert.equal(serverSeen.id, "agent-1");
    assert.equal(serverSeen.hostname, "guest.local");
    assert.deepEqual(serverSeen.services, ["info", "exec"]);
    assert.equal(serverSeen.protocol, 4);
    assert.equal(serverSeen.limits.maxFrameBytes, 65536);
    assert.equal(clientSeen.id, "host");
    assert.notEqual(serverSeen.sessionId, "");
    assert.notEqual(serverSeen.resumeToken, "");
    assert.notEqual(serverSeen.incarnation, clientSeen.incarnation);
    assert.equal(client.state, "open");
  });

  it("measures round-trip time and the peer's clock offset", async () => {
    const clock = new FakeClock();
    const [a, b] = memoryPair();
    const client = new Session(a, { role: "client", runtime: fakeRuntime(clock) });
    const server = new Session(b, {
      role: "server",
      runtime: fakeRuntime(skewedClock(clock, 42_000)),
    });
    await Promise.all([client.ready, server.ready]);
    await clock.advance(0);
    assert.equal(client.rttMs, 0, "a fake clock does not move while frames travel");
    assert.equal(client.clockOffsetMs, 42_000);
    assert.equal(server.clockOffsetMs, -42_000);
  });

  it("queues calls made before the handshake and sends them once it is done", async () => {
    const { client, server } = sessionPair();
    server.handle("echo", (p) => p);
    assert.equal(client.state, "handshaking");
    assert.deepEqual(await client.call("echo", { early: true }), { early: true });
  });
});

describe("session: calls", () => {
  it("runs many calls at once, completing in any order", async () => {
    const { client, server, clock } = sessionPair();
    server.handle("delay", async (params) => {
      const { ms, n } = params as { ms: number; n: number };
      await new Promise<void>((resolve) => clock.setTimer(ms, resolve));
      return n * 2;
    });
    const calls = Array.from({ length: 100 }, (_, n) =>
      client.call("delay", { ms: 1000 - n * 10, n }),
    );
    const order: number[] = [];
    for (const [n, c] of calls.entries()) {
      void c.then(() => {
        order.push(n);
      });
    }
    await clock.advance(1000);
    assert.deepEqual(
      await Promise.all(calls),
      Array.from({ length: 100 }, (_, n) => n * 2),
    );
    assert.deepEqual(
      order,
      Array.from({ length: 100 }, (_, n) => 99 - n),
      "the shortest finished first",
    );
  });

  it("answers an unknown method with METHOD_NOT_FOUND and carries on", async () => {
    const { client, server } = sessionPair();
    server.handle("known", () => "yes");
    await assert.rejects(client.call("nope"), (err: unknown) => {
      assert.ok(err instanceof RemoteError);
      assert.equal(err.code, "METHOD_NOT_FOUND");
      assert.match(err.message, /no such method: nope/);
      return true;
    });
    assert.equal(await client.call("known"), "yes");
  });

  it("returns handler failures as remote errors with their code, and never ends the session", async () => {
    const { client, server } = sessionPair();
    server
      .handle("typed", () => {
        throw Object.assign(new Error("over quota"), { code: "QUOTA_EXCEEDED" });
      })
      .handle("errno", () => {
        throw Object.assign(new Error("ENOENT: no such file or directory"), { code: "ENOENT" });
      })
      .handle("plain", async () => {
        throw new Error("boom");
      })
      .handle("ok", () => 1);
    await assert.rejects(client.call("typed"), (err: unknown) => {
      assert.ok(err instanceof RemoteError);
      assert.equal(err.code, "REMOTE_ERROR", "a code this side does not know");
      assert.equal(err.remoteCode, "QUOTA_EXCEEDED");
      return true;
    });
    await assert.rejects(client.call("errno"), (err: unknown) => {
      assert.ok(err instanceof RemoteError);
      assert.equal(err.remoteCode, "ENOENT");
      return true;
    });
    await rejectsWith(client.call("plain"), "HANDLER_FAILED");
    assert.equal(await client.call("ok"), 1);
    assert.equal(client.state, "open");
  });

  it("a result or params larger than the peer accepts fail that call with FRAME_TOO_LARGE, and the session goes on", async () => {
    const { client, server } = sessionPair({
      client: { maxFrameBytes: 4096 },
      server: { maxFrameBytes: 4096 },
    });
    server.handle("big", () => "x".repeat(10_000)).handle("echo", (p) => p);
    await rejectsWith(client.call("big"), "FRAME_TOO_LARGE");
    await rejectsWith(client.call("echo", "y".repeat(10_000)), "FRAME_TOO_LARGE");
    assert.equal(await client.call("echo", "small"), "small");
    assert.equal(client.state, "open");
    assert.equal(server.state, "open");
  });

  it("delivers notifications without a reply", async () => {
    const { client, server } = sessionPair();
    const seen: unknown[] = [];
    server.handle("event", (p) => {
      seen.push(p);
    });
    await client.ready;
    client.notify("event", { n: 1 });
    client.notify("event", { n: 2 });
    client.notify("missing", {});
    await settle();
    assert.deepEqual(seen, [{ n: 1 }, { n: 2 }]);
    assert.equal(
      server.stats.notificationErrors,
      1,
      "an unknown notification is counted, not answered",
    );
  });

  it("cancels from the caller: the handler's signal aborts, the call rejects, the peer confirms", async () => {
    const { client, server } = sessionPair();
    let handlerSignal: { aborted: boolean; reason: unknown } | undefined;
    server.handle("forever", (_p, ctx) => {
      handlerSignal = ctx.signal;
      return new Promise((_resolve, reject) =>
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)),
      );
    });
    const controller = new AbortController();
    const call = client.call("forever", {}, { signal: controller.signal });
    await settle();
    assert.equal(handlerSignal?.aborted, false);
    controller.abort(new Error("user pressed Ctrl-C"));
    await assert.rejects(call, /user pressed Ctrl-C/);
    await settle();
    assert.equal(handlerSignal?.aborted, true);
    assert.ok(isGuestlinkError(handlerSignal?.reason, "CANCELLED"));
    // The confirmation arrived and freed the call on both sides: a graceful close can finish.
    await Promise.all([client.close(), server.closed]);
    assert.equal(await client.closed, undefined);
  });

  it("after a cancel, `confirmed` carries the callee's own final word", async () => {
    const { client, server } = sessionPair();
    server.handle("job", (_p, ctx) => {
      return new Promise((resolve) =>
        ctx.signal.addEventListener("abort", () =>
          resolve({ stopped: true, why: (ctx.signal.reason as { code: string }).code }),
        ),
      );
    });
    const call = client.open("job");
    await settle();
    call.cancel("changed my mind");
    await assert.rejects(call.result, (e: unknown) => isGuestlinkError(e, "CANCELLED"));
    assert.deepEqual(await call.confirmed, { stopped: true, why: "CANCELLED" });
  });

  it("rejects at once when the signal is already aborted", async () => {
    const { client } = sessionPair();
    const controller = new AbortController();
    controller.abort(new Error("already"));
    await assert.rejects(client.call("x", {}, { signal: controller.signal }), /already/);
  });

  it("fails a call at its deadline on both sides", async () => {
    const { client, server, clock } = sessionPair();
    let handlerDeadline = 0;
    let abortedWith: unknown;
    server.handle("slow", (_p, ctx) => {
      handlerDeadline = ctx.deadline;
      ctx.signal.addEventListener("abort", () => {
        abortedWith = ctx.signal.reason;
      });
      return new Promise(() => {});
    });
    await client.ready;
    const call = client.call("slow", {}, { deadline: clock.now() + 250 });
    const settled = rejectsWith(call, "DEADLINE_EXCEEDED");
    await clock.advance(249);
    assert.equal(handlerDeadline, clock.now() + 1, "the remaining time travelled with the call");
    assert.equal(abortedWith, undefined);
    await clock.advance(1);
    await settled;
    assert.ok(
      isGuestlinkError(abortedWith, "DEADLINE_EXCEEDED"),
      "the callee stopped the work too, knowing why",
    );
  });

  it("gives calls the default deadline, and none when asked for Infinity", async () => {
    const { client, server, clock } = sessionPair({ client: { defaultCallTimeoutMs: 1000 } });
    server.handle("never", () => new Promise(() => {}));
    const limited = rejectsWith(client.call("never"), "DEADLINE_EXCEEDED");
    let unlimitedSettled = false;
    client.call("never", {}, { deadline: Infinity }).then(
      () => {},
      () => {
        unlimitedSettled = true;
      },
    );
    await clock.advance(1000);
    await limited;
    await clock.advance(1_000_000);
    assert.equal(unlimitedSettled, false);
  });

  it("refuses a deadline that has already passed without sending anything", async () => {
    const { client, clock } = sessionPair();
    await rejectsWith(client.call("x", {}, { deadline: clock.now() - 1 }), "DEADLINE_EXCEEDED");
  });

  it("a call refused before it started has failed streams, cancels harmlessly, and leaves nothing open", async () => {
    const { client, server, clock } = sessionPair();
    await client.ready;
    const call = client.open("x", {}, { deadline: clock.now(), streams: ["out"] });
    await rejectsWith(call.result, "DEADLINE_EXCEEDED");
    assert.equal(call.streams.out?.closed, true);
    assert.doesNotThrow(() => call.cancel());
    await client.close();
    assert.equal(await client.closed, undefined);
    assert.equal(await server.closed, undefined);
  });
});

describe("session: keepalive", () => {
  it("keeps an idle session alive with pings", async () => {
    const { client, server, clock } = sessionPair();
    await client.ready;
    await clock.advance(60_000);
    assert.equal(client.state, "open");
    assert.equal(server.state, "open");
  });

  it("rejects bad keepalive options", () => {
    const [a] = memoryPair();
    assert.throws(
      () =>
        new Session(a, {
          role: "client",
          runtime: fakeRuntime(),
          keepalive: { intervalMs: 5000, deadAfterMs: 5000 },
        }),
      (err: unknown) => isGuestlinkError(err, "INVALID_OPTION") && /deadAfterMs/.test(err.message),
    );
  });
});

describe("session: closing", () => {
  it("closes gracefully: calls in flight finish, new ones are refused, both sides end cleanly", async () => {
    const { client, server, clock } = sessionPair();
    server.handle(
      "work",
      () => new Promise((resolve) => clock.setTimer(100, () => resolve("done"))),
    );
    const inflight = client.call("work");
    await settle();
    const closing = client.close();
    await rejectsWith(client.call("work"), "SESSION_CLOSING");
    await clock.advance(100);
    assert.equal(await inflight, "done");
    await closing;
    assert.equal(await client.closed, undefined);
    assert.equal(await server.closed, undefined);
  });

  it("refuses calls from a peer that is closing, and the peer refuses ours", async () => {
    const { client, server } = sessionPair();
    server.handle("x", () => 1);
    await client.ready;
    void server.close();
    await settle();
    await rejectsWith(
      client.call("x"),
      client.state === "closed" ? "SESSION_CLOSED" : "SESSION_CLOSING",
    );
  });

  it("abort fails everything pending at once, on both sides", async () => {
    const { client, server } = sessionPair();
    server.handle("hang", () => new Promise(() => {}));
    const call = client.call("hang");
    await settle();
    client.abort();
    await rejectsWith(call, "SESSION_CLOSED");
    const serverEnd = await server.closed;
    assert.ok(serverEnd, "the peer saw the connection end with work in flight");
  });
});

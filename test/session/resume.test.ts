import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import type { SessionOptions } from "../../src/session/options.ts";
import { SessionRegistry } from "../../src/session/registry.ts";
import { Session, type SessionEvent } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { FrameType } from "../../src/wire/frame.ts";
import { FakeClock, fakeRuntime, settle } from "../helpers/fake-clock.ts";
import { copyStream, readAll, ScriptedPeer } from "../helpers/session.ts";

type Extra = Partial<Omit<SessionOptions, "role" | "runtime">>;

/**
 * A client that dials and an agent-side registry that accepts, over in-memory pairs that a test
 * can cut: `cut()` aborts the current pair, `reconnect()` makes a new one and hands each end over.
 */
function resumable(opts: { client?: Extra; server?: Extra } = {}) {
  const clock = new FakeClock();
  const servers: Session[] = [];
  const executions = new Map<string, number>();
  const makeRegistry = () =>
    new SessionRegistry(
      {
        role: "server",
        runtime: fakeRuntime(clock),
        keepalive: false,
        resume: { windowMs: 60_000 },
        ...opts.server,
      },
      (session) => {
        servers.push(session);
        session.handle("echo", (params) => {
          const key = String(params);
          executions.set(key, (executions.get(key) ?? 0) + 1);
          return params;
        });
      },
    );
  const world = {
    clock,
    servers,
    executions,
    registry: makeRegistry(),
    ends: [] as Transport[],
    client: undefined as unknown as Session,
    events: [] as SessionEvent[],
    cut() {
      for (const t of world.ends) t.abort(new Error("cut"));
      world.ends = [];
    },
    reconnect() {
      const [a, b] = memoryPair({ highWaterMark: 64 * 1024 });
      world.ends = [a, b];
      world.registry.accept(b);
      return world.client.reconnect(a);
    },
    /** The agent restarts: a new process, so a new incarnation and no sessions. */
    restartServer() {
      world.registry = makeRegistry();
    },
  };
  const [a, b] = memoryPair({ highWaterMark: 64 * 1024 });
  world.ends = [a, b];
  world.registry.accept(b);
  world.client = new Session(a, {
    role: "client",
    runtime: fakeRuntime(clock),
    keepalive: false,
    resume: { windowMs: 60_000 },
    ...opts.client,
  });
  world.client.onEvent((e) => world.events.push(e));
  return world;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("session: resume", () => {
  it("a session closed while disconnected keeps its unacknowledged result until the caller resumes", async () => {
    const w = resumable();
    await w.client.ready;
    const server = w.servers[0] as Session;
    let finish: (value: unknown) => void = () => {};
    server.handle("slow", () => new Promise((resolve) => (finish = resolve)));
    const result = w.client.call("slow");
    await settle();
    w.cut();
    await settle();
    // The work finishes while nobody is connected, and the agent is told to close.
    finish("done");
    await settle();
    let closed = false;
    const closing = server.close().then(() => (closed = true));
    await settle();
    assert.equal(closed, false, "the result would be lost with the session");
    assert.notEqual(server.state, "closed");
    w.reconnect();
    assert.equal(await result, "done");
    await closing;
    assert.equal(server.state, "closed");
  });

  it("completes a call that was in flight when the connection dropped, running it once", async () => {
    const w = resumable();
    await w.client.ready;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let runs = 0;
    w.servers[0]?.handle("slow", async () => {
      runs++;
      await gate;
      return "done";
    });
    const result = w.client.call("slow");
    await settle();
    assert.equal(runs, 1);
    w.cut();
    await settle();
    assert.equal(w.events[0]?.type, "disconnected");
    release();
    await settle();
    const conn = w.reconnect();
    await conn.ready;
    assert.equal(await result, "done");
    assert.equal(runs, 1);
    assert.equal(w.servers.length, 1, "the accepted connection went to the old session");
    const resumed = w.events.find((e) => e.type === "resumed");
    assert.ok(resumed && resumed.type === "resumed" && resumed.replayedFrames >= 0);
  });

  it("replays a result lost on the wire, and never runs the call twice", async () => {
    const w = resumable();
    await w.client.ready;
    await settle();
    const results = Array.from({ length: 50 }, (_, i) => w.client.call("echo", `c${i}`));
    // Cut before anything is delivered: the CALLs and the RESULTs of those that ran are lost.
    w.cut();
    await settle();
    w.reconnect();
    const values = await Promise.all(results);
    assert.deepEqual(
      values,
      results.map((_, i) => `c${i}`),
    );
    for (let i = 0; i < 50; i++) assert.equal(w.executions.get(`c${i}`), 1, `c${i} ran once`);
  });

  it("carries a stream byte-exact across several drops, both ways at once", async () => {
    const w = resumable();
    await w.client.ready;
    const total = 3 * 1024 * 1024;
    const data = new Uint8Array(total);
    for (let i = 0; i < total; i++) data[i] = (i * 7 + (i >> 11)) % 256;
    w.servers[0]?.handle("pipe", async (_p, ctx) => {
      const input = ctx.streams.in as SessionStream;
      const output = ctx.streams.out as SessionStream;
      await copyStream(input, output);
      return "ok";
    });
    const call = w.client.open("pipe", undefined, { streams: ["in", "out"] });
    const output = readAll(call.streams.out as SessionStream);
    const input = call.streams.in as SessionStream;
    for (let sent = 0, n = 0; sent < total; n++) {
      const chunk = data.subarray(sent, Math.min(total, sent + 64 * 1024));
      sent += chunk.length;
      input.write(chunk);
      await settle(2);
      if (n % 9 === 4) {
        w.cut();
        await settle(2);
        input.write(new Uint8Array(0)); // writing while disconnected is fine
        w.reconnect();
      }
    }
    input.end();
    assert.equal(await call.result, "ok");
    assert.equal(sha(await output), sha(data));
    assert.ok(w.events.filter((e) => e.type === "resumed").length >= 3);
    assert.equal(w.servers.length, 1);
  });

  it("fails what was in flight with RESUME_FAILED when the peer restarted, and new calls work at once", async () => {
    const w = resumable();
    await w.client.ready;
    w.servers[0]?.handle("hang", () => new Promise(() => {}));
    const inFlight = w.client.call("hang");
    await settle();
    w.cut();
    w.restartServer();
    const conn = w.reconnect();
    await assert.rejects(inFlight, (err) => {
      assert.ok(isGuestlinkError(err, "RESUME_FAILED"));
      assert.equal(err.details?.reason, "peer-restarted");
      assert.match(err.message, /restarted/);
      return true;
    });
    await conn.ready;
    assert.equal(await w.client.call("echo", "after"), "after");
    assert.equal(w.events.filter((e) => e.type === "restarted").length, 1);
    assert.equal(w.servers.length, 2);
  });

  it("fails with RESUME_FAILED (replay-exceeded) when more was sent than the replay buffer keeps", async () => {
    const w = resumable({ client: { resume: { replayBufferBytes: 4096 } } });
    await w.client.ready;
    await settle();
    w.cut();
    await settle();
    // Made while disconnected: kept for replay, but far more than 4 KiB of them.
    const calls = Array.from({ length: 200 }, (_, i) => w.client.call("echo", `x${i}`));
    const conn = w.reconnect();
    const outcomes = await Promise.allSettled(calls);
    assert.ok(
      outcomes.every(
        (o) =>
          o.status === "rejected" &&
          isGuestlinkError(o.reason, "RESUME_FAILED") &&
          o.reason.details?.reason === "replay-exceeded",
      ),
    );
    await conn.lost;
    await w.reconnect().ready;
    assert.equal(await w.client.call("echo", "fresh"), "fresh");
    assert.equal(w.executions.get("x0"), undefined, "nothing of the lost batch ran");
  });

  it("ends with RESUME_FAILED (timeout) when no connection comes back within the window", async () => {
    const w = resumable({ client: { resume: { windowMs: 5_000 } } });
    await w.client.ready;
    w.servers[0]?.handle("hang", () => new Promise(() => {}));
    const call = w.client.call("hang");
    await settle();
    w.cut();
    await w.clock.advance(4_999);
    assert.equal(w.client.state, "open");
    await w.clock.advance(1);
    await assert.rejects(call, (err) => {
      assert.ok(isGuestlinkError(err, "RESUME_FAILED"));
      assert.equal(err.details?.reason, "timeout");
      return true;
    });
    const closed = await w.client.closed;
    assert.equal(closed?.code, "RESUME_FAILED");
  });

  it("a redial lost before its handshake neither says disconnected again nor extends the window", async () => {
    const w = resumable({ client: { resume: { windowMs: 5_000 } } });
    await w.client.ready;
    w.cut();
    await settle();
    await w.clock.advance(3_000);
    // Something accepts the redial and drops it before answering (an agent going away).
    const [a, b] = memoryPair({ highWaterMark: 64 * 1024 });
    const redial = w.client.reconnect(a);
    b.abort(new Error("going away"));
    await redial.lost;
    await settle();
    assert.deepEqual(
      w.events.map((e) => e.type),
      ["disconnected"],
    );
    await w.clock.advance(1_999);
    assert.equal(w.client.state, "open");
    await w.clock.advance(1);
    const closed = await w.client.closed;
    assert.equal(closed?.code, "RESUME_FAILED");
    assert.equal(closed?.details?.reason, "timeout");
  });

  it("the waiting side ends its session too when nobody comes back, aborting the handler", async () => {
    const w = resumable({ server: { resume: { windowMs: 1_000 } } });
    await w.client.ready;
    let aborted: unknown;
    w.servers[0]?.handle("hang", (_p, ctx) => {
      return new Promise((_resolve, reject) =>
        ctx.signal.addEventListener("abort", () => {
          aborted = ctx.signal.reason;
          reject(ctx.signal.reason);
        }),
      );
    });
    void w.client.call("hang").catch(() => {});
    await settle();
    w.cut();
    await w.clock.advance(1_000);
    assert.ok(isGuestlinkError(aborted, "RESUME_FAILED"));
    assert.equal((await w.servers[0]?.closed)?.code, "RESUME_FAILED");
    assert.equal(w.registry.sessions.size, 0);
  });

  it("acknowledges as it goes, so the replay buffer stays small while connected", async () => {
    const w = resumable();
    await w.client.ready;
    for (let round = 0; round < 10; round++) {
      await Promise.all(
        Array.from({ length: 300 }, (_, i) => w.client.call("echo", `${round}.${i}`)),
      );
    }
    await settle();
    assert.ok(w.client.replayBuffer.frames <= 300, `client keeps ${w.client.replayBuffer.frames}`);
    const server = w.servers[0] as Session;
    assert.ok(server.replayBuffer.frames <= 300, `server keeps ${server.replayBuffer.frames}`);
  });

  it("a reconnect with a wrong token gets a new session, not someone else's", async () => {
    const w = resumable();
    await w.client.ready;
    const real = w.servers[0] as Session;
    const [a, b] = memoryPair();
    w.registry.accept(b);
    const forger = new ScriptedPeer(a);
    forger.hello({
      incarnation: w.client.options.runtime.incarnation,
      resume: { sessionId: real.id, token: "a guess", received: 0 },
    });
    await settle();
    const answer = forger.frames(FrameType.HELLO)[0]?.body;
    assert.ok(answer);
    assert.notEqual(answer.sessionId, real.id);
    assert.equal((answer.resumeRefused as { reason: string }).reason, "unknown-session");
    assert.equal(answer.resumed, undefined);
    assert.equal(w.servers.length, 2);
    assert.equal(await w.client.call("echo", "still mine"), "still mine");
  });

  it("tells a stalled peer (answering keepalive, no progress) from a dead one", async () => {
    const w = resumable({
      client: { keepalive: { intervalMs: 1_000, deadAfterMs: 3_000 } },
      server: { keepalive: { intervalMs: 1_000, deadAfterMs: 3_000 } },
    });
    await w.client.ready;
    let release!: (v: string) => void;
    w.servers[0]?.handle("busy", () => new Promise<string>((r) => (release = r)));
    const call = w.client.call("busy");
    assert.equal(w.client.liveness, "alive");
    await w.clock.advance(10_000);
    assert.equal(w.client.liveness, "stalled");
    assert.equal(w.client.state, "open", "stalled is not dead");
    const stalled = w.events.find((e) => e.type === "stalled");
    assert.ok(stalled && stalled.type === "stalled" && stalled.forMs >= 3_000);
    release("finally");
    assert.equal(await call, "finally");
    await w.clock.advance(1_000);
    assert.equal(w.client.liveness, "alive");
    assert.equal(w.events.at(-1)?.type, "progressing");
  });

  it("refuses reconnect() on a session without resume, closing the transport it was given", () => {
    const clock = new FakeClock();
    const [a] = memoryPair();
    const s = new Session(a, { role: "client", runtime: fakeRuntime(clock), keepalive: false });
    const [c, d] = memoryPair();
    assert.throws(
      () => s.reconnect(c),
      (err) => isGuestlinkError(err, "INVALID_OPTION"),
    );
    void d;
    s.abort();
  });
});

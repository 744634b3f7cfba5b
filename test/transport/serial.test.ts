import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import { SessionRegistry } from "../../src/session/registry.ts";
import { Session, type SessionEvent } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { connect, listen } from "../../src/transport/index.ts";
import { SERIAL_REOPEN_MS, SerialListener } from "../../src/transport/serial.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { FakeClock, fakeRuntime, settle } from "../helpers/fake-clock.ts";
import { copyStream, readAll } from "../helpers/session.ts";
import { FakeVirtioPort } from "../helpers/virtio-port.ts";

const PORT = "serial:/dev/virtio-ports/org.guestlink.0";
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/**
 * A guest agent on a fake virtio-serial port, and hosts that dial its chardev. With `latencyMs`
 * the port carries host bytes that long later, losing those in flight when the host hangs up.
 */
function vm({ latencyMs }: { latencyMs?: number } = {}) {
  const clock = new FakeClock();
  const port = new FakeVirtioPort(
    latencyMs === undefined
      ? {}
      : { hostToGuest: (deliver) => void clock.setTimer(latencyMs, deliver) },
  );
  const world = {
    clock,
    port,
    guests: [] as Session[],
    /** The connections the current agent's listener made. */
    connections: [] as Transport[],
    runs: new Map<string, number>(),
    /** What the "hold" method answers, once `release` is called. */
    held: (() => {
      let resolve!: (value: string) => void;
      const promise = new Promise<string>((r) => {
        resolve = r;
      });
      return { promise, resolve };
    })(),
    listener: undefined as unknown as SerialListener,
    registry: undefined as unknown as SessionRegistry,
    /** Starts (or restarts: a new process, new incarnation, no sessions) the guest agent. */
    startAgent() {
      // The old process is gone: its listener, its sessions, its port's descriptor.
      world.listener?.close();
      for (const connection of world.connections) connection.abort();
      world.connections = [];
      const listener = new SerialListener(PORT, port.open, undefined, (ms, fn) =>
        clock.setTimer(ms, fn),
      );
      world.listener = listener;
      const registry = new SessionRegistry(
        {
          role: "server",
          runtime: fakeRuntime(clock),
          keepalive: false,
          resume: { windowMs: 60_000 },
        },
        (session) => {
          world.guests.push(session);
          session.handle("echo", (params) => {
            const key = String(params);
            world.runs.set(key, (world.runs.get(key) ?? 0) + 1);
            return params;
          });
          session.handle("hold", () => world.held.promise);
          session.handle("pipe", async (_p, ctx) => {
            const input = ctx.streams.in as SessionStream;
            const output = ctx.streams.out as SessionStream;
            await copyStream(input, output);
            output.end();
            input.end();
            return "piped";
          });
        },
      );
      world.registry = registry;
      void (async () => {
        for await (const connection of listener) {
          world.connections.push(connection);
          registry.accept(connection);
        }
      })();
    },
    /** A host session dialling the port's socket. */
    dial(): Session {
      const client = new Session(port.connectHost(), {
        role: "client",
        runtime: fakeRuntime(clock),
        keepalive: false,
        resume: { windowMs: 60_000 },
      });
      client.onEvent((e) => world.events.push(e));
      return client;
    },
    events: [] as SessionEvent[],
  };
  world.startAgent();
  return world;
}

/** Awaits `promise` while moving the fake clock on (see `until`). */
async function drive<T>(clock: FakeClock, promise: Promise<T>): Promise<T> {
  let settled = false;
  const watched = promise.finally(() => {
    settled = true;
  });
  watched.catch(() => {});
  await until(clock, "a promise to settle", () => settled);
  return watched;
}

/** Moves the fake clock on, 10 ms at a time for up to a minute, until `ok()`. */
async function until(clock: FakeClock, what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 6_000 && !ok(); i++) await clock.advance(10);
  assert.ok(ok(), `not within a minute of protocol time: ${what}`);
}

describe("transport: serial (a guest's virtio-serial port)", () => {
  it("serves a host that connects after the agent opened the port, reopening while none is there", async () => {
    const w = vm();
    await until(w.clock, "the port to be reopened at least once", () => w.port.opens >= 2);
    const host = w.dial();
    await drive(w.clock, host.ready);
    assert.equal(await drive(w.clock, host.call("echo", "hi")), "hi");
    await drive(w.clock, host.close());
    w.listener.close();
  });

  it("takes a host's HELLO in mid-stream as a new connection, and resumes the session over it", async () => {
    const w = vm();
    const host = w.dial();
    await drive(w.clock, host.ready);
    assert.equal(await drive(w.clock, host.call("echo", "a")), "a");
    // The host's connection breaks and it dials again; the guest saw nothing but more bytes.
    const pending = Array.from({ length: 20 }, (_, i) => host.call("echo", `c${i}`));
    w.port.disconnectHost();
    await settle();
    host.reconnect(w.port.connectHost());
    assert.deepEqual(
      await drive(w.clock, Promise.all(pending)),
      pending.map((_, i) => `c${i}`),
    );
    for (let i = 0; i < 20; i++) assert.equal(w.runs.get(`c${i}`), 1, `c${i} ran once`);
    assert.equal(w.guests.length, 1, "the guest's one session took the new connection");
    assert.ok(w.events.some((e) => e.type === "resumed"));
    await drive(w.clock, host.close());
    w.listener.close();
  });

  it("carries a stream byte-exact through host cuts in the middle of it", async () => {
    const w = vm();
    const host = w.dial();
    await drive(w.clock, host.ready);
    const total = 2 * 1024 * 1024;
    const data = new Uint8Array(total);
    for (let i = 0; i < total; i++) data[i] = (i * 13 + (i >> 9)) % 251;
    const call = host.open("pipe", undefined, { streams: ["in", "out"] });
    const input = call.streams.in as SessionStream;
    const received = readAll(call.streams.out as SessionStream);
    let cuts = 0;
    for (let off = 0; off < total; off += 64 * 1024) {
      input.write(data.subarray(off, off + 64 * 1024));
      if (off % (512 * 1024) === 0 && off > 0) {
        await settle(3);
        w.port.disconnectHost();
        await settle(3);
        host.reconnect(w.port.connectHost());
        cuts++;
      }
      await settle(2);
    }
    input.end();
    assert.equal(await drive(w.clock, call.result), "piped");
    assert.equal(sha(await drive(w.clock, received)), sha(data));
    (call.streams.out as SessionStream).end();
    assert.ok(cuts >= 3);
    await drive(w.clock, host.close());
    w.listener.close();
  });

  it("gives a new host a clean handshake past the stale frames and answers an earlier host left", async () => {
    const w = vm();
    const first = w.dial();
    await drive(w.clock, first.ready);
    // The first host goes away without a word; the guest's answers to it wait in the port.
    const lost = first.call("echo", "for-nobody");
    w.port.disconnectHost();
    await settle();
    first.abort(new Error("gone"));
    await lost.catch(() => {});
    // A second host, with a session of its own, connects: the first frames it reads are stale.
    const second = w.dial();
    await drive(w.clock, second.ready);
    assert.equal(await drive(w.clock, second.call("echo", "fresh")), "fresh");
    await drive(w.clock, second.close());
    w.listener.close();
  });

  it("tells a host whose agent restarted to dial again: calls in flight fail RESUME_FAILED, new ones work", async () => {
    const w = vm();
    const host = w.dial();
    await drive(w.clock, host.ready);
    assert.equal(await drive(w.clock, host.call("echo", "before")), "before");
    w.port.disconnectHost();
    await settle();
    const inFlight = host.call("echo", "lost");
    // The agent restarts while no host is connected: a new process opens the port.
    w.startAgent();
    host.reconnect(w.port.connectHost());
    await assert.rejects(drive(w.clock, inFlight), (err) => isGuestlinkError(err, "RESUME_FAILED"));
    await until(w.clock, "the host to learn the agent restarted", () =>
      w.events.some((e) => e.type === "restarted"),
    );
    assert.equal(await drive(w.clock, host.call("echo", "after")), "after");
    await drive(w.clock, host.close());
    w.listener.close();
  });

  it("answers a host whose first HELLO was lost as the guest closed the port, on the repeat", async () => {
    const w = vm();
    let host: Session | undefined;
    // The host connects just as the guest's read finds no host: the guest closes the port (a read
    // after that is its only way to learn a host came), and what the host sent is discarded.
    w.port.onNoHost = async () => {
      w.port.onNoHost = undefined;
      host = w.dial();
      await settle();
    };
    await w.clock.advance(SERIAL_REOPEN_MS);
    assert.ok(host !== undefined, "a host connected in the window");
    await settle();
    assert.ok(w.port.discardedBytes > 0, "the host's first HELLO was discarded");
    assert.equal(w.guests.length, 0);
    await w.clock.advance(1_000);
    const ready = await drive(w.clock, (host as Session).ready);
    assert.equal(ready.services.includes("echo"), true);
    assert.equal(await drive(w.clock, (host as Session).call("echo", "through")), "through");
    await drive(w.clock, (host as Session).close());
    w.listener.close();
  });

  it("recovers when the agent restarts under a live host connection", async () => {
    const w = vm();
    const host = w.dial();
    await drive(w.clock, host.ready);
    assert.equal(await drive(w.clock, host.call("echo", "before")), "before");
    // Redial whenever the connection is lost, as the CLI and the supervisor do.
    host.onEvent((e) => {
      if (e.type !== "disconnected") return;
      void (async () => {
        while (w.port.hostConnected) await settle(1);
        host.reconnect(w.port.connectHost());
      })();
    });
    // A new agent process opens the port; the host's connection to the chardev never broke.
    w.startAgent();
    const inFlight = host.call("echo", "lost");
    const outcome = inFlight.then(
      () => "answered",
      (err) => (isGuestlinkError(err, "RESUME_FAILED") ? "RESUME_FAILED" : String(err)),
    );
    let result: string | undefined;
    void outcome.then((r) => {
      result = r;
    });
    // The new agent asks the host to dial again; the host's HELLOs repeat until one is taken.
    await until(w.clock, "the call in flight to be settled", () => result !== undefined);
    assert.equal(result, "RESUME_FAILED");
    assert.ok(w.events.some((e) => e.type === "restarted"));
    const timedOut = w.events.filter(
      (e) => e.type === "disconnected" && e.error.code === "HANDSHAKE_TIMEOUT",
    );
    assert.deepEqual(timedOut, [], "no redial waited out a handshake timeout");
    assert.equal(await drive(w.clock, host.call("echo", "after")), "after");
    assert.equal(w.runs.get("after"), 1);
    await drive(w.clock, host.close());
    w.listener.close();
  });

  it("stops taking connections on close, but lets a running call's result reach the host", async () => {
    const w = vm();
    const host = w.dial();
    await drive(w.clock, host.ready);
    const running = host.call("hold", undefined, { deadline: Infinity });
    await settle();
    // The agent is told to stop (SIGTERM): its listener closes, its sessions close gracefully.
    await w.listener.close();
    const guestClosed = (w.guests[0] as Session).close();
    await settle();
    assert.ok(w.port.guestOpen, "the port stays open while the session finishes");
    w.held.resolve("done");
    assert.equal(await drive(w.clock, running), "done");
    await drive(w.clock, guestClosed);
    await drive(w.clock, host.closed);
    await w.clock.advance(5_000);
    assert.ok(!w.port.guestOpen, "and is closed for good after");
    assert.equal(w.port.opens, 1, "not reopened");
  });

  it("a host that closes waits for the guest's ACK of its GOAWAY, so the guest's session ends too", async () => {
    const w = vm({ latencyMs: 5 });
    const host = w.dial();
    await drive(w.clock, host.ready);
    assert.equal(await drive(w.clock, host.call("echo", "x")), "x");
    await drive(w.clock, host.close());
    const guest = w.guests[0] as Session;
    // Had the host hung up at once, its GOAWAY would have been lost in the port, and the guest
    // would hold the session open until keepalive (off here) gave up on it.
    assert.equal(await drive(w.clock, guest.closed), undefined);
    w.listener.close();
  });

  it("a guest that closes first has the host's session end cleanly too", async () => {
    const w = vm({ latencyMs: 5 });
    const host = w.dial();
    await drive(w.clock, host.ready);
    const guest = w.guests[0] as Session;
    await drive(w.clock, guest.close());
    assert.equal(await drive(w.clock, host.closed), undefined);
    assert.equal(host.state, "closed");
    w.listener.close();
  });

  it("a host's last frames reach the guest before it hangs up, so a stopping guest's session ends cleanly", async () => {
    const w = vm({ latencyMs: 5 });
    const host = w.dial();
    await drive(w.clock, host.ready);
    const call = host.open("pipe", undefined, { streams: ["in", "out"] });
    const input = call.streams.in as SessionStream;
    const output = call.streams.out as SessionStream;
    const received = readAll(output);
    await drive(w.clock, settle());
    // The agent is told to stop: its session finishes its work, then closes.
    const guest = w.guests[0] as Session;
    const guestClosed = guest.close();
    input.write(new Uint8Array([1, 2, 3]));
    input.end();
    assert.equal(await drive(w.clock, call.result), "piped");
    assert.deepEqual([...(await drive(w.clock, received))], [1, 2, 3]);
    // The host's END on the stream and its GOAWAY are the last it sends before it hangs up.
    output.end();
    await drive(w.clock, host.close());
    await drive(w.clock, guestClosed);
    assert.equal(await guest.closed, undefined);
    w.listener.close();
  });

  it("an agent stopped while no host is there closes the port for good", async () => {
    const w = vm();
    await until(w.clock, "the port to be reopened at least once", () => w.port.opens >= 2);
    // What serveSessions.close() does: the listener closes, and the session still waiting for
    // a host's HELLO on the port's connection is ended, so the port can be let go.
    await w.listener.close();
    w.registry.abortWaiting(new Error("the server is shutting down"));
    await w.clock.advance(5_000);
    const opens = w.port.opens;
    await w.clock.advance(5_000);
    assert.equal(w.port.opens, opens, "not reopened after close");
    assert.ok(!w.port.guestOpen, "the port is closed");
  });

  it("refuses a second reader, and explains a missing port", async () => {
    const w = vm();
    assert.throws(() => w.port.open(), /EBUSY/);
    w.listener.close();
    const dir = mkdtempSync(join(tmpdir(), "gl-serial-"));
    await assert.rejects(listen(`serial:${join(dir, "org.guestlink.0")}`), (err: unknown) => {
      assert.ok(isGuestlinkError(err));
      assert.equal(err.code, "LISTEN_FAILED");
      assert.match(err.message, /no port at .*ENOENT.*virtserialport/);
      return true;
    });
  });

  it("cannot be connected to: the host reaches the port through the hypervisor's socket", async () => {
    await assert.rejects(connect(PORT), (err: unknown) => {
      assert.ok(isGuestlinkError(err));
      assert.equal(err.code, "INVALID_ADDRESS");
      assert.match(err.message, /agent --listen serial:.*unix:PATH/);
      return true;
    });
  });
});

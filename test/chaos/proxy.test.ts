import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseAddress } from "../../src/transport/address.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../../src/wire/frame.ts";
import { type HeaderFields, HeaderVerdict, readHeader } from "../../src/wire/header.ts";
import { SEED } from "../helpers/seed.ts";
import { pattern, sha256 } from "../helpers/transport.ts";
import {
  type ChaosEndpoint,
  type ChaosFault,
  type ChaosProxyOptions,
  startChaosProxy,
} from "./proxy.ts";

const MiB = 1024 * 1024;
const replay = `replay with GUESTLINK_SEED=${SEED}`;

let dir = "";
let nextName = 0;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-chaos-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});
const socketPath = () => join(dir, `s${nextName++}.sock`);

/** Everything a socket receives, with a way to await a byte count and its close. */
class Receiver {
  readonly chunks: Buffer[] = [];
  length = 0;
  ended = false;
  readonly closed: Promise<void>;
  /** Resolves when the peer's end arrives. */
  readonly endSeen: Promise<void>;
  /** Resolves when the connection is over for this side: an end, an error or a close. */
  readonly gone: Promise<void>;
  private waiters: { bytes: number; resolve: () => void; reject: (err: Error) => void }[] = [];

  constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.waiters = this.waiters.filter((w) => {
        if (this.length < w.bytes) return true;
        w.resolve();
        return false;
      });
    });
    this.endSeen = new Promise((resolve) => {
      socket.once("end", () => {
        this.ended = true;
        resolve();
      });
    });
    socket.on("error", () => {});
    this.gone = new Promise((resolve) => {
      for (const event of ["end", "error", "close"]) socket.once(event, () => resolve());
    });
    this.closed = new Promise((resolve) => {
      socket.once("close", () => {
        for (const w of this.waiters) {
          w.reject(new Error(`closed after ${this.length} of ${w.bytes} bytes (${replay})`));
        }
        resolve();
      });
    });
  }

  until(bytes: number): Promise<void> {
    if (this.length >= bytes) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ bytes, resolve, reject }));
  }

  data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** Writes `data` honouring backpressure, then ends; stops quietly if the socket dies. */
async function send(
  socket: net.Socket,
  data: Uint8Array,
  end = true,
  onBlocked?: () => void,
  chunkBytes = 64 * 1024,
): Promise<void> {
  const CHUNK = chunkBytes;
  for (let at = 0; at < data.length && !socket.destroyed; at += CHUNK) {
    if (!socket.write(data.subarray(at, at + CHUNK))) {
      onBlocked?.();
      await new Promise<void>((resolve) => {
        const done = () => {
          socket.off("drain", done);
          socket.off("close", done);
          resolve();
        };
        socket.on("drain", done);
        socket.on("close", done);
      });
    }
  }
  if (end && !socket.destroyed) socket.end();
}

/** A target server; `accepted()` gives its connections in order. */
async function startTarget(listen: { path: string } | { port: 0 }) {
  const sockets: net.Socket[] = [];
  const pending: ((s: net.Socket) => void)[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const take = pending.shift();
    if (take) take(socket);
    else sockets.push(socket);
  });
  await new Promise<void>((resolve) => {
    if ("path" in listen) server.listen(listen.path, resolve);
    else server.listen(0, "127.0.0.1", resolve);
  });
  const endpoint: ChaosEndpoint =
    "path" in listen
      ? { path: listen.path }
      : { host: "127.0.0.1", port: (server.address() as net.AddressInfo).port };
  return {
    endpoint,
    accepted: (): Promise<net.Socket> => {
      const ready = sockets.shift();
      return ready ? Promise.resolve(ready) : new Promise((resolve) => pending.push(resolve));
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function connect(address: string): net.Socket {
  const a = parseAddress(address);
  if (a.kind === "unix") return net.createConnection({ path: a.path, allowHalfOpen: true });
  if (a.kind === "tcp") {
    return net.createConnection({ host: a.host, port: a.port, allowHalfOpen: true });
  }
  throw new Error(`unexpected proxy address ${address}`);
}

/** The faults a proxy reported, with a way to await one. */
class FaultLog {
  readonly all: ChaosFault[] = [];
  private waiters: { match: (f: ChaosFault) => boolean; resolve: (f: ChaosFault) => void }[] = [];

  readonly push = (fault: ChaosFault): void => {
    this.all.push(fault);
    this.waiters = this.waiters.filter((w) => {
      if (!w.match(fault)) return true;
      w.resolve(fault);
      return false;
    });
  };

  next(match: (f: ChaosFault) => boolean): Promise<ChaosFault> {
    const seen = this.all.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }
}

/** A target, a proxy in front of it and a client through it, all wired up. */
async function rig(
  kind: "unix" | "tcp",
  options: Omit<ChaosProxyOptions, "listen" | "target" | "seed" | "onFault"> & { seed?: number },
) {
  const target = await startTarget(kind === "unix" ? { path: socketPath() } : { port: 0 });
  const log = new FaultLog();
  const proxy = await startChaosProxy({
    seed: SEED,
    ...options,
    listen: kind === "unix" ? { path: socketPath() } : { port: 0 },
    target: target.endpoint,
    onFault: log.push,
  });
  const sockets: net.Socket[] = [];
  const open = async () => {
    const client = new Receiver(connect(proxy.address));
    const server = new Receiver(await target.accepted());
    sockets.push(client.socket, server.socket);
    return { client, server };
  };
  const close = async () => {
    await proxy.close();
    // Half-open endpoints would keep the target server from closing.
    for (const socket of sockets) socket.destroy();
    await target.close();
  };
  return { proxy, target, log, open, close };
}

function garbageOf(log: FaultLog, direction: string) {
  return log.all.filter(
    (f): f is Extract<ChaosFault, { kind: "garbage" }> =>
      f.kind === "garbage" && f.direction === direction,
  );
}

/** Removes the recorded bursts from what the receiver saw, checking each is where it was said to be. */
function stripBursts(received: Buffer, bursts: Extract<ChaosFault, { kind: "garbage" }>[]): Buffer {
  const kept: Buffer[] = [];
  let at = 0;
  for (const burst of bursts) {
    assert.ok(burst.outByte >= at, `bursts out of order (${replay})`);
    kept.push(received.subarray(at, burst.outByte));
    const seen = received.subarray(burst.outByte, burst.outByte + burst.bytes.length);
    assert.deepEqual(new Uint8Array(seen), burst.bytes, `burst at ${burst.outByte} (${replay})`);
    at = burst.outByte + burst.bytes.length;
  }
  kept.push(received.subarray(at));
  return Buffer.concat(kept);
}

/** A fault log without the parts that depend on timing, for comparing runs. */
function schedule(log: FaultLog) {
  return log.all
    .filter((f) => f.kind !== "freeze")
    .map((f) => ({ ...f, bytes: "bytes" in f ? Buffer.from(f.bytes).toString("hex") : "" }));
}

describe("chaos proxy", () => {
  for (const kind of ["unix", "tcp"] as const) {
    it(`forwards 20 MiB each way byte-exact over ${kind} when no faults are set`, async () => {
      const r = await rig(kind, {});
      assert.match(r.proxy.address, kind === "unix" ? /^unix:\// : /^tcp:127\.0\.0\.1:\d+$/);
      const { client, server } = await r.open();
      const up = pattern(20 * MiB, 1);
      const down = pattern(20 * MiB, 2);
      await Promise.all([send(client.socket, up), send(server.socket, down)]);
      await Promise.all([client.closed, server.closed]);
      assert.ok(client.ended && server.ended, "each side saw the other's end");
      assert.equal(sha256(server.data()), sha256(up));
      assert.equal(sha256(client.data()), sha256(down));
      const stats = r.proxy.stats;
      assert.deepEqual(stats.bytesForwarded, { toTarget: 20 * MiB, toClient: 20 * MiB });
      assert.equal(stats.connections, 1);
      assert.equal(stats.cuts + stats.garbageBursts + stats.stalls, 0);
      assert.deepEqual(r.log.all, []);
      await r.close();
    });
  }

  it("inserts garbage bursts where it says, only in the faulted direction", async () => {
    const r = await rig("unix", {
      faults: { garbageEveryBytes: 32 * 1024 },
      direction: "to-target",
    });
    const { client, server } = await r.open();
    const up = pattern(2 * MiB, 3);
    const down = pattern(MiB, 4);
    await Promise.all([send(client.socket, up), send(server.socket, down)]);
    await Promise.all([client.closed, server.closed]);
    const bursts = garbageOf(r.log, "to-target");
    assert.ok(bursts.length > 16, `${bursts.length} bursts in 2 MiB (${replay})`);
    assert.deepEqual(garbageOf(r.log, "to-client"), []);
    const stats = r.proxy.stats;
    assert.equal(stats.garbageBursts, bursts.length);
    const burstBytes = bursts.reduce((n, b) => n + b.bytes.length, 0);
    assert.equal(stats.garbageBytes, burstBytes);
    assert.equal(server.length, up.length + burstBytes);
    assert.equal(sha256(stripBursts(server.data(), bursts)), sha256(up), replay);
    assert.equal(sha256(client.data()), sha256(down), replay);
    await r.close();
  });

  it("makes huge-length bursts whose header checksum passes and whose length is refused", async () => {
    const r = await rig("tcp", { faults: { garbageEveryBytes: 4096, garbage: ["huge-length"] } });
    const { client, server } = await r.open();
    await send(client.socket, pattern(64 * 1024, 5));
    await send(server.socket, new Uint8Array(0));
    await Promise.all([client.closed, server.closed]);
    const bursts = garbageOf(r.log, "to-target");
    assert.ok(bursts.length > 0);
    const fields: HeaderFields = {
      type: 0,
      flags: 0,
      streamId: 0,
      seq: 0,
      length: 0,
      payloadCrc: 0,
    };
    for (const burst of bursts) {
      assert.equal(burst.bytes.length, 32);
      assert.equal(
        readHeader(burst.bytes, 0, DEFAULT_MAX_FRAME_BYTES, fields),
        HeaderVerdict.OVERSIZE,
      );
      assert.equal(readHeader(burst.bytes, 0, 0xffffffff, fields), HeaderVerdict.OK);
      assert.equal(fields.length, 0xfffffff0);
    }
    await r.close();
  });

  it("respects backpressure: a target that does not read stalls the client, not the proxy's memory", async () => {
    const r = await rig("unix", {});
    const { client, server } = await r.open();
    server.socket.pause();
    const up = pattern(32 * MiB, 13);
    // Writes of 8 KiB return false only once the kernel refuses more, that is once the proxy
    // stopped reading because the target stopped reading.
    let blocked = 0;
    let unblock: () => void = () => {};
    const stuck = new Promise<void>((resolve) => {
      unblock = resolve;
    });
    const sending = send(
      client.socket,
      up,
      true,
      () => {
        if (++blocked === 1) unblock();
      },
      8 * 1024,
    );
    await stuck;
    assert.ok(r.proxy.stats.bytesForwarded.toTarget < 4 * MiB, "the proxy stopped reading");
    server.socket.resume();
    await sending;
    await server.until(up.length);
    assert.equal(sha256(server.data()), sha256(up));
    assert.ok(r.proxy.stats.peakQueuedBytes <= 256 * 1024, `peak ${r.proxy.stats.peakQueuedBytes}`);
    await r.close();
  });

  it("closes the client when the target cannot be reached", async () => {
    const target = socketPath();
    const proxy = await startChaosProxy({
      listen: { path: socketPath() },
      target: { path: target },
      seed: SEED,
    });
    const client = new Receiver(connect(proxy.address));
    await client.gone;
    assert.equal(proxy.stats.targetConnectFailures, 1);
    client.socket.destroy();
    await proxy.close();
  });

  it("cuts a connection near cutEveryBytes and both ends see the close; a new one then works", async () => {
    const r = await rig("tcp", { faults: { cutEveryBytes: 100_000 }, direction: "to-target" });
    const { client, server } = await r.open();
    const up = pattern(MiB, 6);
    void send(client.socket, up, false);
    await Promise.all([client.gone, server.gone]);
    const cut = await r.log.next((f) => f.kind === "cut");
    assert.equal(cut.kind === "cut" && cut.cause, "schedule");
    assert.ok(cut.atByte >= 50_000 && cut.atByte <= 150_000, `cut at ${cut.atByte} (${replay})`);
    assert.ok(server.length <= cut.atByte, "nothing forwarded past the cut");
    assert.ok(server.data().equals(up.subarray(0, server.length)), "what arrived is a prefix");
    assert.equal(r.proxy.stats.cuts, 1);

    const again = await r.open();
    again.client.socket.write("after the cut");
    await again.server.until(13);
    assert.equal(again.server.data().toString(), "after the cut");
    assert.equal(r.proxy.stats.connections, 2);
    await r.close();
  });

  it("cutAll cuts every live connection at once", async () => {
    const r = await rig("unix", {});
    const { client, server } = await r.open();
    client.socket.write("hello");
    await server.until(5);
    assert.equal(r.proxy.cutAll(), 1);
    await Promise.all([client.gone, server.gone]);
    assert.equal(r.proxy.stats.cuts, 1);
    assert.deepEqual(r.log.all, [
      { kind: "cut", cause: "cutAll", connection: 0, direction: "both", atByte: 5 },
    ]);
    assert.equal(r.proxy.cutAll(), 0);
    await r.close();
  });

  it("splits writes into pieces of at most splitWrites bytes", async () => {
    const r = await rig("tcp", { faults: { splitWrites: 7 } });
    const { client, server } = await r.open();
    const up = pattern(10_000, 7);
    await send(client.socket, up);
    await send(server.socket, Buffer.from("ok"));
    await Promise.all([client.closed, server.closed]);
    assert.ok(server.data().equals(up));
    assert.equal(client.data().toString(), "ok");
    const writes = r.proxy.stats.writes;
    assert.ok(writes.toTarget >= Math.ceil(10_000 / 7), `${writes.toTarget} writes`);
    assert.equal(writes.toClient, 1);
    assert.ok(server.chunks.length > 1, "the receiver saw more than one piece");
    await r.close();
  });

  it("truncates: forwards only truncateAfterBytes, swallows the rest, keeps the connection", async () => {
    const r = await rig("unix", { faults: { truncateAfterBytes: 10_000 }, direction: "to-target" });
    const { client, server } = await r.open();
    await send(client.socket, pattern(100_000, 8));
    await server.until(10_000);
    const swallowed = await r.log.next((f) => f.kind === "swallow-end");
    assert.equal(swallowed.kind === "swallow-end" && swallowed.droppedBytes, 90_000);
    // The other direction still works, so the connection was kept.
    server.socket.end("still open");
    await client.endSeen;
    assert.equal(client.data().toString(), "still open");
    assert.equal(server.length, 10_000);
    assert.equal(server.ended, false);
    const stats = r.proxy.stats;
    assert.equal(stats.truncations, 1);
    assert.equal(stats.bytesDropped.toTarget, 90_000);
    assert.equal(stats.open, 1);
    await r.close();
    await Promise.all([client.closed, server.closed]);
  });

  it("freeze holds every byte until thaw", async () => {
    const r = await rig("tcp", {});
    const { client, server } = await r.open();
    r.proxy.freeze();
    const up = pattern(256 * 1024, 9);
    void send(client.socket, up, false);
    await r.log.next((f) => f.kind === "freeze" && f.direction === "to-target");
    assert.equal(server.length, 0);
    r.proxy.thaw();
    await server.until(up.length);
    assert.ok(server.data().equals(up));
    await r.close();
  });

  it("delays chunks without reordering them", async () => {
    const r = await rig("unix", { faults: { delayMs: 2 } });
    const { client, server } = await r.open();
    const up = pattern(512 * 1024, 10);
    await Promise.all([send(client.socket, up), send(server.socket, new Uint8Array(0))]);
    await Promise.all([client.closed, server.closed]);
    assert.ok(server.data().equals(up));
    assert.ok(r.proxy.stats.delays > 0);
    await r.close();
  });

  it("gives the same fault schedule for the same seed and input, another for another seed", async () => {
    const faults = {
      garbageEveryBytes: 16 * 1024,
      stallEveryBytes: 64 * 1024,
      stallMs: 1,
      cutEveryBytes: 400 * 1024,
    };
    const run = async (seed: number) => {
      const r = await rig("tcp", { seed, faults });
      const { client, server } = await r.open();
      void send(client.socket, pattern(MiB, 11), false);
      await Promise.all([client.gone, server.gone]);
      await r.close();
      return schedule(r.log);
    };
    const first = await run(SEED);
    const second = await run(SEED);
    assert.ok(first.some((f) => f.kind === "cut") && first.some((f) => f.kind === "stall"));
    assert.deepEqual(second, first, replay);
    assert.notDeepEqual(await run(SEED + 1), first, replay);
  });

  it("close during a long stall destroys both sides and returns", async () => {
    const r = await rig("unix", { faults: { stallEveryBytes: 1000, stallMs: 3_600_000 } });
    const { client, server } = await r.open();
    void send(client.socket, pattern(64 * 1024, 12), false);
    await r.log.next((f) => f.kind === "stall");
    await r.close();
    await Promise.all([client.gone, server.gone]);
    assert.equal(r.proxy.stats.open, 0);
  });

  it("names the seed in every error it throws", async () => {
    const taken = await startChaosProxy({ listen: { port: 0 }, target: { port: 9 }, seed: 4242 });
    const port = Number(taken.address.split(":").at(-1));
    await assert.rejects(
      startChaosProxy({ listen: { port }, target: { port: 9 }, seed: 4242 }),
      /seed 4242.*cannot listen on tcp:127\.0\.0\.1/,
    );
    await taken.close();
    await assert.rejects(
      startChaosProxy({
        listen: { port: 0 },
        target: { port: 9 },
        seed: 77,
        faults: { splitWrites: 0 },
      }),
      /seed 77.*splitWrites/,
    );
  });
});

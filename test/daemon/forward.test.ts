/**
 * The daemon's call forwarder (src/daemon/forward.ts) between two in-memory session pairs: a
 * client, the daemon's two sides, and an agent. The agent's result can arrive while the daemon
 * still holds stream bytes for a client that reads slowly; every byte must still reach the
 * client, before the result.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { forwardCalls } from "../../src/daemon/forward.ts";
import { toDuplex } from "../../src/platform/duplex.ts";
import { openSession, serveSessions, sessionOptions } from "../../src/platform/session.ts";
import { Session } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { slabsAllocated } from "../../src/transport/slab-reads.ts";
import { settle } from "../helpers/fake-clock.ts";

function pair(): { client: Session; server: Session } {
  const [a, b] = memoryPair();
  return {
    client: new Session(a, sessionOptions("client", { resume: false })),
    server: new Session(b, sessionOptions("server", { resume: false })),
  };
}

/** Writes `bytes` bytes on stream "out" with backpressure, then returns the count. */
async function produce(out: SessionStream, bytes: number): Promise<number> {
  const duplex = toDuplex(out);
  const block = Buffer.alloc(64 * 1024, 7);
  for (let sent = 0; sent < bytes; sent += block.length) {
    const chunk = block.subarray(0, Math.min(block.length, bytes - sent));
    if (!duplex.write(chunk)) await new Promise((resolve) => duplex.once("drain", resolve));
  }
  await new Promise<void>((resolve) => duplex.end(resolve));
  return bytes;
}

describe("forwardCalls", () => {
  it("delivers every byte of a stream to a slow client before the agent's result", async () => {
    const agentPair = pair();
    const clientPair = pair();
    agentPair.server.handle("produce", (params, ctx) =>
      produce(ctx.streams.out as SessionStream, (params as { bytes: number }).bytes),
    );
    forwardCalls(clientPair.server, () => agentPair.client, "vm-1");
    await Promise.all([agentPair.client.ready, clientPair.client.ready]);

    const bytes = 4 * 1024 * 1024;
    const call = clientPair.client.open("produce", { bytes }, { streams: ["out"] });
    let received = 0;
    const reading = (async () => {
      for await (const chunk of toDuplex(call.streams.out as SessionStream)) {
        received += (chunk as Buffer).length;
        // A slow reader: the daemon holds what it cannot pass on yet.
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const result = await call.result;
    assert.equal(result, bytes);
    assert.equal(received > 0, true);
    await reading;
    assert.equal(received, bytes);

    await Promise.all([clientPair.client.close(), agentPair.client.close()]);
  });

  it("a client that stops reading stops the agent's writer within a few windows, and loses nothing", async () => {
    const agentPair = pair();
    const clientPair = pair();
    let produced = 0;
    agentPair.server.handle("produce", async (params, ctx) => {
      const out = ctx.streams.out as SessionStream;
      const block = Buffer.alloc(64 * 1024, 7);
      const bytes = (params as { bytes: number }).bytes;
      while (produced < bytes) {
        produced += block.length;
        if (!out.write(block)) await new Promise<void>((resolve) => (out.onDrain = resolve));
      }
      out.end();
      return bytes;
    });
    forwardCalls(clientPair.server, () => agentPair.client, "vm-1");
    await Promise.all([agentPair.client.ready, clientPair.client.ready]);

    const bytes = 64 * 1024 * 1024;
    const call = clientPair.client.open("produce", { bytes }, { streams: ["out"] });
    // Nobody reads: the agent's writer stops once the windows on the way are full (the client's
    // stream window, the daemon's queue toward it, the agent's window and its own queue).
    await settle(200);
    const stalledAt = produced;
    await settle(200);
    assert.equal(produced, stalledAt, "the writer is stopped");
    assert.ok(produced <= 8 * 1024 * 1024, `${produced} bytes made while nobody read`);
    let received = 0;
    for await (const chunk of toDuplex(call.streams.out as SessionStream)) {
      received += (chunk as Buffer).length;
    }
    assert.equal(await call.result, bytes);
    assert.equal(received, bytes);
    await Promise.all([clientPair.client.close(), agentPair.client.close()]);
  });

  it("passes an agent's output on byte-exact through a few read buffers, used again once the client has it", async () => {
    // Real Unix sockets on both sides, as in the daemon: its side of the agent's connection
    // reads into slabs (slab-reads.ts), and the client's bytes are copies of its own.
    const dir = await mkdtemp(join(tmpdir(), "guestlink-forward-"));
    const data = randomBytes(48 * 1024 * 1024);
    const agentServer = await serveSessions(`unix:${join(dir, "agent.sock")}`, (s) => {
      s.handle("produce", async (_params, ctx) => {
        const out = ctx.streams.out as SessionStream;
        for (let at = 0; at < data.length; at += 64 * 1024) {
          if (!out.write(data.subarray(at, at + 64 * 1024))) {
            await new Promise<void>((resolve) => (out.onDrain = resolve));
          }
        }
        out.end();
        return data.length;
      });
    });
    const agent = await openSession(agentServer.address);
    const daemon = await serveSessions(`unix:${join(dir, "daemon.sock")}`, (s) =>
      forwardCalls(s, () => agent, "vm-1"),
    );
    const client = await openSession(daemon.address);
    try {
      const before = slabsAllocated();
      const call = client.open("produce", {}, { streams: ["out"] });
      const chunks: Buffer[] = [];
      for await (const chunk of toDuplex(call.streams.out as SessionStream)) {
        chunks.push(chunk as Buffer);
      }
      assert.equal(await call.result, data.length);
      const got = Buffer.concat(chunks);
      assert.equal(got.length, data.length);
      assert.ok(got.equals(data), "the bytes arrived as the agent wrote them");
      // 48 MiB through the daemon's slabs of 1 MiB (and as many into the client's, which keeps
      // what it reads and so never gives one back): the daemon's are read into again.
      const allocated = slabsAllocated() - before;
      assert.ok(allocated <= 48 + 12, `${allocated} slabs of 1 MiB for 48 MiB through two reads`);
    } finally {
      await Promise.all([client.close(), agent.close()]);
      await Promise.all([daemon.close(), agentServer.close()]);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a client resetting its stream resets the agent's, and the other way round, with the reason", async () => {
    const agentPair = pair();
    const clientPair = pair();
    const agentSaw: string[] = [];
    agentPair.server.handle("echo", async (_params, ctx) => {
      const io = ctx.streams.io as SessionStream;
      await new Promise<void>((resolve) => {
        io.attach({
          data: (chunk) => {
            io.consumed(chunk.length);
            if (Buffer.from(chunk).toString() === "reset me") io.reset("BUSY", "the agent gave up");
          },
          end: () => resolve(),
          error: (err) => {
            agentSaw.push(`${err.code} ${String(err.details?.code)}`);
            resolve();
          },
        });
      });
      return "done";
    });
    forwardCalls(clientPair.server, () => agentPair.client, "vm-1");
    await Promise.all([agentPair.client.ready, clientPair.client.ready]);

    // The client resets: the agent's stream is reset with the client's code.
    const first = clientPair.client.open("echo", {}, { streams: ["io"] });
    (first.streams.io as SessionStream).reset("CANCELLED", "the client went away");
    await first.result.catch(() => {});
    await settle(50);
    assert.deepEqual(agentSaw, ["STREAM_RESET CANCELLED"]);

    // The agent resets: the client's stream fails with STREAM_RESET and the agent's code.
    const second = clientPair.client.open("echo", {}, { streams: ["io"] });
    const io = second.streams.io as SessionStream;
    const failed = new Promise<string>((resolve) =>
      io.attach({
        data: (chunk) => io.consumed(chunk.length),
        end: () => resolve("ended"),
        error: (err) => resolve(`${err.code} ${String(err.details?.code)}`),
      }),
    );
    io.write(Buffer.from("reset me"));
    assert.equal(await failed, "STREAM_RESET BUSY");
    await second.result.catch(() => {});
    await Promise.all([clientPair.client.close(), agentPair.client.close()]);
  });
});

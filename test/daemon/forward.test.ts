/**
 * The daemon's call forwarder (src/daemon/forward.ts) between two in-memory session pairs: a
 * client, the daemon's two sides, and an agent. The agent's result can arrive while the daemon
 * still holds stream bytes for a client that reads slowly; every byte must still reach the
 * client, before the result.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { forwardCalls } from "../../src/daemon/forward.ts";
import { toDuplex } from "../../src/platform/duplex.ts";
import { sessionOptions } from "../../src/platform/session.ts";
import { Session } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { memoryPair } from "../../src/transport/memory.ts";

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
});

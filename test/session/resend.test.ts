/**
 * Sending again on the live connection, between two real sessions over an in-memory pair whose
 * one direction inserts junk into what it carries: the output arrives byte-exact, only the
 * damaged frames are sent again, and the connection is never dropped.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { Session } from "../../src/session/session.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { FakeClock, fakeRuntime, settle } from "../helpers/fake-clock.ts";
import { readAll } from "../helpers/session.ts";
import { junkInserting } from "../helpers/transport.ts";

describe("sending again on the live connection", () => {
  it("a stream through a pipe that inserts junk arrives byte-exact, with just the damaged frames sent again", async () => {
    const clock = new FakeClock();
    const [a, b] = memoryPair({ highWaterMark: 1024 * 1024 });
    const damaging = junkInserting(b, 7);
    const peer = { hostname: "h", version: "test" };
    const client = new Session(a, {
      role: "client",
      runtime: fakeRuntime(clock),
      keepalive: false,
      peer: { id: "host", ...peer },
    });
    const server = new Session(damaging, {
      role: "server",
      runtime: fakeRuntime(clock),
      keepalive: false,
      peer: { id: "agent", ...peer },
    });
    const data = Buffer.from(Array.from({ length: 4 * 1024 * 1024 }, (_, i) => (i * 31) % 251));
    server.handle("produce", async (_params, ctx) => {
      const out = ctx.streams.out as NonNullable<(typeof ctx.streams)["out"]>;
      for (let at = 0; at < data.length; at += 16 * 1024) {
        if (!out.write(data.subarray(at, at + 16 * 1024))) {
          await new Promise<void>((resolve) => (out.onDrain = resolve));
        }
      }
      return data.length;
    });
    const call = client.open("produce", {}, { streams: ["out"] });
    const readingDone = readAll(call.streams.out as NonNullable<(typeof call.streams)["out"]>);
    // Resend waits run on the fake clock: move it along until the call is done.
    let done = false;
    void call.result.finally(() => (done = true));
    for (let i = 0; i < 200 && !done; i++) await clock.advance(50);
    const got = await readingDone;
    assert.equal(await call.result, data.length);
    const sha = (x: Uint8Array) => createHash("sha256").update(x).digest("hex");
    assert.equal(sha(got), sha(data));
    await settle();
    assert.ok(damaging.bursts > 10, `${damaging.bursts} bursts`);
    assert.equal(client.wireStats.badPayloads, damaging.bursts);
    // Each damaged frame was sent again, and nothing else was.
    assert.equal(server.stats.framesResent, damaging.bursts);
    assert.equal(client.connection === undefined, false, "the connection was never dropped");
    assert.equal(client.state, "open");
    // The counters stay as they were once the session is over.
    const before = { ...client.wireStats };
    call.streams.out?.end();
    void client.close();
    await clock.advance(5_000);
    assert.equal(client.state, "closed");
    assert.deepEqual(client.wireStats, before);
  });
});

/**
 * Stream bytes handed back to the buffer they came from (session/recycle.ts), between two real
 * sessions over an in-memory pair: every byte once, when the peer has acknowledged it or once it
 * was copied, a frame sent again after damage too (it went again as a copy).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { copyOf, discard, type Recycler, recycleFrom } from "../../src/recycle.ts";
import { Outbox } from "../../src/session/outbox.ts";
import { Session } from "../../src/session/session.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { FrameEncoder } from "../../src/wire/encode.ts";
import { FrameType } from "../../src/wire/frame.ts";
import { FakeClock, fakeRuntime, settle } from "../helpers/fake-clock.ts";
import { readAll } from "../helpers/session.ts";
import { junkInserting } from "../helpers/transport.ts";

const MiB = 1024 * 1024;

/** A recycler over one buffer that counts, for each of its bytes, how often it came back. */
function counting(bytes: number) {
  // A buffer of its own (Buffer.from would take small ones from Node's shared pool).
  const buffer = Buffer.from(new Uint8Array(bytes).map((_, i) => (i * 31) % 251).buffer);
  const times = new Uint8Array(bytes);
  const recycler: Recycler = {
    // The memory pair passes them on uncopied; whether to reuse is the owner's business.
    share() {},
    release(view) {
      assert.equal(view.buffer, buffer.buffer, "only views of the registered buffer come back");
      for (let i = view.byteOffset; i < view.byteOffset + view.length; i++) {
        times[i] = (times[i] ?? 0) + 1;
      }
    },
  };
  recycleFrom(buffer.buffer, recycler);
  const back = () => times.reduce((n, t) => n + (t > 0 ? 1 : 0), 0);
  const twice = () => times.some((t) => t > 1);
  /** Bytes that did not come back, if they are all at the end (else -1). */
  const tailMissing = () => {
    const first = times.indexOf(0);
    if (first < 0) return 0;
    return times.subarray(first).every((t) => t === 0) ? bytes - first : -1;
  };
  return { buffer, back, twice, tailMissing };
}

/** Streams `writes` from the server to the client, one write each; both sessions closed. */
async function stream(writes: Uint8Array[], damageEvery?: number) {
  const data = Buffer.concat(writes);
  const clock = new FakeClock();
  const [a, b] = memoryPair({ highWaterMark: MiB });
  const damaging = damageEvery === undefined ? undefined : junkInserting(b, damageEvery);
  const serverSide = damaging ?? b;
  const peer = { hostname: "h", version: "test" };
  const options = { runtime: fakeRuntime(clock), keepalive: false as const };
  const client = new Session(a, { ...options, role: "client", peer: { id: "host", ...peer } });
  const server = new Session(serverSide, {
    ...options,
    role: "server",
    peer: { id: "agent", ...peer },
  });
  server.handle("produce", async (_params, ctx) => {
    const out = ctx.streams.out as NonNullable<(typeof ctx.streams)["out"]>;
    for (const write of writes) {
      if (!out.write(write)) {
        await new Promise<void>((resolve) => (out.onDrain = resolve));
      }
    }
    return data.length;
  });
  const call = client.open("produce", {}, { streams: ["out"] });
  const reading = readAll(call.streams.out as NonNullable<(typeof call.streams)["out"]>);
  let done = false;
  void call.result.finally(() => (done = true));
  for (let i = 0; i < 400 && !done; i++) await clock.advance(50);
  const got = await reading;
  assert.equal(await call.result, data.length);
  const sha = (x: Uint8Array) => createHash("sha256").update(x).digest("hex");
  assert.equal(sha(got), sha(data), "the bytes arrived as they were sent");
  // Closing acknowledges everything received.
  call.streams.out?.end();
  void client.close();
  await clock.advance(5_000);
  await settle();
  assert.equal(client.state, "closed");
  return {
    resent: server.stats.framesResent,
    bursts: damaging?.bursts ?? 0,
  };
}

/** `buffer` in writes of `size` bytes, every `stride` bytes (side by side when they are equal). */
function pieces(buffer: Uint8Array, size: number, stride = size): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < buffer.length; at += stride) out.push(buffer.subarray(at, at + size));
  return out;
}

describe("stream bytes handed back to their buffer", () => {
  it("hands back every byte exactly once, after the peer acknowledged it", async () => {
    const source = counting(6 * MiB);
    await stream(pieces(source.buffer, 64 * 1024));
    assert.equal(source.twice(), false, "no byte came back twice");
    assert.equal(source.back(), 6 * MiB);
  });

  it("hands back small writes, copied next to their header, exactly once too", async () => {
    const source = counting(MiB);
    // Not side by side: each write is a frame of its own, small enough to be copied.
    const writes = pieces(source.buffer, 1000, 2000);
    await stream(writes);
    assert.equal(source.twice(), false);
    assert.equal(
      source.back(),
      writes.reduce((n, w) => n + w.length, 0),
    );
  });

  it("hands back frames sent again after damage too, exactly once (the resend wrote copies)", async () => {
    const source = counting(6 * MiB);
    const { resent, bursts } = await stream(pieces(source.buffer, 64 * 1024), 7);
    assert.ok(bursts > 5 && resent > 0, `${bursts} bursts, ${resent} frames resent`);
    assert.equal(source.twice(), false, "no byte came back twice");
    // Every frame the peer acknowledged came back, those sent again among them: only the last
    // ones may not, if the session ended before their ACK came (the garbage collector has them).
    const tail = source.tailMissing();
    assert.ok(
      tail >= 0 && tail <= 4 * 64 * 1024,
      `${6 * MiB - source.back()} bytes did not come back, not only the last frames`,
    );
  });

  it("the outbox hands back a frame's payload when it is acknowledged, and resends a copy", () => {
    const source = counting(4 * 8192);
    const written: Uint8Array[][] = [];
    const transport = {
      description: "fake",
      send: (parts: readonly Uint8Array[]) => written.push([...parts]) > 0,
      drain: () => Promise.resolve(),
      close: () => Promise.resolve(),
      abort: () => {},
      [Symbol.asyncIterator]: () => ({ next: () => new Promise<never>(() => {}) }),
    } as unknown as Transport;
    const outbox = new Outbox(transport, new FrameEncoder(), { failed() {}, drained() {} }, MiB);
    // Four DATA frames of 8 KiB (sent uncopied), then a small one (copied at once).
    for (let i = 0; i < 4; i++) {
      outbox.send(FrameType.DATA, 1, source.buffer.subarray(i * 8192, (i + 1) * 8192), true);
    }
    outbox.flush();
    assert.equal(source.back(), 0, "nothing before the peer has it");
    outbox.ack(1);
    assert.equal(source.back(), 8192, "frame 1 acknowledged");
    // The peer lost frame 2: a copy of it is written again, so the kept bytes still come back.
    assert.equal(outbox.resend(2), 1);
    const again = (written.at(-1) as Uint8Array[])[1] as Uint8Array;
    const kept = source.buffer.subarray(8192, 2 * 8192);
    assert.deepEqual(again, kept);
    assert.notEqual(again.buffer, source.buffer.buffer, "a copy, not the kept bytes");
    outbox.ack(4);
    assert.equal(source.back(), 4 * 8192, "frames 1 to 4, the one sent again too");
    assert.equal(source.twice(), false);
    const small = counting(100);
    outbox.send(FrameType.DATA, 1, small.buffer, true);
    assert.equal(small.back(), 100, "copied next to its header: handed back at once");
  });
});

describe("copyOf and discard", () => {
  it("copyOf copies a Node Buffer's bytes into memory of their own, keeping its class", () => {
    const buffer = Buffer.alloc(64, 1);
    const view = buffer.subarray(8, 24);
    const copy = copyOf(view);
    assert.ok(Buffer.isBuffer(copy));
    assert.notEqual(copy.buffer, buffer.buffer, "Buffer#slice would share the bytes");
    buffer.fill(2);
    assert.deepEqual([...new Set(copy)], [1]);
    assert.equal(copy.length, 16);
  });

  it("discard gives stream bytes back as consumed: adopted, then released", () => {
    const buffer = new Uint8Array(64);
    const said: string[] = [];
    recycleFrom(buffer.buffer, {
      share() {},
      adopt: (view) => said.push(`adopt ${view.byteOffset}+${view.length}`),
      release: (view) => said.push(`release ${view.byteOffset}+${view.length}`),
    });
    discard(buffer.subarray(16, 48));
    assert.deepEqual(said, ["adopt 16+32", "release 16+32"]);
    discard(new Uint8Array(4)); // a buffer nobody registered: nothing to say
    assert.equal(said.length, 2);
  });
});

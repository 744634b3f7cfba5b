/** toDuplex on its own: a SessionStream with a stub owner, read the way applications read. */
import assert from "node:assert/strict";
import { once } from "node:events";
import { describe, it } from "node:test";
import { toDuplex } from "../../src/platform/duplex.ts";
import { ReceiveWindow, SendCredit } from "../../src/session/flow-control.ts";
import { SessionStream, type StreamOwner } from "../../src/session/stream.ts";

const KiB = 1024;

function rig() {
  const state = { consumed: 0, resets: 0 };
  const owner: StreamOwner = {
    streamHasOutput: () => {},
    streamConsumed: (_stream, bytes) => {
      state.consumed += bytes;
    },
    streamReset: () => {
      state.resets++;
    },
  };
  const window = 1024 * KiB;
  const stream = new SessionStream(
    owner,
    1,
    "out",
    new SendCredit(window),
    new ReceiveWindow(window),
    window,
  );
  return { stream, state };
}

const chunk = (n: number, fill: number) => new Uint8Array(n).fill(fill);
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("toDuplex", () => {
  it("gives an async iterator the chunks as they came, never joined into a copy", async () => {
    const { stream } = rig();
    const duplex = toDuplex(stream);
    const sent = [chunk(64 * KiB, 1), chunk(64 * KiB, 2), chunk(64 * KiB, 3), chunk(10, 4)];
    // All of them before the reader looks: one transport read brought several DATA frames.
    for (const c of sent) stream.deliver(c);
    stream.remoteEnd();
    const got: Uint8Array[] = [];
    for await (const c of duplex) got.push(c as Uint8Array);
    assert.equal(got.length, sent.length);
    for (const [i, c] of got.entries()) {
      assert.equal(c.buffer, (sent[i] as Uint8Array).buffer, `chunk ${i} is the one delivered`);
      assert.equal(c.length, (sent[i] as Uint8Array).length);
    }
  });

  it("counts bytes consumed only as the reader takes them, so a reader that stops holds the peer", async () => {
    const { stream, state } = rig();
    const duplex = toDuplex(stream);
    for (let i = 0; i < 8; i++) stream.deliver(chunk(64 * KiB, i));
    await tick();
    assert.equal(state.consumed, 0, "nobody has read yet");
    const first = duplex.read() as Buffer | null; // asks for more: one chunk goes to Node
    assert.equal(first, null, "given after read() returns, never from inside it");
    await tick();
    assert.ok(state.consumed > 0 && state.consumed < 8 * 64 * KiB, `${state.consumed}`);
    let taken = 0;
    duplex.on("data", (c: Buffer) => {
      taken += c.length;
    });
    stream.remoteEnd();
    await once(duplex, "end");
    assert.equal(taken, 8 * 64 * KiB);
    assert.equal(state.consumed, 8 * 64 * KiB);
  });

  it("a Duplex destroyed with chunks still held gives their credit back", async () => {
    const { stream, state } = rig();
    const duplex = toDuplex(stream);
    for (let i = 0; i < 4; i++) stream.deliver(chunk(64 * KiB, i));
    duplex.destroy();
    await tick();
    assert.equal(state.consumed, 4 * 64 * KiB);
    assert.equal(state.resets, 1, "not read to its end: the stream is reset");
    stream.deliver(chunk(100, 9)); // crossed the RESET: counted, not kept
    assert.equal(state.consumed, 4 * 64 * KiB + 100);
  });

  it("ends after the held chunks, and at once when nothing is held", async () => {
    const { stream } = rig();
    const duplex = toDuplex(stream);
    stream.remoteEnd();
    const got: unknown[] = [];
    for await (const c of duplex) got.push(c);
    assert.deepEqual(got, []);
  });
});

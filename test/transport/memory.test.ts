import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import {
  concat,
  isPending,
  pattern,
  readAll,
  rejectsWith,
  sendAll,
  throwsWith,
} from "../helpers/transport.ts";

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

describe("memoryPair", () => {
  it("delivers bytes in order across many sends of every size", async () => {
    const [a, b] = memoryPair({ highWaterMark: 1000 });
    const data = pattern(300_000);
    const pieces: Uint8Array[] = [];
    for (let at = 0, size = 0; at < data.length; size = (size + 7) % 3000) {
      pieces.push(data.subarray(at, at + size));
      at += size;
    }
    const reading = readAll(b);
    for (let i = 0; i < pieces.length; i += 3) {
      if (!a.send(pieces.slice(i, i + 3))) await a.drain();
    }
    const closing = a.close();
    assert.deepEqual(await reading, data);
    await b.close();
    await closing;
  });

  it("carries both directions at once without either side stalling", async () => {
    const [a, b] = memoryPair({ highWaterMark: 64 });
    const ab = pattern(50_000, 1);
    const ba = pattern(70_000, 2);
    const [atB, atA] = await Promise.all([
      readAll(b),
      readAll(a),
      sendAll(a, ab, 100, 3).then(() => a.close()),
      sendAll(b, ba, 33, 5).then(() => b.close()),
    ]);
    assert.deepEqual(atB, ab);
    assert.deepEqual(atA, ba);
  });

  it("hands over the very chunks sent, without copying", async () => {
    const [a, b] = memoryPair();
    const chunk = text("same bytes");
    a.send([chunk]);
    const next = await b[Symbol.asyncIterator]().next();
    assert.equal(next.value, chunk);
  });

  it("returns false once the unread bytes reach the high-water mark and drains only when the reader pulls", async () => {
    const [a, b] = memoryPair({ highWaterMark: 10 });
    assert.equal(a.send([text("12345678")]), true);
    await a.drain();
    assert.equal(a.send([text("9abc")]), false);
    const drained = a.drain();
    assert.equal(await isPending(drained), true, "drain resolved though nothing was read");
    assert.equal(await isPending(drained), true, "drain resolved though nothing was read");

    const reader = b[Symbol.asyncIterator]();
    assert.equal(str((await reader.next()).value), "12345678");
    assert.equal(await isPending(drained), false, "drain still pending after the reader pulled");
    await drained;
    assert.equal(str((await reader.next()).value), "9abc");
  });

  it("keeps drain pending for as long as the reader is above the mark", async () => {
    const [a, b] = memoryPair({ highWaterMark: 4 });
    a.send([text("aa"), text("bb"), text("cc"), text("dd")]);
    const drained = a.drain();
    const reader = b[Symbol.asyncIterator]();
    await reader.next(); // 6 left
    assert.equal(await isPending(drained), true);
    await reader.next(); // 4 left: still at the mark
    assert.equal(await isPending(drained), true);
    await reader.next(); // 2 left
    assert.equal(await isPending(drained), false);
  });

  it("ends the peer's iteration after the queued bytes when one side closes, and keeps the other direction open", async () => {
    const [a, b] = memoryPair();
    a.send([text("request")]);
    const aClosed = a.close();
    assert.throws(
      () => a.send([text("late")]),
      (err) => isGuestlinkError(err, "TRANSPORT_CLOSED"),
    );
    await rejectsWith(a.drain(), "TRANSPORT_CLOSED");
    assert.equal(str(await readAll(b)), "request");

    // Half-close: b still answers, and a still reads it.
    assert.equal(await isPending(aClosed), true, "close resolved before the peer closed");
    const reply = readAll(a);
    b.send([text("reply")]);
    await b.close();
    await aClosed;
    assert.equal(str(await reply), "reply");
  });

  it("rejects a pending drain with TRANSPORT_CLOSED when the writer closes", async () => {
    const [a] = memoryPair({ highWaterMark: 1 });
    a.send([text("x")]);
    const drained = a.drain();
    void a.close();
    await rejectsWith(drained, "TRANSPORT_CLOSED");
  });

  it("makes the peer's iteration throw TRANSPORT_FAILED with the reason when one side aborts", async () => {
    const [a, b] = memoryPair({ highWaterMark: 4 });
    b.send([text("unread by a")]);
    const bDrain = b.drain();
    a.send([text("unread by b")]);
    const aDrain = a.drain();
    const reason = new Error("operator pressed Ctrl-C");
    a.abort(reason);

    const err = await rejectsWith(readAll(b), "TRANSPORT_FAILED", /aborted/);
    assert.equal(err.cause, reason);
    // Both sides' pending drains fail; neither side can send any more.
    await rejectsWith(aDrain, "TRANSPORT_CLOSED");
    await rejectsWith(bDrain, "TRANSPORT_CLOSED");
    throwsWith(() => b.send([text("x")]), "TRANSPORT_CLOSED");
    throwsWith(() => a.send([text("x")]), "TRANSPORT_CLOSED");
    // The aborted side's own reader is told too, and its unread bytes are gone.
    const own = await rejectsWith(readAll(a), "TRANSPORT_CLOSED", /aborted/);
    assert.equal(own.cause, reason);
  });

  it("wakes a reader that is waiting when its peer aborts", async () => {
    const [a, b] = memoryPair();
    const reading = b[Symbol.asyncIterator]().next();
    assert.equal(await isPending(reading), true);
    a.abort();
    await rejectsWith(reading, "TRANSPORT_FAILED");
  });

  it("resolves a pending close when the peer aborts, and rejects a later close once the peer aborted first", async () => {
    const [a, b] = memoryPair();
    const aClosed = a.close();
    b.abort();
    await aClosed;

    const [c, d] = memoryPair();
    c.abort();
    await rejectsWith(d.close(), "TRANSPORT_FAILED");
  });

  it("treats abort as idempotent and close after abort as already done", async () => {
    const [a, b] = memoryPair();
    const first = new Error("first");
    a.abort(first);
    a.abort(new Error("second"));
    await a.close();
    const err = await rejectsWith(readAll(b), "TRANSPORT_FAILED");
    assert.equal(err.cause, first);
  });

  it("leaves the peer alone when aborted after both sides closed", async () => {
    const [a, b] = memoryPair();
    a.send([text("all of it")]);
    const aClosed = a.close();
    await b.close();
    await aClosed;
    a.abort();
    assert.equal(str(await readAll(b)), "all of it");
  });

  it("drops what arrives once the reader stops early, so the writer never stalls", async () => {
    const [a, b] = memoryPair({ highWaterMark: 8 });
    a.send([text("first")]);
    for await (const chunk of b) {
      assert.equal(str(chunk), "first");
      break;
    }
    assert.equal(a.send([pattern(100)]), true);
    await a.drain();
  });

  it("has one reader", () => {
    const [a] = memoryPair();
    a[Symbol.asyncIterator]();
    assert.throws(() => a[Symbol.asyncIterator](), TypeError);
  });

  it("ignores empty chunks", async () => {
    const [a, b] = memoryPair();
    a.send([new Uint8Array(0), text("x"), new Uint8Array(0)]);
    void a.close();
    const chunks: Uint8Array[] = [];
    for await (const chunk of b) chunks.push(chunk);
    assert.deepEqual(concat(chunks), text("x"));
    assert.equal(chunks.length, 1);
  });

  it("rejects a high-water mark that is not a positive integer", () => {
    for (const highWaterMark of [0, -1, 1.5, Number.NaN]) {
      throwsWith(() => memoryPair({ highWaterMark }), "INVALID_OPTION", /highWaterMark/);
    }
  });
});

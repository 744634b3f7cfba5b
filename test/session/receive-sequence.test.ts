/** The receiving side of sequence numbers on its own, with a fake of its port and a fake clock. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ACK_EVERY_FRAMES,
  Arrival,
  MAX_HELD_FRAMES,
  MAX_RESEND_ASKS,
  RESEND_ALL,
  RESEND_WAIT_MAX_MS,
  RESEND_WAIT_MIN_MS,
  ReceiveSequence,
} from "../../src/session/receive-sequence.ts";
import { FakeClock } from "../helpers/fake-clock.ts";

function rig(rttMs?: number, giveUpAfterMs = 0) {
  const clock = new FakeClock();
  const asks: [number, number][] = [];
  const unhealed: { expected: number; asks: number }[] = [];
  const dropped: string[] = [];
  const rx = new ReceiveSequence<string>(clock, {
    askResend: (received, upTo) => asks.push([received, upTo]),
    unhealed: (expected, n) => unhealed.push({ expected, asks: n }),
    rttMs: () => rttMs,
    giveUpAfterMs,
    dropped: (item) => dropped.push(item),
  });
  /** A frame numbered `seq` arrives (its item names it). */
  const arrive = (seq: number) => rx.arrive(seq, 40, `f${seq}`);
  /** Everything the last delivery unblocked. */
  const drain = () => {
    const out: string[] = [];
    for (let item = rx.takeHeld(); item !== undefined; item = rx.takeHeld()) out.push(item);
    return out;
  };
  return { clock, rx, asks, unhealed, dropped, arrive, drain };
}

describe("ReceiveSequence", () => {
  it("delivers frames in order and ignores what it already has", () => {
    const { arrive, rx, asks } = rig();
    assert.equal(arrive(1), Arrival.NEXT);
    assert.equal(arrive(2), Arrival.NEXT);
    assert.equal(arrive(1), Arrival.DUPLICATE);
    assert.equal(rx.received, 2);
    assert.deepEqual(asks, []);
  });

  it("holds the frames after a gap, asks for just the missing ones, and delivers all in order", () => {
    const { arrive, drain, rx, asks } = rig();
    arrive(1);
    for (const seq of [4, 5, 6]) assert.equal(arrive(seq), Arrival.HELD);
    // 2 and 3 are missing: one ask, up to the first frame held.
    assert.deepEqual(asks, [[1, 3]]);
    assert.equal(arrive(5), Arrival.DUPLICATE, "already held");
    assert.equal(arrive(2), Arrival.NEXT);
    assert.deepEqual(drain(), []);
    assert.equal(arrive(3), Arrival.NEXT);
    assert.deepEqual(drain(), ["f4", "f5", "f6"]);
    assert.equal(rx.received, 6);
    assert.deepEqual(rx.held, { frames: 0, bytes: 0 });
    assert.equal(rx.asking, false);
  });

  it("asks again when the resent frames arrive still lacking the one expected", () => {
    const { arrive, asks } = rig();
    arrive(1);
    arrive(4);
    arrive(5);
    // The resent 2 was damaged too: 3 comes, the numbers went backwards.
    assert.equal(arrive(3), Arrival.HELD);
    assert.deepEqual(asks, [
      [1, 3],
      [1, 2],
    ]);
  });

  it("asks again at once when something dropped while asking was the frame sent again", () => {
    const { arrive, rx, asks } = rig();
    arrive(1);
    arrive(3);
    arrive(4);
    // The resent 2 is damaged; 5 follows 4 without a gap, so what was dropped was not 5's elder.
    rx.damaged();
    assert.equal(arrive(5), Arrival.HELD);
    assert.deepEqual(asks, [
      [1, 2],
      [1, 2],
    ]);
  });

  it("does not ask again when what dropped while asking was a frame after the gap", () => {
    const { arrive, drain, rx, asks } = rig();
    arrive(1);
    arrive(3);
    // 4 is damaged on its way: 5 comes after a second gap, which is asked for once 2 arrives.
    rx.damaged();
    assert.equal(arrive(5), Arrival.HELD);
    assert.deepEqual(asks, [[1, 2]]);
    assert.equal(arrive(2), Arrival.NEXT);
    assert.deepEqual(drain(), ["f3"]);
    assert.deepEqual(asks, [
      [1, 2],
      [3, 4],
    ]);
  });

  it("asks for the rest of a gap that remains once what filled its start is delivered", () => {
    const { arrive, drain, asks } = rig();
    arrive(1);
    arrive(3);
    arrive(5);
    assert.deepEqual(asks, [[1, 2]]);
    arrive(2);
    assert.deepEqual(drain(), ["f3"]);
    // 4 is still missing, and 5 was seen.
    assert.deepEqual(asks, [
      [1, 2],
      [3, 4],
    ]);
  });

  it("after a damaged frame with nothing after it, waits, then asks for everything", async () => {
    const { clock, rx, arrive, asks } = rig();
    arrive(1);
    rx.damaged();
    assert.deepEqual(asks, []);
    await clock.advance(RESEND_WAIT_MIN_MS);
    assert.deepEqual(asks, [[1, RESEND_ALL]]);
  });

  it("after a damaged frame, asks nothing when frames go on arriving in order: it was unnumbered", async () => {
    const { clock, rx, arrive, asks } = rig();
    arrive(1);
    rx.damaged();
    arrive(2);
    await clock.advance(10 * RESEND_WAIT_MIN_MS);
    assert.deepEqual(asks, []);
  });

  it("asks again when nothing arrives after asking, waiting longer on a slow link", async () => {
    const { clock, arrive, asks } = rig(100);
    arrive(1);
    arrive(3);
    await clock.advance(399);
    assert.equal(asks.length, 1);
    await clock.advance(1);
    assert.equal(asks.length, 2);
  });

  it("waits on while frames flow, but not forever", async () => {
    const { clock, arrive, asks } = rig();
    arrive(1);
    arrive(3);
    let seq = 4;
    for (let i = 0; i < 4; i++) {
      arrive(seq++);
      await clock.advance(RESEND_WAIT_MIN_MS);
    }
    assert.equal(asks.length, 1);
    arrive(seq++);
    await clock.advance(RESEND_WAIT_MIN_MS);
    assert.equal(asks.length, 2);
  });

  it("gives the connection up after MAX_RESEND_ASKS asks that did not bring a frame surely missing", async () => {
    const { clock, arrive, asks, unhealed } = rig();
    arrive(1);
    arrive(3); // 2 is missing: 3 came
    for (let i = 0; i < MAX_RESEND_ASKS + 2; i++) await clock.advance(RESEND_WAIT_MAX_MS);
    assert.equal(asks.length, MAX_RESEND_ASKS);
    assert.deepEqual(unhealed, [{ expected: 2, asks: MAX_RESEND_ASKS }]);
    assert.equal(clock.pendingTimers, 0);
  });

  it("waits twice as long after each unanswered ask, up to RESEND_WAIT_MAX_MS", async () => {
    const { clock, arrive, asks } = rig();
    arrive(1);
    arrive(3);
    const at: number[] = [];
    for (let t = 0; t < 4_000; t += 10) {
      const before = asks.length;
      await clock.advance(10);
      if (asks.length > before) at.push(t + 10);
    }
    // Asked at 0 (the gap), then after 50, 100, 200, 400, 800 and 1000 ms more.
    assert.deepEqual(at.slice(0, 6), [50, 150, 350, 750, 1550, 2550]);
  });

  it("keeps asking past MAX_RESEND_ASKS until giveUpAfterMs has passed: the peer may be stalled", async () => {
    const { clock, arrive, asks, unhealed } = rig(undefined, 20_000);
    arrive(1);
    arrive(3);
    await clock.advance(15_000);
    assert.ok(asks.length > MAX_RESEND_ASKS, `${asks.length} asks`);
    assert.deepEqual(unhealed, []);
    // The frame comes at last: healed, nothing given up.
    arrive(2);
    await clock.advance(30_000);
    assert.deepEqual(unhealed, []);
  });

  it("stops asking after a damaged frame that nothing numbered followed: it was a PING or an ACK", async () => {
    const { clock, rx, arrive, asks, unhealed } = rig();
    arrive(1);
    rx.damaged();
    for (let i = 0; i < MAX_RESEND_ASKS + 3; i++) await clock.advance(RESEND_WAIT_MAX_MS);
    assert.equal(asks.length, MAX_RESEND_ASKS);
    assert.deepEqual(unhealed, []);
    assert.equal(rx.asking, false);
    // A later loss is asked for afresh.
    arrive(3);
    assert.equal(asks.length, MAX_RESEND_ASKS + 1);
  });

  it("holds at most MAX_HELD_FRAMES after a gap, drops the rest, and asks for them in turn", () => {
    const { arrive, drain, rx, asks } = rig();
    for (let seq = 2; seq < MAX_HELD_FRAMES + 2; seq++) assert.equal(arrive(seq), Arrival.HELD);
    assert.equal(arrive(MAX_HELD_FRAMES + 2), Arrival.DROPPED);
    assert.equal(rx.held.frames, MAX_HELD_FRAMES);
    assert.equal(arrive(1), Arrival.NEXT);
    assert.equal(drain().length, MAX_HELD_FRAMES);
    // The dropped one was seen: it is asked for.
    assert.deepEqual(asks.at(-1), [MAX_HELD_FRAMES + 1, RESEND_ALL]);
  });

  it("a new connection forgets the asks and held frames of the old one, letting each go", async () => {
    const { clock, rx, arrive, asks, dropped } = rig();
    arrive(1);
    arrive(3);
    arrive(4);
    rx.newConnection();
    assert.deepEqual(rx.held, { frames: 0, bytes: 0 });
    assert.deepEqual(dropped, ["f3", "f4"]);
    await clock.advance(10 * RESEND_WAIT_MIN_MS);
    assert.equal(asks.length, 1);
    // The resume's replay starts at 2: no gap, no ask.
    assert.equal(arrive(2), Arrival.NEXT);
    assert.equal(arrive(3), Arrival.NEXT);
  });

  it("an ACK is due after ACK_EVERY_FRAMES frames, or at once when forced and anything is new", () => {
    const { rx, arrive } = rig();
    assert.equal(rx.takeAck(true), false);
    for (let seq = 1; seq < ACK_EVERY_FRAMES; seq++) arrive(seq);
    assert.equal(rx.takeAck(false), false);
    arrive(ACK_EVERY_FRAMES);
    assert.equal(rx.takeAck(false), true);
    assert.equal(rx.takeAck(true), false);
    arrive(ACK_EVERY_FRAMES + 1);
    assert.equal(rx.takeAck(true), true);
  });

  it("reset numbers from 1 again", () => {
    const { rx, arrive } = rig();
    arrive(1);
    arrive(2);
    rx.reset();
    assert.equal(rx.received, 0);
    assert.equal(arrive(1), Arrival.NEXT);
  });
});

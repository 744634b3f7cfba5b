/** The receiving side of sequence numbers on its own, with a fake of its port and a fake clock. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ACK_EVERY_FRAMES,
  Arrival,
  MAX_RESEND_ASKS,
  RESEND_WAIT_MIN_MS,
  ReceiveSequence,
} from "../../src/session/receive-sequence.ts";
import { FakeClock } from "../helpers/fake-clock.ts";

function rig(rttMs?: number) {
  const clock = new FakeClock();
  const asks: number[] = [];
  const unhealed: { expected: number; asks: number }[] = [];
  const rx = new ReceiveSequence(clock, {
    askResend: (received) => asks.push(received),
    unhealed: (expected, n) => unhealed.push({ expected, asks: n }),
    rttMs: () => rttMs,
  });
  return { clock, rx, asks, unhealed };
}

describe("ReceiveSequence", () => {
  it("delivers frames in order and ignores what it already has", () => {
    const { rx, asks } = rig();
    assert.equal(rx.arrive(1, 40), Arrival.NEXT);
    assert.equal(rx.arrive(2, 40), Arrival.NEXT);
    assert.equal(rx.arrive(1, 40), Arrival.DUPLICATE);
    assert.equal(rx.received, 2);
    assert.deepEqual(asks, []);
  });

  it("asks once for a gap, however many frames follow it before the go-back", () => {
    const { rx, asks } = rig();
    rx.arrive(1, 40);
    for (const seq of [3, 4, 5, 6]) assert.equal(rx.arrive(seq, 40), Arrival.AFTER_GAP);
    assert.deepEqual(asks, [1]);
    // The go-back brings 2 and what followed it: healed, nothing more is asked.
    for (const seq of [2, 3, 4, 5, 6]) assert.equal(rx.arrive(seq, 40), Arrival.NEXT);
    assert.deepEqual(asks, [1]);
    assert.equal(rx.asking, false);
  });

  it("asks again when the go-back arrives still lacking the frame", () => {
    const { rx, asks } = rig();
    rx.arrive(1, 40);
    rx.arrive(3, 40);
    rx.arrive(4, 40);
    // The go-back's 2 was damaged too: 3 comes again, the numbers went backwards.
    assert.equal(rx.arrive(3, 40), Arrival.AFTER_GAP);
    assert.equal(rx.arrive(4, 40), Arrival.AFTER_GAP);
    assert.deepEqual(asks, [1, 1]);
  });

  it("a damaged frame is asked for at once, and only once until the gap or the wait decides", () => {
    const { rx, asks } = rig();
    rx.arrive(1, 40);
    rx.damaged();
    rx.damaged();
    assert.deepEqual(asks, [1]);
    rx.arrive(3, 40);
    assert.deepEqual(asks, [1]);
  });

  it("asks again when nothing arrives after asking, waiting longer on a slow link", async () => {
    const { clock, rx, asks } = rig(100);
    rx.arrive(1, 40);
    rx.damaged();
    await clock.advance(399);
    assert.deepEqual(asks, [1]);
    await clock.advance(1);
    assert.deepEqual(asks, [1, 1]);
  });

  it("waits on while frames flow, but not forever", async () => {
    const { clock, rx, asks } = rig();
    rx.arrive(1, 40);
    rx.arrive(3, 40);
    let seq = 4;
    for (let i = 0; i < 4; i++) {
      rx.arrive(seq++, 40);
      await clock.advance(RESEND_WAIT_MIN_MS);
    }
    assert.deepEqual(asks, [1]);
    rx.arrive(seq++, 40);
    await clock.advance(RESEND_WAIT_MIN_MS);
    assert.deepEqual(asks, [1, 1]);
  });

  it("gives the connection up after MAX_RESEND_ASKS asks that did not bring a frame surely missing", async () => {
    const { clock, rx, asks, unhealed } = rig();
    rx.arrive(1, 40);
    rx.arrive(3, 40); // 2 is missing: 3 came
    for (let i = 0; i < MAX_RESEND_ASKS + 2; i++) await clock.advance(RESEND_WAIT_MIN_MS);
    assert.equal(asks.length, MAX_RESEND_ASKS);
    assert.deepEqual(unhealed, [{ expected: 2, asks: MAX_RESEND_ASKS }]);
    assert.equal(clock.pendingTimers, 0);
  });

  it("stops asking after a damaged frame that nothing numbered followed: it was a PING or an ACK", async () => {
    const { clock, rx, asks, unhealed } = rig();
    rx.arrive(1, 40);
    rx.damaged();
    for (let i = 0; i < MAX_RESEND_ASKS + 2; i++) await clock.advance(RESEND_WAIT_MIN_MS);
    assert.equal(asks.length, MAX_RESEND_ASKS);
    assert.deepEqual(unhealed, []);
    assert.equal(rx.asking, false);
    // A later loss is asked for afresh.
    rx.arrive(3, 40);
    assert.equal(asks.length, MAX_RESEND_ASKS + 1);
  });

  it("a new connection forgets the asks of the old one", async () => {
    const { clock, rx, asks } = rig();
    rx.arrive(1, 40);
    rx.arrive(3, 40);
    rx.newConnection();
    await clock.advance(10 * RESEND_WAIT_MIN_MS);
    assert.deepEqual(asks, [1]);
    // The resume's replay starts at 2: no gap, no ask.
    assert.equal(rx.arrive(2, 40), Arrival.NEXT);
  });

  it("an ACK is due after ACK_EVERY_FRAMES frames, or at once when forced and anything is new", () => {
    const { rx } = rig();
    assert.equal(rx.takeAck(true), false);
    for (let seq = 1; seq < ACK_EVERY_FRAMES; seq++) rx.arrive(seq, 40);
    assert.equal(rx.takeAck(false), false);
    rx.arrive(ACK_EVERY_FRAMES, 40);
    assert.equal(rx.takeAck(false), true);
    assert.equal(rx.takeAck(true), false);
    rx.arrive(ACK_EVERY_FRAMES + 1, 40);
    assert.equal(rx.takeAck(true), true);
  });

  it("reset numbers from 1 again", () => {
    const { rx } = rig();
    rx.arrive(1, 40);
    rx.arrive(2, 40);
    rx.reset();
    assert.equal(rx.received, 0);
    assert.equal(rx.arrive(1, 40), Arrival.NEXT);
  });
});

/** Closing a session on its own, with a fake of its port whose answers each test sets. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CLOSE_LINGER_MS, Closing, type ClosingPort } from "../../src/session/closing.ts";
import { FakeClock, settle } from "../helpers/fake-clock.ts";

function rig() {
  const clock = new FakeClock();
  const port = {
    isBusy: false,
    owes: false,
    confirms: false,
    unacked: 0,
    acks: 0,
    finishes: 0,
  };
  const closingPort: ClosingPort = {
    busy: () => (port.isBusy ? 1 : 0),
    owesResumedPeer: () => port.owes,
    confirmsOnLive: () => port.confirms,
    unacknowledged: () => port.unacked,
    ackNow: () => {
      port.acks++;
    },
    finish: () => {
      port.finishes++;
    },
  };
  const closing = new Closing(closingPort, clock);
  return { clock, port, closing };
}

describe("Closing", () => {
  it("finishes at once when nothing is busy", () => {
    const { clock, port, closing } = rig();
    closing.maybeFinish();
    assert.equal(port.finishes, 1);
    // Not on a confirmsClose connection: no ACK to give, no linger.
    assert.equal(port.acks, 0);
    assert.equal(clock.pendingTimers, 0);
  });

  it("waits while calls or streams are in flight, and finishes when asked again after", () => {
    const { port, closing } = rig();
    port.isBusy = true;
    closing.maybeFinish();
    assert.equal(port.finishes, 0);
    port.isBusy = false;
    closing.maybeFinish();
    assert.equal(port.finishes, 1);
  });

  it("waits while it owes a disconnected peer frames, so a final RESULT waits for the resume", () => {
    const { port, closing } = rig();
    port.owes = true;
    closing.maybeFinish();
    assert.equal(port.finishes, 0);
    // The peer resumed and took the frames.
    port.owes = false;
    closing.maybeFinish();
    assert.equal(port.finishes, 1);
  });

  it("gives no ACK while busy, even on a confirmsClose connection", () => {
    // Our last word comes only when the work is done; until then ACKs go as usual.
    const { port, closing } = rig();
    port.confirms = true;
    port.isBusy = true;
    closing.maybeFinish();
    assert.equal(port.acks, 0);
    assert.equal(port.finishes, 0);
  });

  it("on a confirmsClose connection acks, then finishes at once when all it sent is acknowledged", () => {
    const { clock, port, closing } = rig();
    port.confirms = true;
    closing.maybeFinish();
    assert.equal(port.acks, 1);
    assert.equal(port.finishes, 1);
    assert.equal(clock.pendingTimers, 0);
  });

  it("on a confirmsClose connection lingers while frames are unacknowledged, finishing when they are", async () => {
    const { clock, port, closing } = rig();
    port.confirms = true;
    port.unacked = 3;
    closing.maybeFinish();
    assert.equal(port.acks, 1, "our last ACK goes before we wait for theirs");
    assert.equal(port.finishes, 0);
    assert.equal(clock.pendingTimers, 1);
    await clock.advance(CLOSE_LINGER_MS - 1);
    assert.equal(port.finishes, 0);
    // The peer's ACK arrives within the linger.
    port.unacked = 0;
    closing.maybeFinish();
    assert.equal(port.finishes, 1);
  });

  it("finishes after CLOSE_LINGER_MS when the peer never acknowledges", async () => {
    const { clock, port, closing } = rig();
    port.confirms = true;
    port.unacked = 3;
    closing.maybeFinish();
    await clock.advance(CLOSE_LINGER_MS - 1);
    assert.equal(port.finishes, 0);
    await clock.advance(1);
    assert.equal(port.finishes, 1);
  });

  it("lingers once however often it is asked: one timer, one finish", async () => {
    // maybeFinish is called on every change (each ACK that still leaves frames unacknowledged):
    // the linger runs from the first, it does not start again.
    const { clock, port, closing } = rig();
    port.confirms = true;
    port.unacked = 3;
    closing.maybeFinish();
    await clock.advance(CLOSE_LINGER_MS / 2);
    port.unacked = 2;
    closing.maybeFinish();
    port.unacked = 1;
    closing.maybeFinish();
    assert.equal(clock.pendingTimers, 1);
    assert.equal(port.acks, 3);
    await clock.advance(CLOSE_LINGER_MS / 2);
    assert.equal(port.finishes, 1);
    await clock.advance(10 * CLOSE_LINGER_MS);
    assert.equal(port.finishes, 1);
  });

  it("does not finish a second time when the linger runs out after it finished on the last ACK", async () => {
    const { clock, port, closing } = rig();
    port.confirms = true;
    port.unacked = 1;
    closing.maybeFinish();
    port.unacked = 0;
    closing.maybeFinish();
    assert.equal(port.finishes, 1);
    await clock.advance(CLOSE_LINGER_MS);
    assert.equal(port.finishes, 1);
  });

  it("finishes once when the session ends on the last ACK, as the session's finish does", async () => {
    // The session's finish ends it, and ending cancels the linger.
    const { clock, port, closing } = rig();
    port.confirms = true;
    port.unacked = 1;
    closing.maybeFinish();
    port.unacked = 0;
    closing.maybeFinish();
    closing.ended();
    assert.equal(clock.pendingTimers, 0);
    await clock.advance(CLOSE_LINGER_MS);
    assert.equal(port.finishes, 1);
  });

  it("connectionLost cancels the linger, and a resumed connection lingers afresh", async () => {
    const { clock, port, closing } = rig();
    port.confirms = true;
    port.unacked = 2;
    closing.maybeFinish();
    await clock.advance(CLOSE_LINGER_MS / 2);
    closing.connectionLost();
    assert.equal(clock.pendingTimers, 0);
    await clock.advance(CLOSE_LINGER_MS);
    assert.equal(port.finishes, 0, "the frames may yet reach the peer on a resume");
    // Resumed: the wait starts again from now, a whole CLOSE_LINGER_MS.
    closing.maybeFinish();
    await clock.advance(CLOSE_LINGER_MS - 1);
    assert.equal(port.finishes, 0);
    await clock.advance(1);
    assert.equal(port.finishes, 1);
  });

  it("is underway once GOAWAY went either way or a close was requested", () => {
    const sent = rig().closing;
    assert.equal(sent.underway, false);
    sent.goawaySent = true;
    assert.equal(sent.underway, true);
    assert.equal(sent.requested, false, "a GOAWAY sent is not a close asked for");

    const received = rig().closing;
    received.goawayReceived = true;
    assert.equal(received.underway, true);

    const asked = rig().closing;
    void asked.request();
    assert.equal(asked.requested, true);
    assert.equal(asked.underway, true);
  });

  it("acks at once only on a confirmed connection once GOAWAY went either way", () => {
    const { closing } = rig();
    closing.confirmed = true;
    assert.equal(closing.acksAtOnce, false);
    // A close asked for, GOAWAY not yet sent, does not change how ACKs go.
    void closing.request();
    assert.equal(closing.acksAtOnce, false);
    closing.goawayReceived = true;
    assert.equal(closing.acksAtOnce, true);
    closing.confirmed = false;
    assert.equal(closing.acksAtOnce, false);
    closing.confirmed = true;
    closing.goawayReceived = false;
    closing.goawaySent = true;
    assert.equal(closing.acksAtOnce, true);
  });

  it("request() settles after ended(), and every request shares the one close", async () => {
    const { closing } = rig();
    let settled = 0;
    const first = closing.request();
    const second = closing.request();
    assert.equal(first, second);
    void first.then(() => settled++);
    await settle();
    assert.equal(settled, 0, "nothing ends the session but ended()");
    closing.ended();
    await settle();
    assert.equal(settled, 1);
  });
});

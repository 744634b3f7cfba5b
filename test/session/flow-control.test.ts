/** Credit-based flow control on its own: what we may send, and what we let the peer send. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MAX_CREDIT, ReceiveWindow, SendCredit } from "../../src/session/flow-control.ts";

describe("SendCredit", () => {
  it("starts with the initial credit, grows by grants and shrinks by what is sent", () => {
    const credit = new SendCredit(100);
    assert.equal(credit.available, 100);
    credit.take(30);
    assert.equal(credit.available, 70);
    assert.equal(credit.grant(50), true);
    assert.equal(credit.available, 120);
  });

  it("accepts a grant that brings the credit exactly to MAX_CREDIT", () => {
    // The limit itself is allowed (2^31 - 1); only beyond is a protocol error.
    const credit = new SendCredit(0);
    assert.equal(credit.grant(MAX_CREDIT), true);
  });

  it("reports false for a grant that grows the credit beyond MAX_CREDIT", () => {
    const credit = new SendCredit(MAX_CREDIT - 10);
    assert.equal(credit.grant(11), false);
  });

  it("counts credit already spent when judging a grant", () => {
    // A peer may re-grant what we sent: after taking, the same grant fits again.
    const credit = new SendCredit(MAX_CREDIT);
    credit.take(1_000);
    assert.equal(credit.grant(1_000), true);
    assert.equal(credit.available, MAX_CREDIT);
  });
});

describe("ReceiveWindow", () => {
  it("accepts up to its size, and refuses a frame beyond what is left", () => {
    const window = new ReceiveWindow(100);
    assert.equal(window.accept(60), true);
    assert.equal(window.accept(40), true);
    assert.equal(window.available, 0);
    assert.equal(window.accept(1), false);
  });

  it("leaves the window as it was when it refuses", () => {
    // A refused frame is a protocol error, not bytes received: it must not eat the window.
    const window = new ReceiveWindow(100);
    window.accept(70);
    assert.equal(window.accept(31), false);
    assert.equal(window.available, 30);
    assert.equal(window.accept(30), true);
  });

  it("grants nothing back until half the window is consumed", () => {
    const window = new ReceiveWindow(100);
    window.accept(100);
    assert.equal(window.consumed(20), 0);
    assert.equal(window.consumed(29), 0);
    assert.equal(window.available, 0, "nothing is re-opened before the grant");
  });

  it("grants all consumed bytes in one grant once half the window is consumed", () => {
    const window = new ReceiveWindow(100);
    window.accept(100);
    window.consumed(20);
    window.consumed(29);
    // 49 + 1 = 50: exactly half re-opens, and the grant is everything consumed so far.
    assert.equal(window.consumed(1), 50);
    assert.equal(window.available, 50);
    // The peer fills the re-opened half; the count of consumed bytes started again at the grant.
    assert.equal(window.accept(50), true);
    assert.equal(window.consumed(10), 0);
    assert.equal(window.consumed(45), 55);
    assert.equal(window.available, 55);
  });

  it("grants more than half at once when one consume passes the mark", () => {
    const window = new ReceiveWindow(100);
    window.accept(90);
    assert.equal(window.consumed(90), 90);
    assert.equal(window.available, 100);
  });

  it("reset gives back a full window and forgets consumed bytes not yet granted", () => {
    const window = new ReceiveWindow(100);
    window.accept(80);
    window.consumed(30);
    window.reset();
    assert.equal(window.available, 100);
    // The 30 consumed before the reset are not granted again: 30 more do not reach half.
    assert.equal(window.consumed(30), 0);
    assert.equal(window.size, 100);
  });

  it("lends credit ahead of consumption, and the consumption pays it back before granting", () => {
    const window = new ReceiveWindow(100);
    window.accept(100);
    // 40 bytes held after a gap: lent back at once, so the peer may send 40 more.
    window.lend(40);
    assert.equal(window.available, 40);
    assert.equal(window.lent, 40);
    // Consuming the first 40 repays the loan; only what is consumed beyond it counts to a grant.
    assert.equal(window.consumed(40), 0);
    assert.equal(window.consumed(49), 0);
    assert.equal(window.consumed(1), 50);
    assert.equal(window.available, 90);
  });

  it("counts what is lent until consumption has paid it back", () => {
    const window = new ReceiveWindow(100);
    window.lend(60);
    window.lend(41);
    assert.equal(window.lent, 101);
    assert.equal(window.available, 201);
    assert.equal(window.consumed(60), 0);
    assert.equal(window.lent, 41);
  });
});

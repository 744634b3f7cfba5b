/** Progress on its own: whether a peer that still answers PINGs moves the work waiting on it. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Progress } from "../../src/session/liveness.ts";

const STALL_MS = 15_000;
const TICK_MS = 5_000;

describe("Progress", () => {
  it("reports nothing while nothing waits on the peer, however long it is quiet", () => {
    // An idle session with a silent peer is idle, not stalled.
    const progress = new Progress(0);
    for (let now = TICK_MS; now <= 10 * STALL_MS; now += TICK_MS) {
      assert.equal(progress.check(now, false, 7, STALL_MS), undefined);
    }
    assert.equal(progress.stalled, false);
  });

  it("reports stalled once the same frame is expected for stallAfterMs while work waits", () => {
    const progress = new Progress(0);
    assert.equal(progress.check(0, true, 7, STALL_MS), undefined);
    assert.equal(progress.check(STALL_MS - 1, true, 7, STALL_MS), undefined);
    assert.deepEqual(progress.check(STALL_MS, true, 7, STALL_MS), {
      type: "stalled",
      forMs: STALL_MS,
    });
    assert.equal(progress.stalled, true);
  });

  it("reports stalled only once while it stays stalled", () => {
    const progress = new Progress(0);
    progress.check(0, true, 7, STALL_MS);
    assert.equal(progress.check(STALL_MS, true, 7, STALL_MS)?.type, "stalled");
    assert.equal(progress.check(STALL_MS + TICK_MS, true, 7, STALL_MS), undefined);
    assert.equal(progress.check(10 * STALL_MS, true, 7, STALL_MS), undefined);
    assert.equal(progress.stalled, true);
  });

  it("measures from the last new frame, not from when the work began", () => {
    const progress = new Progress(0);
    progress.check(0, true, 7, STALL_MS);
    // A frame arrived at 10 s: the peer moves, the clock starts again there.
    assert.equal(progress.check(10_000, true, 8, STALL_MS), undefined);
    assert.equal(progress.check(10_000 + STALL_MS - 1, true, 8, STALL_MS), undefined);
    assert.deepEqual(progress.check(10_000 + STALL_MS, true, 8, STALL_MS), {
      type: "stalled",
      forMs: STALL_MS,
    });
  });

  it("measures from when work began waiting, not from the last idle frame", () => {
    // Idle for a long time, then a call goes out: the peer has had no time to answer yet.
    const progress = new Progress(0);
    progress.check(10 * STALL_MS, false, 7, STALL_MS);
    assert.equal(progress.check(10 * STALL_MS + TICK_MS, true, 7, STALL_MS), undefined);
  });

  it("reports progressing when the expected frame moves after a stall", () => {
    const progress = new Progress(0);
    progress.check(0, true, 7, STALL_MS);
    progress.check(STALL_MS, true, 7, STALL_MS);
    assert.deepEqual(progress.check(STALL_MS + TICK_MS, true, 8, STALL_MS), {
      type: "progressing",
    });
    assert.equal(progress.stalled, false);
    // Once: moving on further is not news.
    assert.equal(progress.check(STALL_MS + 2 * TICK_MS, true, 9, STALL_MS), undefined);
  });

  it("can stall again after progressing, and reports it again", () => {
    const progress = new Progress(0);
    progress.check(STALL_MS, true, 7, STALL_MS);
    progress.check(STALL_MS + TICK_MS, true, 8, STALL_MS);
    assert.deepEqual(progress.check(2 * STALL_MS + TICK_MS, true, 8, STALL_MS), {
      type: "stalled",
      forMs: STALL_MS,
    });
  });

  it("restart measures from the new connection", () => {
    // The new connection's first frame number and time: the wait on the old one does not count.
    const progress = new Progress(0);
    progress.check(0, true, 7, STALL_MS);
    progress.restart(STALL_MS - 1_000, 7);
    assert.equal(progress.check(STALL_MS, true, 7, STALL_MS), undefined);
    assert.equal(progress.check(2 * STALL_MS - 1_001, true, 7, STALL_MS), undefined);
    assert.equal(progress.check(2 * STALL_MS - 1_000, true, 7, STALL_MS)?.type, "stalled");
  });

  it("restart takes the frame number it is given as the one expected", () => {
    // A resume may start where the old connection left off, or the numbering starts over.
    const progress = new Progress(0);
    progress.check(0, true, 40, STALL_MS);
    progress.restart(1_000, 1);
    assert.deepEqual(progress.check(1_000 + STALL_MS, true, 1, STALL_MS), {
      type: "stalled",
      forMs: STALL_MS,
    });
  });
});

/** The session's streams on their own: the table, flow control and the pump, with a fake port. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GuestlinkError, isGuestlinkError } from "../../src/errors.ts";
import { MAX_CREDIT } from "../../src/session/flow-control.ts";
import { IdSpace } from "../../src/session/ids.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { MAX_LENT_BYTES, Streams, type StreamsPort } from "../../src/session/streams.ts";
import { ProtocolViolation } from "../../src/session/violation.ts";
import { encodeControl } from "../../src/wire/control.ts";
import { type Frame, FrameType } from "../../src/wire/frame.ts";
import { settle } from "../helpers/fake-clock.ts";

interface Sent {
  type: number;
  streamId: number;
  /** DATA and END: the bytes handed to `send`. */
  payload?: Uint8Array | undefined;
  /** WINDOW and RESET: the value handed to `sendControl`. */
  value?: unknown;
}

/** Limits as a peer's HELLO states them; large frames unless a test says otherwise. */
function limits(streamWindowBytes: number, sessionWindowBytes: number, maxFrameBytes = 1 << 20) {
  return { maxFrameBytes, streamWindowBytes, sessionWindowBytes };
}

function rig(opts: { streamWindow?: number; sessionWindow?: number } = {}) {
  const ids = new IdSpace("client");
  const sent: Sent[] = [];
  const state = { canSend: true, ended: false, released: 0, bytesSent: 0, bytesReceived: 0 };
  const port: StreamsPort = {
    send: (type, streamId, payload) => sent.push({ type, streamId, payload }),
    sendControl: (type, streamId, value) => sent.push({ type, streamId, value }),
    canSend: () => state.canSend,
    ended: () => state.ended,
    maybeFinishClosing: () => state.released++,
    counted: (s, r) => {
      state.bytesSent += s;
      state.bytesReceived += r;
    },
  };
  const streams = new Streams(port, ids, opts.streamWindow ?? 1024, opts.sessionWindow ?? 4096);
  /** Opens one of our streams, as a call does. */
  const openOurs = (name = "s") => streams.open(ids.allocate(), name);
  /** Opens one of the peer's streams, as an incoming CALL does. */
  const openPeers = (id: number, name = "p") => {
    ids.claimPeer(id, "stream");
    return streams.open(id, name);
  };
  /** The frames sent, DATA and END reduced to their type, stream and length. */
  const wire = () =>
    sent.map((s) =>
      s.type === FrameType.DATA
        ? `DATA ${s.streamId} ${s.payload?.length}`
        : s.type === FrameType.END
          ? `END ${s.streamId}`
          : s.type === FrameType.WINDOW
            ? `WINDOW ${s.streamId} ${(s.value as { credit: number }).credit}`
            : `RESET ${s.streamId}`,
    );
  return { ids, sent, state, streams, openOurs, openPeers, wire };
}

function frame(type: FrameType, streamId: number, payload: Uint8Array = new Uint8Array(0)): Frame {
  return { type, flags: 0, streamId, seq: 0, payload };
}

const data = (streamId: number, bytes: number) =>
  frame(FrameType.DATA, streamId, new Uint8Array(bytes).fill(7));
const windowFrame = (streamId: number, credit: number) =>
  frame(FrameType.WINDOW, streamId, encodeControl({ credit }));
const end = (streamId: number) => frame(FrameType.END, streamId);
const reset = (streamId: number, code = "CANCELLED", message = "stop") =>
  frame(FrameType.RESET, streamId, encodeControl({ code, message }));

function violates(fn: () => void, violation: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProtocolViolation, `expected a ProtocolViolation, got ${String(err)}`);
    assert.equal(err.violation, violation, err.message);
    return true;
  });
}

/** A reader that records what the stream delivers. */
function record(stream: SessionStream) {
  const got = { bytes: 0, chunks: 0, ended: false, error: undefined as GuestlinkError | undefined };
  stream.attach({
    data: (chunk) => {
      got.bytes += chunk.length;
      got.chunks++;
    },
    end: () => {
      got.ended = true;
    },
    error: (err) => {
      got.error = err;
    },
  });
  return got;
}

describe("Streams: credit and the pump", () => {
  it("takes the peer's stream window as credit, for streams opened before the limits and after", () => {
    const { streams, openOurs } = rig();
    const early = openOurs("early");
    // Before the peer's HELLO nothing may be sent: no credit at all.
    assert.equal(early.credit.available, 0);
    assert.equal(streams.credit.available, 0);
    streams.peerLimits(limits(300, 5000));
    assert.equal(early.credit.available, 300);
    assert.equal(openOurs("late").credit.available, 300);
    assert.equal(streams.credit.available, 5000);
  });

  it("sends DATA no larger than the stream's credit, and stops when it runs out", () => {
    const { streams, openOurs, wire } = rig();
    streams.peerLimits(limits(100, 5000));
    const s = openOurs();
    s.write(new Uint8Array(250));
    assert.deepEqual(wire(), ["DATA 1 100"]);
    assert.equal(s.queuedBytes, 150);
    assert.equal(s.credit.available, 0);
    assert.equal(streams.credit.available, 4900, "the session's credit went down with it");
  });

  it("sends DATA no larger than the session's credit, shared by all streams", () => {
    const { streams, openOurs, wire } = rig();
    streams.peerLimits(limits(1000, 300));
    openOurs("a").write(new Uint8Array(250));
    openOurs("b").write(new Uint8Array(250));
    assert.deepEqual(wire(), ["DATA 1 250", "DATA 3 50"]);
    assert.equal(streams.credit.available, 0);
  });

  it("cuts DATA at the largest frame the peer accepts", () => {
    const { streams, openOurs, wire } = rig();
    streams.peerLimits(limits(10_000, 10_000, 1024));
    openOurs().write(new Uint8Array(3000));
    assert.deepEqual(wire(), ["DATA 1 1024", "DATA 1 1024", "DATA 1 952"]);
  });

  it("sends chunks that lie one after another in one buffer as one DATA frame, uncopied", () => {
    const { streams, openOurs, wire, sent, state } = rig();
    state.canSend = false; // queue everything first, as while the transport drains
    streams.peerLimits(limits(10_000, 10_000, 1000));
    const s = openOurs();
    const buffer = new Uint8Array(4000).map((_, i) => i % 251);
    // Three reads side by side, then a gap, then a chunk of another buffer.
    s.write(buffer.subarray(0, 300));
    s.write(buffer.subarray(300, 700));
    s.write(buffer.subarray(700, 1500));
    s.write(buffer.subarray(1600, 1700));
    s.write(new Uint8Array(50).fill(9));
    state.canSend = true;
    streams.pump();
    // 1500 side by side cut at the frame limit, then the rest of them; the gap and the other
    // buffer are frames of their own.
    assert.deepEqual(wire(), ["DATA 1 1000", "DATA 1 500", "DATA 1 100", "DATA 1 50"]);
    const [first, second, third] = sent.map((f) => f.payload as Uint8Array);
    assert.equal(first?.buffer, buffer.buffer, "a view of the caller's buffer, not a copy");
    assert.deepEqual(first, buffer.subarray(0, 1000));
    assert.deepEqual(second, buffer.subarray(1000, 1500));
    assert.deepEqual(third, buffer.subarray(1600, 1700));
    assert.equal(s.queuedBytes, 0);
  });

  it("resumes on a WINDOW for the stream, and on one for the session (stream 0)", () => {
    const { streams, openOurs, wire, sent } = rig();
    streams.peerLimits(limits(100, 150));
    const s = openOurs();
    s.write(new Uint8Array(400));
    assert.deepEqual(wire(), ["DATA 1 100"]);
    streams.onWindow(windowFrame(1, 200));
    // The stream may send 200 more, but the session only 50 more.
    assert.deepEqual(wire().slice(1), ["DATA 1 50"]);
    sent.length = 0;
    streams.onWindow(windowFrame(0, 1000));
    assert.deepEqual(wire(), ["DATA 1 150"]);
    assert.equal(s.queuedBytes, 100);
  });

  it("makes no DATA while the port says it cannot send, and catches up on pump()", () => {
    const { streams, openOurs, wire, state } = rig();
    streams.peerLimits(limits(1000, 1000));
    state.canSend = false;
    openOurs().write(new Uint8Array(10));
    assert.deepEqual(wire(), []);
    state.canSend = true;
    streams.pump();
    assert.deepEqual(wire(), ["DATA 1 10"]);
  });

  it("sends END only after every queued byte, then reports the output done", async () => {
    const { streams, openOurs, wire } = rig();
    streams.peerLimits(limits(100, 1000));
    const s = openOurs();
    let done = false;
    void streams.outputDone(s).then(() => (done = true));
    s.write(new Uint8Array(150));
    s.end();
    assert.deepEqual(wire(), ["DATA 1 100"], "no END while 50 bytes wait for credit");
    await settle();
    assert.equal(done, false);
    streams.onWindow(windowFrame(1, 100));
    assert.deepEqual(wire(), ["DATA 1 100", "DATA 1 50", "END 1"]);
    await settle();
    assert.equal(done, true);
  });

  it("counts the DATA bytes sent and received", () => {
    const { streams, openOurs, state } = rig();
    streams.peerLimits(limits(1000, 1000));
    const s = openOurs();
    s.write(new Uint8Array(30));
    streams.onData(data(1, 12));
    assert.deepEqual([state.bytesSent, state.bytesReceived], [30, 12]);
  });
});

describe("Streams: frames from the peer", () => {
  it("takes WINDOW for the session and for a stream, and refuses either beyond 2^31-1", () => {
    const { streams, openOurs } = rig();
    streams.peerLimits(limits(100, 100));
    const s = openOurs();
    streams.onWindow(windowFrame(0, 50));
    streams.onWindow(windowFrame(1, 70));
    assert.equal(streams.credit.available, 150);
    assert.equal(s.credit.available, 170);
    // The largest grant a WINDOW may carry is 2^31-1: on top of credit already held it is too much.
    violates(() => streams.onWindow(windowFrame(0, MAX_CREDIT)), "FLOW_CONTROL");
    violates(() => streams.onWindow(windowFrame(1, MAX_CREDIT)), "FLOW_CONTROL");
  });

  it("takes a window grown to exactly 2^31-1", () => {
    const { streams, openOurs } = rig();
    streams.peerLimits(limits(1, 1));
    openOurs();
    streams.onWindow(windowFrame(0, MAX_CREDIT - 1));
    streams.onWindow(windowFrame(1, MAX_CREDIT - 1));
    assert.equal(streams.credit.available, MAX_CREDIT);
  });

  it("delivers DATA within the windows, and refuses DATA beyond the stream's window", () => {
    const { streams, openPeers } = rig({ streamWindow: 1024, sessionWindow: 4096 });
    const got = record(openPeers(2));
    streams.onData(data(2, 1000));
    assert.equal(got.bytes, 1000);
    violates(() => streams.onData(data(2, 25)), "FLOW_CONTROL");
    assert.equal(got.bytes, 1000, "nothing of the refused frame was delivered");
  });

  it("refuses DATA beyond the session's window, though within the stream's", () => {
    const { streams, openPeers } = rig({ streamWindow: 1024, sessionWindow: 1500 });
    openPeers(2);
    openPeers(4);
    streams.onData(data(2, 1000));
    violates(() => streams.onData(data(4, 501)), "FLOW_CONTROL");
    streams.onData(data(4, 500));
  });

  it("refuses DATA after the peer's END", () => {
    const { streams, openPeers } = rig();
    openPeers(2);
    streams.onData(data(2, 10));
    streams.onEnd(end(2));
    violates(() => streams.onData(data(2, 10)), "DATA_AFTER_END");
  });

  it("refuses DATA, END, WINDOW and RESET for a stream never opened, by either side", () => {
    const { streams, openOurs, openPeers } = rig();
    openOurs(); // 1
    openPeers(2);
    // 3 is ours but not yet allocated; 4 is the peer's but not yet claimed.
    for (const id of [3, 4]) {
      violates(() => streams.onData(data(id, 1)), "UNKNOWN_STREAM");
      violates(() => streams.onEnd(end(id)), "UNKNOWN_STREAM");
      violates(() => streams.onWindow(windowFrame(id, 1)), "UNKNOWN_STREAM");
      violates(() => streams.onReset(reset(id)), "UNKNOWN_STREAM");
    }
  });

  it("ignores frames for a stream that is gone (they crossed its close), granting DATA's session credit back", () => {
    const { streams, openOurs, openPeers, wire, sent, state } = rig({
      streamWindow: 1024,
      sessionWindow: 1024,
    });
    streams.peerLimits(limits(1000, 1000));
    openOurs().reset();
    openPeers(2).reset();
    assert.deepEqual(wire(), ["RESET 1", "RESET 2"]);
    assert.equal(streams.size, 0);
    sent.length = 0;
    for (const id of [1, 2]) {
      streams.onEnd(end(id));
      streams.onWindow(windowFrame(id, 10));
      streams.onReset(reset(id));
    }
    assert.deepEqual(wire(), []);
    assert.equal(state.released, 2, "no stream was released twice");
    // 600 bytes nobody will read: the session's window gets them back (600 >= half of 1024).
    streams.onData(data(1, 600));
    assert.deepEqual(wire(), ["WINDOW 0 600"]);
    assert.equal(streams.window.available, 1024);
  });

  it("refuses DATA for a stream that is gone when it is beyond the session's window", () => {
    const { streams, openOurs } = rig({ sessionWindow: 1024 });
    openOurs().reset();
    violates(() => streams.onData(data(1, 1025)), "FLOW_CONTROL");
  });

  it("fails a stream the peer resets with STREAM_RESET, dropping what was queued", () => {
    const { streams, openOurs, wire, state } = rig();
    streams.peerLimits(limits(10, 1000));
    const s = openOurs();
    const got = record(s);
    s.write(new Uint8Array(50));
    streams.onReset(reset(1, "EACCES", "not allowed"));
    assert.equal(got.error?.code, "STREAM_RESET");
    assert.deepEqual(got.error?.details, { code: "EACCES", by: "peer" });
    assert.match(got.error?.message ?? "", /not allowed/);
    assert.equal(s.closed, true);
    assert.equal(streams.size, 0);
    assert.equal(state.released, 1);
    assert.throws(
      () => s.write(new Uint8Array(1)),
      (err: unknown) => isGuestlinkError(err) && err.code === "STREAM_RESET",
    );
    // More credit sends nothing: the queued bytes went with the stream.
    streams.onWindow(windowFrame(0, 100));
    assert.deepEqual(wire(), ["DATA 1 10"]);
  });
});

describe("Streams: granting credit back", () => {
  it("grants a stream's and the session's credit back once half of each window is consumed", () => {
    const { streams, openPeers, wire } = rig({ streamWindow: 1000, sessionWindow: 3000 });
    const s = openPeers(2);
    record(s);
    streams.onData(data(2, 400));
    s.consumed(400);
    assert.deepEqual(wire(), [], "400 bytes is less than half a window");
    streams.onData(data(2, 200));
    s.consumed(200);
    assert.deepEqual(wire(), ["WINDOW 2 600"]);
    // The stream's window is open again for its full size.
    assert.equal(s.window.available, 1000);
    streams.onData(data(2, 1000));
    s.consumed(1000);
    // 1600 consumed on the session, more than half of 3000.
    assert.deepEqual(wire(), ["WINDOW 2 600", "WINDOW 2 1000", "WINDOW 0 1600"]);
    assert.equal(streams.window.available, 3000);
  });

  it("lends the credit of DATA held after a gap at once, and takes it back as it is consumed", () => {
    const { streams, openPeers, wire } = rig({ streamWindow: 1000, sessionWindow: 3000 });
    const s = openPeers(2);
    record(s);
    streams.onData(data(2, 1000));
    // The stream's window is used up; two frames after a gap are held while one is sent again.
    const held = [data(2, 300), data(2, 200)];
    for (const f of held) streams.onHeldData(f);
    assert.deepEqual(wire(), ["WINDOW 2 300", "WINDOW 0 300", "WINDOW 2 200", "WINDOW 0 200"]);
    // Filled and delivered (the resent frame arrives within the loan): nothing beyond a window.
    streams.onData(data(2, 300));
    streams.onData(data(2, 200));
    s.consumed(1500);
    // The first 500 consumed paid the loan back; the other 1000 are granted as usual.
    assert.deepEqual(wire().slice(4), ["WINDOW 2 1000"]);
    assert.equal(s.window.available, 1000);
  });

  it("lends nothing for DATA held on a stream that is gone, or beyond MAX_LENT_BYTES", () => {
    const { streams, openPeers, wire } = rig({ streamWindow: 1000, sessionWindow: 3000 });
    openPeers(2);
    streams.onHeldData(data(4, 100));
    streams.onHeldData(data(2, MAX_LENT_BYTES + 1));
    assert.deepEqual(wire(), []);
  });

  it("lends on both windows or neither: a stream still in debt gets no loan the session could give", () => {
    const { streams, openPeers, wire } = rig({
      streamWindow: 2 * MAX_LENT_BYTES,
      sessionWindow: 4 * MAX_LENT_BYTES,
    });
    const two = openPeers(2);
    const four = openPeers(4);
    record(two);
    record(four);
    streams.onHeldData(data(2, MAX_LENT_BYTES));
    // Stream 4's reads pay the session's loan back; stream 2 still owes all of its own.
    streams.onData(data(4, MAX_LENT_BYTES));
    four.consumed(MAX_LENT_BYTES);
    assert.equal(streams.window.lent, 0);
    const sent = wire().length;
    const available = two.window.available;
    streams.onHeldData(data(2, 100));
    // A WINDOW for stream 2 now would let the peer send past what stream 2 accepts.
    assert.deepEqual(wire().slice(sent), []);
    assert.equal(two.window.available, available);
  });

  it("grants nothing once the session has ended", () => {
    const { streams, openPeers, wire, state } = rig({ streamWindow: 100, sessionWindow: 100 });
    const s = openPeers(2);
    streams.onData(data(2, 100));
    state.ended = true;
    s.consumed(100);
    assert.deepEqual(wire(), []);
  });

  it("gives the session back what a stream that went received and nobody consumed", () => {
    const { streams, openPeers, wire } = rig({ streamWindow: 1000, sessionWindow: 1000 });
    openPeers(2);
    streams.onData(data(2, 700));
    // No reader ever came: the bytes sit in the stream's inbox when the peer resets it.
    streams.onReset(reset(2));
    assert.deepEqual(wire(), ["WINDOW 0 700"]);
  });
});

describe("Streams: streams going away", () => {
  it("releases a stream once both directions ended, in either order", () => {
    const { streams, openOurs, state } = rig();
    streams.peerLimits(limits(100, 100));
    const a = openOurs("a");
    const b = openOurs("b");
    // a: our END goes first, then the peer's.
    a.end();
    assert.equal(state.released, 0);
    streams.onEnd(end(1));
    assert.equal(state.released, 1);
    // b: the peer's END first, then ours.
    streams.onEnd(end(3));
    assert.equal(state.released, 1);
    b.end();
    assert.equal(state.released, 2);
    assert.equal(streams.size, 0);
  });

  it("releases a stream the application resets, telling the peer why", () => {
    const { streams, openOurs, sent, state } = rig();
    openOurs().reset("CANCELLED", "changed my mind");
    assert.deepEqual(sent, [
      {
        type: FrameType.RESET,
        streamId: 1,
        value: { code: "CANCELLED", message: "changed my mind" },
      },
    ]);
    assert.equal(state.released, 1);
    assert.equal(streams.size, 0);
  });

  it("failAll fails every stream with the reason and forgets them all", () => {
    const { streams, openOurs, openPeers, wire } = rig();
    streams.peerLimits(limits(10, 1000));
    const a = openOurs();
    const gotA = record(a);
    const gotB = record(openPeers(2));
    a.write(new Uint8Array(50));
    const reason = new GuestlinkError("SESSION_CLOSED", "the session ended");
    streams.failAll(reason);
    assert.equal(gotA.error, reason);
    assert.equal(gotB.error, reason);
    assert.equal(streams.size, 0);
    streams.onWindow(windowFrame(1, 100));
    assert.deepEqual(wire(), ["DATA 1 10"], "what a failed stream had queued is not sent");
  });
});

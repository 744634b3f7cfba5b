/**
 * Getting numbered frames across on its own: a real Outbox writing to one end of a memory pair
 * (the other end decoded, to see what went on the wire), a fake port and a fake clock.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type GuestlinkError, isGuestlinkError } from "../../src/errors.ts";
import { recycleFrom } from "../../src/recycle.ts";
import { Connection, type ConnectionOwner } from "../../src/session/connection.ts";
import { Delivery, type DeliveryPort } from "../../src/session/delivery.ts";
import { newSessionStats } from "../../src/session/events.ts";
import { Outbox } from "../../src/session/outbox.ts";
import {
  ACK_EVERY_FRAMES,
  Arrival,
  MAX_RESEND_ASKS,
  RESEND_ALL,
  RESEND_WAIT_MAX_MS,
  RESEND_WAIT_MIN_MS,
} from "../../src/session/receive-sequence.ts";
import { ProtocolViolation } from "../../src/session/violation.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { FrameDecoder } from "../../src/wire/decode.ts";
import { FrameEncoder } from "../../src/wire/encode.ts";
import { type Frame, FrameType } from "../../src/wire/frame.ts";
import { FakeClock, settle } from "../helpers/fake-clock.ts";

const NO_OWNER: ConnectionOwner = {
  frame: () => {},
  afterRead: () => {},
  readingPaused: () => false,
  readingResumed: () => Promise.resolve(),
  lost: () => {},
};

function rig(replayBufferBytes = 1024 * 1024) {
  const clock = new FakeClock();
  const [ours, theirs] = memoryPair();
  const outbox = new Outbox(
    ours,
    new FrameEncoder(),
    { failed: (err) => assert.fail(err), drained: () => {} },
    replayBufferBytes,
  );
  // What the peer reads: every frame the outbox wrote, decoded, in order.
  const written: Frame[] = [];
  const decoder = new FrameDecoder();
  void (async () => {
    for await (const chunk of theirs) written.push(...decoder.push(chunk));
  })();
  // The connection the port names: only its state, decoder and description matter here.
  const conn = new Connection(ours, new FrameDecoder(), NO_OWNER, undefined, clock.now());
  conn.handshaking = false;
  const stats = newSessionStats();
  const state = {
    conn: conn as Connection | undefined,
    acksAtOnce: false,
    acks: [] as { received: number; resend?: number }[],
    acknowledged: 0,
    lost: [] as GuestlinkError[],
  };
  const port: DeliveryPort = {
    conn: () => state.conn,
    description: () => "the peer",
    sendControl: (type, streamId, value, sequenced) => {
      // ACKs are the only frames delivery sends: on stream 0, and never numbered themselves.
      assert.deepEqual([type, streamId, sequenced], [FrameType.ACK, 0, false]);
      state.acks.push(value as { received: number; resend?: number });
    },
    sendAhead: (type, value) => {
      // Asks to send again go ahead of the backlog; they are ACKs too.
      assert.equal(type, FrameType.ACK);
      state.acks.push(value as { received: number; resend?: number });
    },
    acksAtOnce: () => state.acksAtOnce,
    maybeFinishClosing: () => state.acknowledged++,
    unhealed: (err) => state.lost.push(err),
  };
  const delivery = new Delivery(
    port,
    { clock, outbox, stats, giveUpAfterMs: 0 },
    replayBufferBytes,
  );
  /** Queues `n` numbered frames of `bytes` payload bytes each, and lets them be written and read. */
  const sendFrames = async (n: number, bytes = 8) => {
    for (let i = 0; i < n; i++) outbox.send(FrameType.DATA, 1, new Uint8Array(bytes), true);
    await settle();
  };
  return { clock, outbox, written, conn, stats, state, delivery, sendFrames };
}

function arriving(seq: number): Frame {
  return { type: FrameType.DATA, flags: 0, streamId: 1, seq, payload: new Uint8Array(10) };
}

function violates(fn: () => void, violation: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProtocolViolation, `expected a ProtocolViolation, got ${String(err)}`);
    assert.equal(err.violation, violation, err.message);
    return true;
  });
}

/**
 * A read buffer (a Node Buffer, as the socket transports read into) whose owner records the bytes
 * given back, and DATA frames with payloads in it.
 */
function readBuffer() {
  const buffer = Buffer.alloc(64 * 1024, 7);
  const back: number[] = [];
  recycleFrom(buffer.buffer, {
    share() {},
    adopt() {},
    release: (view) => back.push(view.byteOffset - buffer.byteOffset),
  });
  const frame = (seq: number, at: number, bytes: number): Frame => ({
    type: FrameType.DATA,
    flags: 0,
    streamId: 1,
    seq,
    payload: buffer.subarray(at, at + bytes),
  });
  return { buffer, back, frame };
}

describe("Delivery: read buffers given back", () => {
  it("gives back the bytes of a duplicate, and of a small held frame it holds a copy of", () => {
    const { delivery } = rig();
    const { buffer, back, frame } = readBuffer();
    delivery.arrived(frame(1, 0, 100));
    assert.equal(delivery.arrived(frame(1, 1000, 100)), Arrival.DUPLICATE);
    assert.deepEqual(back, [1000], "the duplicate's bytes come back at once");
    assert.equal(delivery.arrived(frame(3, 2000, 100)), Arrival.HELD);
    assert.deepEqual(back, [1000, 2000], "held as a copy: the bytes read come back");
    // The buffer is read into again: what was held must not change.
    buffer.fill(9, 2000, 2100);
    assert.equal(delivery.arrived(frame(2, 3000, 100)), Arrival.NEXT);
    const held = delivery.takeHeld() as Frame;
    assert.equal(held.seq, 3);
    assert.deepEqual([...new Set(held.payload)], [7], "the held copy kept its own bytes");
    assert.notEqual(held.payload.buffer, buffer.buffer);
  });

  it("gives back the bytes of large frames it held, when their connection is replaced", () => {
    const { delivery } = rig();
    const { back, frame } = readBuffer();
    delivery.arrived(frame(1, 0, 100));
    assert.equal(delivery.arrived(frame(3, 8192, 8192)), Arrival.HELD);
    assert.deepEqual(back, [], "held as it is, its bytes are in use");
    delivery.rx.newConnection();
    assert.deepEqual(back, [8192]);
  });
});

describe("Delivery: what arrives", () => {
  it("delivers frames in order, and neither a repeat nor a frame after a gap", () => {
    const { delivery } = rig();
    assert.equal(delivery.arrived(arriving(1)), Arrival.NEXT);
    assert.equal(delivery.arrived(arriving(2)), Arrival.NEXT);
    assert.equal(delivery.arrived(arriving(2)), Arrival.DUPLICATE);
    assert.equal(delivery.arrived(arriving(4)), Arrival.HELD);
    assert.equal(delivery.rx.received, 2);
  });

  it("asks for just the frames missing after a gap, and delivers what it held once they come", () => {
    const { delivery, state, stats } = rig();
    delivery.arrived(arriving(1));
    delivery.arrived(arriving(2));
    assert.equal(delivery.arrived(arriving(4)), Arrival.HELD);
    assert.equal(delivery.arrived(arriving(5)), Arrival.HELD);
    // One ask for the one loss, however many frames follow it: 3 only, 4 and 5 are held.
    assert.deepEqual(state.acks, [{ received: 2, resend: 3 }]);
    assert.equal(stats.resendAsks, 1);
    assert.equal(delivery.arrived(arriving(3)), Arrival.NEXT);
    assert.deepEqual(
      [delivery.takeHeld()?.seq, delivery.takeHeld()?.seq, delivery.takeHeld()],
      [4, 5, undefined],
    );
    assert.equal(delivery.rx.received, 5);
  });

  it("asks for everything after what it has when a damaged frame is followed by nothing, if the connection is live", async () => {
    const { clock, delivery, conn, state } = rig();
    delivery.arrived(arriving(1));
    const bytes = new FrameEncoder().encode({
      type: FrameType.DATA,
      streamId: 1,
      seq: 2,
      payload: Uint8Array.of(1, 2, 3),
    });
    const last = bytes.length - 1;
    bytes[last] = (bytes[last] as number) ^ 0xff; // the payload no longer matches its checksum
    assert.deepEqual(conn.decoder.push(bytes), []);
    state.conn = undefined;
    delivery.afterRead(conn);
    await clock.advance(RESEND_WAIT_MIN_MS);
    assert.deepEqual(state.acks, [], "not on a connection that is no longer the live one");
    state.conn = conn;
    conn.decoder.push(bytes);
    delivery.afterRead(conn);
    // It waits a moment for a frame that would show what is missing, then asks for all.
    assert.deepEqual(state.acks, []);
    await clock.advance(RESEND_WAIT_MIN_MS);
    assert.deepEqual(state.acks, [{ received: 1, resend: RESEND_ALL }]);
  });

  it("lets the connection go as FRAMES_LOST when asking again does not bring the frame", async () => {
    const { clock, delivery, state } = rig();
    delivery.arrived(arriving(1));
    delivery.arrived(arriving(3));
    for (let i = 0; i < MAX_RESEND_ASKS + 1; i++) await clock.advance(RESEND_WAIT_MAX_MS);
    assert.equal(state.acks.length, MAX_RESEND_ASKS);
    assert.equal(state.lost.length, 1);
    assert.equal(state.lost[0]?.code, "FRAMES_LOST");
    assert.equal(state.lost[0]?.details?.expected, 2);
  });
});

describe("Delivery: acknowledging", () => {
  it("sends an ACK after ACK_EVERY_FRAMES frames, or when forced and anything is new", () => {
    const { delivery, state } = rig();
    for (let seq = 1; seq < ACK_EVERY_FRAMES; seq++) {
      delivery.arrived(arriving(seq));
      delivery.maybeAck(false);
    }
    assert.deepEqual(state.acks, []);
    delivery.arrived(arriving(ACK_EVERY_FRAMES));
    delivery.maybeAck(false);
    assert.deepEqual(state.acks, [{ received: ACK_EVERY_FRAMES }]);
    delivery.maybeAck(true);
    assert.equal(state.acks.length, 1, "nothing new to acknowledge");
    delivery.arrived(arriving(ACK_EVERY_FRAMES + 1));
    delivery.maybeAck(true);
    assert.deepEqual(state.acks[1], { received: ACK_EVERY_FRAMES + 1 });
  });

  it("acknowledges every frame when the port says so (closing with confirmsClose)", () => {
    const { delivery, state } = rig();
    state.acksAtOnce = true;
    delivery.arrived(arriving(1));
    delivery.maybeAck(false);
    delivery.arrived(arriving(2));
    delivery.maybeAck(false);
    assert.deepEqual(state.acks, [{ received: 1 }, { received: 2 }]);
  });

  it("sends no ACK without a connection, or while it is handshaking", () => {
    const { delivery, state, conn } = rig();
    delivery.arrived(arriving(1));
    state.conn = undefined;
    delivery.maybeAck(true);
    state.conn = conn;
    conn.handshaking = true;
    delivery.maybeAck(true);
    assert.deepEqual(state.acks, []);
    conn.handshaking = false;
    delivery.maybeAck(true);
    assert.deepEqual(state.acks, [{ received: 1 }]);
  });
});

describe("Delivery: the peer's ACKs", () => {
  it("forgets the frames an ACK covers, and tells the port", async () => {
    const { delivery, outbox, state, sendFrames } = rig();
    await sendFrames(5);
    assert.deepEqual(outbox.kept, { frames: 5, bytes: 5 * 40 });
    delivery.onAck({ received: 3 });
    assert.deepEqual(outbox.kept, { frames: 2, bytes: 2 * 40 });
    assert.equal(state.acknowledged, 1);
    delivery.onAck({ received: 5 });
    assert.deepEqual(outbox.kept, { frames: 0, bytes: 0 });
    assert.equal(state.acknowledged, 2);
  });

  it("refuses an ACK of a frame never sent, with or without resend", async () => {
    const { delivery, sendFrames, state } = rig();
    violates(() => delivery.onAck({ received: 1 }), "BAD_ACK");
    await sendFrames(3);
    violates(() => delivery.onAck({ received: 4 }), "BAD_ACK");
    violates(() => delivery.onAck({ received: 4, resend: 4 }), "BAD_ACK");
    delivery.onAck({ received: 3 });
    assert.equal(state.acknowledged, 1);
  });

  it("answers an ACK with resend by writing again just the kept frames it asks for", async () => {
    const { delivery, written, stats, sendFrames } = rig();
    await sendFrames(6);
    delivery.onAck({ received: 0, resend: 1 });
    await settle();
    // The peer lacks 1 only (it holds 2 to 6): just 1 goes again.
    assert.deepEqual(
      written.map((f) => f.seq),
      [1, 2, 3, 4, 5, 6, 1],
    );
    assert.equal(stats.framesResent, 1);
  });

  it("answers an ACK with resend up to the end by writing again every kept frame after `received`", async () => {
    const { delivery, outbox, written, stats, sendFrames } = rig();
    await sendFrames(5);
    assert.deepEqual(
      written.map((f) => f.seq),
      [1, 2, 3, 4, 5],
    );
    delivery.onAck({ received: 2, resend: RESEND_ALL });
    await settle();
    // The peer has 1 and 2: those are forgotten, 3 to 5 go again, byte for byte.
    assert.deepEqual(
      written.map((f) => f.seq),
      [1, 2, 3, 4, 5, 3, 4, 5],
    );
    assert.deepEqual(written.slice(5), written.slice(2, 5));
    assert.equal(outbox.kept.frames, 3);
    assert.equal(stats.resendsAnswered, 1);
    assert.equal(stats.framesResent, 3);
  });

  it("writes again what is kept, large payloads included", async () => {
    const { delivery, written, sendFrames } = rig();
    // Over 4 KiB a payload is written uncopied, kept apart from its header.
    await sendFrames(2, 10_000);
    delivery.onAck({ received: 0, resend: RESEND_ALL });
    await settle();
    assert.deepEqual(
      written.map((f) => [f.seq, f.payload.length]),
      [
        [1, 10_000],
        [2, 10_000],
        [1, 10_000],
        [2, 10_000],
      ],
    );
  });

  it("reports FRAMES_LOST when the frames asked for are no longer kept", async () => {
    const { delivery, outbox, written, state, stats, sendFrames } = rig(1024);
    // Five frames of 332 bytes: the replay buffer of 1 KiB keeps only the last three.
    await sendFrames(5, 300);
    assert.equal(outbox.kept.frames, 3);
    delivery.onAck({ received: 1, resend: RESEND_ALL });
    await settle();
    assert.equal(state.lost.length, 1);
    const err = state.lost[0];
    assert.ok(isGuestlinkError(err));
    assert.equal(err.code, "FRAMES_LOST");
    assert.equal(err.details?.received, 1);
    assert.equal(err.details?.replayBufferBytes, 1024);
    assert.equal(written.length, 5, "nothing was written again");
    assert.equal(stats.resendsAnswered, 0);
    // From a frame still kept, a resend can be answered.
    delivery.onAck({ received: 2, resend: RESEND_ALL });
    await settle();
    assert.equal(written.length, 8);
  });
});

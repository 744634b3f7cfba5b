/**
 * One connection on its own: its read loop over a memory pair, fed encoded frames by hand, with a
 * fake owner that records what it is handed.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GuestlinkError, isGuestlinkError } from "../../src/errors.ts";
import { Connection, type ConnectionOwner } from "../../src/session/connection.ts";
import { Keepalive } from "../../src/session/keepalive.ts";
import type { Timer } from "../../src/session/runtime.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { FrameDecoder } from "../../src/wire/decode.ts";
import { FrameEncoder } from "../../src/wire/encode.ts";
import { FrameType, HEADER_BYTES } from "../../src/wire/frame.ts";
import { FakeClock, settle } from "../helpers/fake-clock.ts";
import { concat } from "../helpers/wire.ts";

const encoder = new FrameEncoder();

/** A frame's bytes; `seq` tells frames apart. */
function bytesOf(seq: number, payloadBytes = 4): Uint8Array {
  return encoder.encode({
    type: FrameType.DATA,
    streamId: 1,
    seq,
    payload: new Uint8Array(payloadBytes).fill(seq),
  });
}

/** An owner that records everything; `paused` holds reading until `resume()`. */
class RecordingOwner implements ConnectionOwner {
  readonly frames: { conn: Connection; seq: number }[] = [];
  readonly reads: Connection[] = [];
  readonly losses: { conn: Connection; err: GuestlinkError | undefined }[] = [];
  paused = false;
  /** Called after each frame is recorded (a test's way to act in mid-read). */
  onFrame: ((conn: Connection) => void) | undefined;
  /** Called after each read (a test's way to look at the connection then). */
  onRead: ((conn: Connection) => void) | undefined;
  #resume: (() => void) | undefined;

  get seqs(): number[] {
    return this.frames.map((f) => f.seq);
  }

  frame(conn: Connection, frame: { seq: number }): void {
    this.frames.push({ conn, seq: frame.seq });
    this.onFrame?.(conn);
  }

  afterRead(conn: Connection): void {
    this.reads.push(conn);
    this.onRead?.(conn);
  }

  readingPaused(): boolean {
    return this.paused;
  }

  readingResumed(): Promise<void> {
    return new Promise((resolve) => (this.#resume = resolve));
  }

  resume(): void {
    this.paused = false;
    this.#resume?.();
  }

  lost(conn: Connection, err: GuestlinkError | undefined): void {
    this.losses.push({ conn, err });
  }
}

function rig(opts: { highWaterMark?: number } = {}) {
  const clock = new FakeClock();
  const [peer, ours] = memoryPair(opts);
  const owner = new RecordingOwner();
  const conn = new Connection(ours, new FrameDecoder(), owner, "nonce-1", clock.now());
  let readDone = false;
  const reading = conn.read().then(() => {
    readDone = true;
  });
  /** Sends `chunks` from the peer, each as one chunk the connection reads at once. */
  const send = async (...chunks: Uint8Array[]) => {
    for (const chunk of chunks) peer.send([chunk]);
    await settle();
  };
  return { clock, peer, conn, owner, send, reading, readDone: () => readDone };
}

/** A timer that records being cancelled. */
function recordingTimer(log: string[], name: string): Timer {
  return { cancel: () => log.push(name) };
}

describe("Connection: reading", () => {
  it("hands each frame to the owner in order, and calls afterRead once per read", async () => {
    const { owner, send } = rig();
    await send(concat([bytesOf(1), bytesOf(2), bytesOf(3)]));
    assert.deepEqual(owner.seqs, [1, 2, 3]);
    assert.equal(owner.reads.length, 1);
    // A frame cut in two: the first read completes none, but is a read all the same.
    const four = bytesOf(4);
    await send(four.subarray(0, 10));
    assert.deepEqual([owner.seqs.length, owner.reads.length], [3, 2]);
    await send(four.subarray(10));
    assert.deepEqual(owner.seqs, [1, 2, 3, 4]);
    assert.equal(owner.reads.length, 3);
  });

  it("tells the keepalive the peer was heard, once per read that brought frames", async () => {
    const { clock, conn, send } = rig();
    conn.keepalive = new Keepalive(
      clock,
      { intervalMs: 1000, deadAfterMs: 5000 },
      { sendPing: () => {}, tick: () => {}, peerDead: () => {} },
    );
    const before = conn.keepalive.lastHeardAt;
    await clock.advance(100);
    await send(bytesOf(1).subarray(0, 5));
    assert.equal(conn.keepalive.lastHeardAt, before, "half a header is no sign of a frame");
    await send(bytesOf(1).subarray(5));
    assert.equal(conn.keepalive.lastHeardAt, before + 100);
  });

  it("reports the transport's end to the owner as lost with no error", async () => {
    const { peer, conn, owner, send, reading } = rig();
    await send(bytesOf(1));
    void peer.close(); // settles only once our end closes too: not this test's concern
    await reading;
    assert.deepEqual(owner.losses, [{ conn, err: undefined }]);
  });

  it("reports a broken transport to the owner as lost with its error", async () => {
    const { peer, conn, owner, reading } = rig();
    peer.abort(new Error("cable pulled"));
    await reading;
    assert.equal(owner.losses.length, 1);
    assert.equal(owner.losses[0]?.conn, conn);
    assert.equal(owner.losses[0]?.err?.code, "TRANSPORT_FAILED");
  });

  it("hands later frames, reads and the loss to the owner it was handed over to", async () => {
    const { peer, conn, owner, send, reading } = rig();
    await send(bytesOf(1));
    const next = new RecordingOwner();
    conn.handOver(next);
    assert.equal(conn.owner, next);
    await send(bytesOf(2));
    void peer.close(); // settles only once our end closes too: not this test's concern
    await reading;
    assert.deepEqual([owner.seqs, next.seqs], [[1], [2]]);
    assert.deepEqual([owner.reads.length, next.reads.length], [1, 1]);
    assert.deepEqual([owner.losses.length, next.losses.length], [0, 1]);
  });

  it("reads on for the successor the peer began in mid-stream on the same transport", async () => {
    const { conn, owner, send } = rig();
    const successorOwner = new RecordingOwner();
    const successor = new Connection(
      conn.transport,
      new FrameDecoder(),
      successorOwner,
      undefined,
      0,
    );
    // Frame 2 is the new connection's HELLO, say: the owner moves to the successor there.
    owner.onFrame = (c) => {
      if (owner.frames.length === 2) {
        c.successor = successor;
        c.drop(undefined);
      }
    };
    await send(concat([bytesOf(1), bytesOf(2), bytesOf(3)]));
    await send(bytesOf(4));
    assert.deepEqual(owner.seqs, [1, 2]);
    assert.deepEqual(successorOwner.seqs, [3, 4]);
    assert.ok(successorOwner.frames.every((f) => f.conn === successor));
    assert.equal(successorOwner.reads.length, 2);
  });
});

describe("Connection: holding reads back", () => {
  it("hands over nothing more while the owner pauses, so the transport holds the writer back", async () => {
    const { peer, owner, send } = rig({ highWaterMark: 100 });
    owner.paused = true;
    await send(bytesOf(1));
    assert.deepEqual(owner.seqs, [1], "what was read is handed over; the pause is for what comes");
    // 3 frames of 36 bytes: more than the transport holds unread.
    const below = [2, 3, 4].map((seq) => peer.send([bytesOf(seq)]));
    assert.deepEqual(below, [true, true, false]);
    let drained = false;
    void peer.drain().then(() => (drained = true));
    await settle();
    assert.deepEqual(owner.seqs, [1]);
    assert.equal(drained, false, "the writer waits for the reader");
    owner.resume();
    await settle();
    assert.deepEqual(owner.seqs, [1, 2, 3, 4]);
    assert.equal(drained, true);
  });
});

describe("Connection: its life", () => {
  it("opened() resolves ready and cancels the handshake timers", async () => {
    const { conn } = rig();
    const cancelled: string[] = [];
    conn.handshakeTimer = recordingTimer(cancelled, "handshake");
    conn.helloTimer = recordingTimer(cancelled, "hello");
    assert.equal(conn.handshaking, true);
    conn.opened();
    await conn.ready;
    assert.equal(conn.handshaking, false);
    assert.deepEqual(cancelled.sort(), ["handshake", "hello"]);
    assert.equal(conn.handshakeTimer, undefined);
    assert.equal(conn.helloTimer, undefined);
  });

  it("heardHello() cancels the handshake timers but leaves the connection handshaking", () => {
    const { conn } = rig();
    const cancelled: string[] = [];
    conn.handshakeTimer = recordingTimer(cancelled, "handshake");
    conn.helloTimer = recordingTimer(cancelled, "hello");
    conn.heardHello();
    assert.deepEqual(cancelled.sort(), ["handshake", "hello"]);
    assert.equal(conn.handshaking, true);
  });

  it("drop() stops the reading, rejects ready, settles lost with why, and says false the second time", async () => {
    const { conn, owner, send, reading, readDone } = rig();
    const cancelled: string[] = [];
    conn.handshakeTimer = recordingTimer(cancelled, "handshake");
    await send(bytesOf(1));
    const why = new GuestlinkError("PEER_UNRESPONSIVE", "silent");
    assert.equal(conn.drop(why), true);
    assert.equal(conn.over, true);
    assert.deepEqual(cancelled, ["handshake"]);
    await assert.rejects(conn.ready, (err) => err === why);
    assert.equal(await conn.lost, why);
    assert.equal(conn.drop(new GuestlinkError("SESSION_CLOSED", "again")), false);
    assert.equal(await conn.lost, why, "the first reason stands");
    await send(bytesOf(2));
    await reading;
    assert.equal(readDone(), true);
    assert.deepEqual(owner.seqs, [1]);
    // The loop ends without a word: whoever dropped the connection knows why.
    assert.deepEqual(owner.losses, []);
  });

  it("drop() in the middle of a read hands over none of the frames after it", async () => {
    const { owner, send } = rig();
    owner.onFrame = (c) => {
      if (owner.frames.length === 1) c.drop(undefined);
    };
    await send(concat([bytesOf(1), bytesOf(2), bytesOf(3)]));
    assert.deepEqual(owner.seqs, [1]);
    assert.equal(owner.reads.length, 0);
  });

  it("drop() with no error rejects ready with SESSION_CLOSED and settles lost with undefined", async () => {
    const { conn } = rig();
    conn.drop(undefined);
    await assert.rejects(
      conn.ready,
      (err) => isGuestlinkError(err) && err.code === "SESSION_CLOSED",
    );
    assert.equal(await conn.lost, undefined);
  });

  it("stops its keepalive when dropped", () => {
    const { clock, conn } = rig();
    conn.keepalive = new Keepalive(
      clock,
      { intervalMs: 1000, deadAfterMs: 5000 },
      { sendPing: () => {}, tick: () => {}, peerDead: () => {} },
    );
    conn.keepalive.start();
    assert.equal(clock.pendingTimers, 1);
    conn.drop(undefined);
    assert.equal(clock.pendingTimers, 0);
  });
});

describe("Connection: damaged and stuck frames", () => {
  it("takeDamage() reports a frame the decoder dropped, once", async () => {
    const { owner, send } = rig();
    const damage: boolean[] = [];
    owner.onRead = (c) => damage.push(c.takeDamage());
    const bad = bytesOf(1);
    const last = bad.length - 1;
    bad[last] = (bad[last] as number) ^ 0xff; // the payload no longer matches its checksum
    await send(bad);
    await send(bytesOf(2));
    await send(bad);
    assert.deepEqual(owner.seqs, [2]);
    assert.deepEqual(damage, [true, false, true]);
  });

  it("rescanStuckFrame() gives up a frame stuck mid-way only when no frame arrived since the last call", async () => {
    const { conn, owner, send } = rig();
    await send(bytesOf(1));
    // An earlier connection's half frame claiming 100 bytes, then a real frame it swallows.
    const stale = bytesOf(9, 100).subarray(0, HEADER_BYTES + 10);
    await send(stale, bytesOf(2));
    assert.deepEqual(owner.seqs, [1]);
    assert.ok(conn.decoder.bufferedBytes > 0);
    // Frame 1 came since the connection began: the partial frame may just be slow.
    assert.deepEqual(conn.rescanStuckFrame(), []);
    // Nothing since: it was stale. Its bytes are scanned again, and frame 2 is found in them.
    const found = conn.rescanStuckFrame();
    assert.deepEqual(
      found.map((f) => f.seq),
      [2],
    );
    assert.equal(conn.decoder.stats.abandoned, 1);
    assert.equal(conn.decoder.bufferedBytes, 0);
    assert.deepEqual(conn.rescanStuckFrame(), [], "nothing held: nothing to give up");
    // The frames found are the caller's to hand on: the owner was not given them.
    assert.deepEqual(owner.seqs, [1]);
  });

  it("rescanStuckFrame() leaves a frame in progress alone while frames keep arriving", async () => {
    const { conn, send } = rig();
    conn.rescanStuckFrame();
    await send(bytesOf(1), bytesOf(2, 100).subarray(0, HEADER_BYTES + 10));
    assert.deepEqual(conn.rescanStuckFrame(), []);
    assert.equal(conn.decoder.stats.abandoned, 0);
  });
});

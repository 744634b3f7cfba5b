/**
 * A scripted peer that breaks the protocol in every way the session must survive: each
 * violation ends the session with a coded error on our side, the peer is told why, and nothing
 * pending hangs.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import {
  MAX_RESEND_ASKS,
  RESEND_ALL,
  RESEND_WAIT_MIN_MS,
} from "../../src/session/receive-sequence.ts";
import { SessionRegistry } from "../../src/session/registry.ts";
import type { Session } from "../../src/session/session.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { encodeControl } from "../../src/wire/control.ts";
import { FrameEncoder } from "../../src/wire/encode.ts";
import { FrameType } from "../../src/wire/frame.ts";
import { FakeClock, fakeRuntime } from "../helpers/fake-clock.ts";
import { ScriptedPeer, scriptedPair, settle } from "../helpers/session.ts";

async function expectProtocolError(
  script: (peer: ReturnType<typeof scriptedPair>["peer"]) => void,
  violation: string,
  opts: { hello?: boolean } = {},
) {
  const { session, peer } = scriptedPair({ keepalive: false });
  session.handle("x", () => new Promise(() => {}));
  const pendingCall = session.call("anything", {}, { deadline: Infinity });
  if (opts.hello !== false) peer.hello();
  await settle();
  script(peer);
  const err = await session.closed;
  assert.ok(
    isGuestlinkError(err, "PROTOCOL_ERROR"),
    `expected PROTOCOL_ERROR, got ${err?.code}: ${err?.message}`,
  );
  assert.equal(err.details?.violation, violation);
  await assert.rejects(pendingCall, (e: unknown) => isGuestlinkError(e, "PROTOCOL_ERROR"));
  await settle();
  const told = peer.frames(FrameType.ERROR).find((f) => f.frame.streamId === 0);
  assert.equal(told?.body?.code, "PROTOCOL_ERROR", "the peer was told why");
  return err;
}

describe("session: hostile peers", () => {
  it("skips and counts frames before the peer's HELLO (stale bytes of an earlier connection)", async () => {
    const { session, peer } = scriptedPair({ keepalive: false });
    peer.send(FrameType.PING, 0, 0, { sentAt: 0 });
    peer.send(FrameType.CALL, 1, 1, { method: "x" });
    await settle();
    assert.equal(session.stats.staleFrames, 2);
    peer.hello();
    await session.ready;
    assert.equal(session.state, "open");
    session.abort();
  });

  it("says HELLO again each second until answered, then stops", async () => {
    const { clock, session, peer } = scriptedPair({ keepalive: false });
    await settle();
    await clock.advance(2_500);
    const hellos = peer.frames(FrameType.HELLO);
    assert.equal(hellos.length, 3, "the first HELLO and two repeats");
    const nonce = hellos[0]?.body?.nonce;
    assert.equal(typeof nonce, "string");
    for (const h of hellos) assert.equal(h.body?.nonce, nonce, "every repeat has the same nonce");
    peer.hello({ answers: nonce });
    await session.ready;
    await clock.advance(5_000);
    assert.equal(peer.frames(FrameType.HELLO).length, 3, "no HELLO after the answer");
    session.abort();
  });

  it("ignores a repeat of the HELLO it answered; another HELLO is DUPLICATE_HELLO", async () => {
    const clock = new FakeClock();
    const [ours, theirs] = memoryPair();
    const sessions: Session[] = [];
    const registry = new SessionRegistry(
      { role: "server", runtime: fakeRuntime(clock), keepalive: false },
      (session) => {
        sessions.push(session);
        session.handle("echo", (p) => p);
      },
    );
    registry.accept(ours);
    const peer = new ScriptedPeer(theirs);
    peer.hello({ nonce: "first" });
    await settle();
    assert.equal(peer.frames(FrameType.HELLO)[0]?.body?.answers, "first");
    peer.hello({ nonce: "first" });
    peer.send(FrameType.CALL, 1, 1, { method: "echo", params: "still here" });
    await settle();
    assert.equal(peer.frames(FrameType.RESULT).length, 1, "the repeat changed nothing");
    assert.equal(peer.frames(FrameType.HELLO).length, 1, "and was not answered again");
    peer.hello({ nonce: "second" });
    const err = await (sessions[0] as Session).closed;
    assert.ok(isGuestlinkError(err, "PROTOCOL_ERROR"));
    assert.equal(err.details?.violation, "DUPLICATE_HELLO");
  });

  it("a second HELLO", async () => {
    await expectProtocolError((p) => p.hello(), "DUPLICATE_HELLO");
  });

  it("an unknown frame type", async () => {
    await expectProtocolError((p) => p.send(99, 0, 1), "UNKNOWN_FRAME_TYPE");
  });

  it("a call id used twice", async () => {
    await expectProtocolError((p) => {
      p.send(FrameType.CALL, 2, 1, { method: "x" });
      p.send(FrameType.CALL, 2, 2, { method: "x" });
    }, "DUPLICATE_ID");
  });

  it("a call id from our half of the id space", async () => {
    await expectProtocolError((p) => p.send(FrameType.CALL, 3, 1, { method: "x" }), "BAD_ID");
  });

  it("data beyond the window granted", async () => {
    await expectProtocolError((p) => {
      // The session's default stream window is 1 MiB; one frame of 1 MiB + 1 byte is too much,
      // so send two that add up past it.
      p.send(FrameType.CALL, 2, 1, { method: "x", streams: { in: 4 } });
      p.send(FrameType.DATA, 4, 2, new Uint8Array(1024 * 1024));
      p.send(FrameType.DATA, 4, 3, new Uint8Array(1));
    }, "FLOW_CONTROL");
  });

  it("data on a stream never opened", async () => {
    await expectProtocolError(
      (p) => p.send(FrameType.DATA, 40, 1, Uint8Array.of(1)),
      "UNKNOWN_STREAM",
    );
  });

  it("a reply to a call that is not in flight", async () => {
    await expectProtocolError(
      (p) => p.send(FrameType.RESULT, 99, 1, { value: 1 }),
      "UNEXPECTED_REPLY",
    );
  });

  it("a control payload that is not msgpack", async () => {
    await expectProtocolError(
      (p) => p.send(FrameType.CALL, 2, 1, Uint8Array.of(0xc1)),
      "BAD_CONTROL_PAYLOAD",
    );
  });

  it("a message with a field of the wrong type", async () => {
    await expectProtocolError((p) => p.send(FrameType.CALL, 2, 1, { method: 42 }), "BAD_MESSAGE");
  });

  it("a HELLO missing its limits", async () => {
    await expectProtocolError(
      (p) => p.send(FrameType.HELLO, 0, 0, encodeControl({ protocol: [3, 3] })),
      "BAD_MESSAGE",
      { hello: false },
    );
  });

  it("a peer that speaks no common protocol version gets VERSION_MISMATCH, and so do we", async () => {
    const { session, peer } = scriptedPair({ keepalive: false });
    peer.hello({ protocol: [5, 6] });
    const err = await session.closed;
    assert.ok(isGuestlinkError(err, "VERSION_MISMATCH"));
    assert.match(err.message, /this side speaks 4\.\.4, the peer 5\.\.6/);
    await settle();
    assert.equal(peer.frames(FrameType.ERROR)[0]?.body?.code, "VERSION_MISMATCH");
    await assert.rejects(session.ready, (e: unknown) => isGuestlinkError(e, "VERSION_MISMATCH"));
  });

  it("a gap in sequence numbers asks the peer to send again, and ends with FRAMES_LOST when it never does", async () => {
    const { clock, session, peer } = scriptedPair({ keepalive: false, resume: false });
    peer.hello();
    await session.ready;
    peer.send(FrameType.CALL, 0, 1, { method: "a", notify: true });
    peer.send(FrameType.CALL, 0, 3, { method: "b", notify: true });
    await settle();
    const asks = () => peer.frames(FrameType.ACK).filter((a) => a.body?.resend !== undefined);
    // Frame 3 is held: just 2 is asked for.
    assert.deepEqual(
      asks().map((a) => a.body),
      [{ received: 1, resend: 2 }],
    );
    // The scripted peer never sends frame 2 again: the session asks a bounded number of times.
    for (let i = 0; i < 60 && session.state !== "closed"; i++) await clock.advance(1_000);
    const err = await session.closed;
    assert.ok(isGuestlinkError(err, "FRAMES_LOST"), String(err));
    // At least MAX_RESEND_ASKS asks, over at least the keepalive's dead timeout (15 s).
    assert.equal(err.details?.expected, 2);
    assert.ok((err.details?.asks as number) >= MAX_RESEND_ASKS, String(err.details?.asks));
    assert.equal(asks().length, err.details?.asks);
  });

  it("a frame sent again after a gap is taken, and the frames after it in order", async () => {
    const { session, peer } = scriptedPair({ keepalive: false });
    const seen: unknown[] = [];
    session.handle("n", (p) => {
      seen.push(p);
    });
    peer.hello();
    await session.ready;
    peer.send(FrameType.CALL, 0, 1, { method: "n", params: 1, notify: true });
    peer.send(FrameType.CALL, 0, 3, { method: "n", params: 3, notify: true });
    await settle();
    assert.deepEqual(seen, [1]);
    // The go-back: everything after 1, again.
    peer.send(FrameType.CALL, 0, 2, { method: "n", params: 2, notify: true });
    peer.send(FrameType.CALL, 0, 3, { method: "n", params: 3, notify: true });
    await settle();
    assert.deepEqual(seen, [1, 2, 3]);
    assert.equal(session.state, "open");
    assert.equal(session.stats.resendAsks, 1);
  });

  it("an unchecked payload is dropped and asked for again unless both sides agreed to go without", async () => {
    const { clock, session, peer } = scriptedPair({ keepalive: false });
    const seen: unknown[] = [];
    session.handle("n", (p) => {
      seen.push(p);
    });
    peer.hello({ uncheckedPayloads: true }); // we did not ask for it: checksums stay on
    await session.ready;
    const unchecked = new FrameEncoder({ payloadChecksum: false });
    const call = (params: number) => encodeControl({ method: "n", params, notify: true });
    peer.sendBytes(unchecked.encode({ type: FrameType.CALL, seq: 1, payload: call(1) }));
    await settle();
    assert.deepEqual(seen, []);
    assert.equal(session.wireStats.badPayloads, 1);
    // Nothing follows it, so after a moment everything after 0 is asked for.
    await clock.advance(RESEND_WAIT_MIN_MS);
    assert.deepEqual(
      peer.frames(FrameType.ACK).map((a) => a.body),
      [{ received: 0, resend: RESEND_ALL }],
    );
    peer.send(FrameType.CALL, 0, 1, call(1));
    await settle();
    assert.deepEqual(seen, [1]);
  });

  it("ignores a replayed frame it already has", async () => {
    const { session, peer } = scriptedPair({ keepalive: false });
    const seen: unknown[] = [];
    session.handle("n", (p) => {
      seen.push(p);
    });
    peer.hello();
    await session.ready;
    peer.send(FrameType.CALL, 0, 1, { method: "n", params: 1, notify: true });
    peer.send(FrameType.CALL, 0, 1, { method: "n", params: 1, notify: true });
    peer.send(FrameType.CALL, 0, 2, { method: "n", params: 2, notify: true });
    await settle();
    assert.deepEqual(seen, [1, 2]);
    assert.equal(session.state, "open");
  });

  it("garbage and stray log lines around frames are skipped and counted, the session goes on", async () => {
    const { session, peer } = scriptedPair({ keepalive: false });
    session.handle("ping", () => "pong");
    peer.sendBytes(new TextEncoder().encode("Welcome to the guest! login: \n"));
    peer.hello();
    peer.sendBytes(Uint8Array.of(0xab, 0x47, 0x4c, 0, 1, 2, 3));
    await session.ready;
    peer.send(FrameType.CALL, 2, 1, { method: "ping" });
    await settle();
    assert.deepEqual(peer.frames(FrameType.RESULT)[0]?.body, { value: "pong" });
    assert.ok(session.wireStats.skippedBytes >= 37);
  });

  it("a peer that never says HELLO times out the handshake with a clear error", async () => {
    const { session, peer, clock } = scriptedPair({ keepalive: false, handshakeTimeoutMs: 2000 });
    peer.sendBytes(new TextEncoder().encode("some other program talking\n"));
    await clock.advance(2000);
    const err = await session.closed;
    assert.ok(isGuestlinkError(err, "HANDSHAKE_TIMEOUT"));
    assert.match(err.message, /is a guestlink peer on the other end\?/);
  });

  it("finds a HELLO swallowed by a stale half frame when the handshake times out", async () => {
    const { session, peer, clock } = scriptedPair({
      keepalive: false,
      handshakeTimeoutMs: 2000,
    });
    const stale = new FrameEncoder()
      .encode({ type: FrameType.DATA, streamId: 1, payload: new Uint8Array(100_000) })
      .subarray(0, 500);
    peer.sendBytes(stale);
    peer.hello();
    await clock.advance(2000);
    const info = await session.ready;
    assert.equal(info.id, "scripted");
    assert.equal(session.wireStats.abandoned, 1);
  });

  it("a peer that goes silent is declared dead within the keepalive bounds, failing pending calls", async () => {
    const { session, peer, clock } = scriptedPair({
      keepalive: { intervalMs: 1000, deadAfterMs: 3000 },
    });
    peer.hello();
    await session.ready;
    const call = session.call("x", {}, { deadline: Infinity });
    await clock.advance(2999);
    assert.equal(session.state, "open");
    await clock.advance(1);
    const err = await session.closed;
    assert.ok(isGuestlinkError(err, "PEER_UNRESPONSIVE"));
    assert.match(err.message, /has not answered for 3000 ms/);
    await assert.rejects(call, (e: unknown) => isGuestlinkError(e, "PEER_UNRESPONSIVE"));
    assert.ok(peer.frames(FrameType.PING).length >= 3, "it probed before giving up");
  });

  it("a peer that is busy but answers is alive however long it takes", async () => {
    const { session, peer, clock } = scriptedPair({
      keepalive: { intervalMs: 1000, deadAfterMs: 3000 },
    });
    peer.hello();
    await session.ready;
    for (let i = 0; i < 30; i++) {
      await clock.advance(1000);
      for (const { body } of peer.frames(FrameType.PING).slice(i)) {
        peer.send(FrameType.PONG, 0, 0, { sentAt: body?.sentAt as number, wallTime: 0 });
      }
    }
    assert.equal(session.state, "open");
  });
});

/**
 * What one peer may make a listener or a session hold (docs/security.md#limits): sessions per
 * registry (one more is told LIMIT_EXCEEDED before any HELLO), connections waiting for their
 * HELLO (one more drops the oldest), and streams the peer has open in a session (a call that
 * would open more is answered LIMIT_EXCEEDED). Each time the others are unaffected.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SessionRegistry } from "../../src/session/registry.ts";
import type { Session } from "../../src/session/session.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import { FrameType } from "../../src/wire/frame.ts";
import { FakeClock, fakeRuntime } from "../helpers/fake-clock.ts";
import { ScriptedPeer, settle } from "../helpers/session.ts";

/** A scripted client whose sequenced frames are numbered for it. */
class Client {
  readonly peer: ScriptedPeer;
  #seq = 0;
  constructor(peer: ScriptedPeer) {
    this.peer = peer;
  }
  hello(nonce: string) {
    this.peer.hello({ nonce });
  }
  send(type: number, streamId: number, body?: Record<string, unknown> | Uint8Array) {
    this.#seq++;
    this.peer.send(type, streamId, this.#seq, body);
  }
}

function registry(limits: ConstructorParameters<typeof SessionRegistry>[2], extra = {}) {
  const clock = new FakeClock();
  const sessions: Session[] = [];
  const held: (() => void)[] = [];
  const reg = new SessionRegistry(
    { role: "server", runtime: fakeRuntime(clock), keepalive: false, ...extra },
    (session) => {
      sessions.push(session);
      session.handle("echo", (p) => p);
      session.handle("hold", () => new Promise<void>((resolve) => held.push(resolve)));
    },
    limits,
  );
  const connect = () => {
    const [ours, theirs] = memoryPair();
    reg.accept(ours);
    return new Client(new ScriptedPeer(theirs));
  };
  return { reg, sessions, connect, clock, held };
}

describe("limits: what one peer may hold", () => {
  it("a listener past maxSessions tells the new peer LIMIT_EXCEEDED before any HELLO; the others go on", async () => {
    const { connect, sessions } = registry({ maxSessions: 2 });
    const a = connect();
    const b = connect();
    a.hello("a");
    b.hello("b");
    await settle();
    const c = connect();
    c.hello("c");
    await settle();
    assert.equal(c.peer.frames(FrameType.HELLO).length, 0, "no answer to its HELLO");
    const told = c.peer.frames(FrameType.ERROR).find((f) => f.frame.streamId === 0);
    assert.equal(told?.body?.code, "LIMIT_EXCEEDED");
    assert.match(told?.body?.message as string, /2 sessions are open here already/);
    assert.deepEqual((told?.body?.details as Record<string, unknown>)?.limit, "maxSessions");
    assert.equal(sessions.length, 2);
    for (const client of [a, b]) {
      client.send(FrameType.CALL, 1, { method: "echo", params: "still here" });
    }
    await settle();
    for (const client of [a, b]) {
      assert.equal(client.peer.frames(FrameType.RESULT)[0]?.body?.value, "still here");
    }
    // One ends: there is room again.
    (sessions[0] as Session).abort();
    await settle();
    const d = connect();
    d.hello("d");
    await settle();
    assert.equal(d.peer.frames(FrameType.HELLO)[0]?.body?.answers, "d");
  });

  it("a new session past maxSessions lets go of the oldest one waiting to be resumed, not of a connected one", async () => {
    const { connect, sessions } = registry({ maxSessions: 2 });
    const a = connect();
    const b = connect();
    a.hello("a");
    b.hello("b");
    await settle();
    // a's connection is lost: its session waits for a to come back.
    a.peer.transport.abort();
    await settle();
    assert.equal((sessions[0] as Session).connection, undefined);
    const c = connect();
    c.hello("c");
    await settle();
    assert.equal(c.peer.frames(FrameType.HELLO)[0]?.body?.answers, "c", "c got in");
    const err = await (sessions[0] as Session).closed;
    assert.equal(err?.code, "RESUME_FAILED");
    assert.equal((sessions[1] as Session).state, "open", "b, connected, was not touched");
  });

  it("past maxHandshaking the oldest connection still silent is dropped; one that says HELLO gets in", async () => {
    const { connect, reg } = registry({ maxHandshaking: 3 });
    const silent = [connect(), connect(), connect(), connect(), connect()];
    await settle();
    assert.deepEqual(
      silent.map((s) => s.peer.ended),
      [true, true, false, false, false],
      "the two oldest were dropped",
    );
    assert.equal(reg.refused.handshaking, 2);
    const real = connect();
    real.hello("real");
    await settle();
    assert.equal(real.peer.frames(FrameType.HELLO)[0]?.body?.answers, "real");
    assert.equal(silent[2]?.peer.ended, true, "the oldest silent one made room");
  });

  it("stops reading from a peer whose running calls hold maxIncomingCallBytes, until they end", async () => {
    const { connect, held } = registry({}, { maxIncomingCallBytes: 5_000 });
    const c = connect();
    c.hello("c");
    await settle();
    const params = new Uint8Array(2_000);
    for (const id of [1, 3, 5]) {
      c.send(FrameType.CALL, id, { method: "hold", params });
      await settle();
    }
    assert.equal(held.length, 3, "three running: 6,000 bytes, past the bound");
    c.send(FrameType.CALL, 7, { method: "echo", params: "next" });
    await settle();
    assert.equal(c.peer.frames(FrameType.RESULT).length, 0, "not read while they run");
    for (const release of held.splice(0)) release();
    await settle();
    assert.deepEqual(
      c.peer.frames(FrameType.RESULT).map((f) => f.frame.streamId),
      [1, 3, 5, 7],
      "read again once they ended",
    );
  });

  it("a call that would pass maxPeerStreams is answered LIMIT_EXCEEDED; ending streams makes room", async () => {
    const { connect, sessions } = registry({}, { maxPeerStreams: 4 });
    const c = connect();
    c.hello("c");
    await settle();
    // Two calls of two streams each, which the peer never ends: the calls finish, the streams stay.
    c.send(FrameType.CALL, 1, { method: "echo", params: 1, streams: { a: 3, b: 5 } });
    c.send(FrameType.CALL, 7, { method: "echo", params: 2, streams: { a: 9, b: 11 } });
    c.send(FrameType.CALL, 13, { method: "echo", params: 3, streams: { a: 15 } });
    await settle();
    const results = c.peer.frames(FrameType.RESULT).map((f) => f.frame.streamId);
    assert.deepEqual(results, [1, 7]);
    const refused = c.peer.frames(FrameType.ERROR).find((f) => f.frame.streamId === 13);
    assert.equal(refused?.body?.code, "LIMIT_EXCEEDED");
    assert.match(refused?.body?.message as string, /at most 4 may be open at once/);
    // Data the peer sends on a refused call's stream is dropped, not a violation.
    c.send(FrameType.DATA, 15, new Uint8Array(10));
    c.send(FrameType.END, 3);
    c.send(FrameType.END, 5);
    await settle();
    c.send(FrameType.CALL, 17, { method: "echo", params: 4, streams: { a: 19 } });
    await settle();
    assert.ok(c.peer.frames(FrameType.RESULT).some((f) => f.frame.streamId === 17));
    assert.equal((sessions[0] as Session).state, "open");
    // A call without streams is never refused for them.
    c.send(FrameType.CALL, 21, { method: "echo", params: 5 });
    await settle();
    assert.ok(c.peer.frames(FrameType.RESULT).some((f) => f.frame.streamId === 21));
  });
});

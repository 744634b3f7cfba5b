/** The handshake's decisions on their own: pure functions of our options and the peer's HELLO. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  agreeUnchecked,
  agreeVersion,
  buildHello,
  isRepeatOf,
  type OwnIdentity,
  sortRedialAnswer,
} from "../../src/session/handshake.ts";
import {
  type Hello,
  HelloSchema,
  PROTOCOL_VERSIONS,
  parseMessage,
} from "../../src/session/messages.ts";
import { resolveSessionOptions } from "../../src/session/options.ts";
import { encodeControl } from "../../src/wire/control.ts";
import { type Frame, FrameType } from "../../src/wire/frame.ts";
import { FakeClock, fakeRuntime } from "../helpers/fake-clock.ts";

const [OUR_LOW, OUR_HIGH] = PROTOCOL_VERSIONS;

function own(clock = new FakeClock()): OwnIdentity {
  const options = resolveSessionOptions({
    role: "client",
    runtime: fakeRuntime(clock),
    peer: { id: "host-1", hostname: "hv01", version: "1.2.3" },
    maxFrameBytes: 64 * 1024,
    streamWindowBytes: 128 * 1024,
    sessionWindowBytes: 512 * 1024,
  });
  return { options, services: ["exec", "fs.read"], sessionId: "s-1", resumeToken: "tok-1" };
}

/** A peer's HELLO: a valid one, as built by a peer with its own identity, with `extra` on top. */
function peerHello(extra: Partial<Hello> = {}): Hello {
  return buildHello(own(), { sessionId: "peer-s", incarnation: "peer-inc-1", ...extra });
}

function helloFrame(value: unknown): Frame {
  return { type: FrameType.HELLO, flags: 0, streamId: 0, seq: 0, payload: encodeControl(value) };
}

describe("buildHello", () => {
  it("fills in identity, limits, protocol versions, incarnation and wall time", () => {
    const clock = new FakeClock();
    const identity = own(clock);
    const hello = buildHello(identity, {});
    assert.deepEqual(hello, {
      protocol: [OUR_LOW, OUR_HIGH],
      peer: { id: "host-1", hostname: "hv01", version: "1.2.3" },
      services: ["exec", "fs.read"],
      limits: {
        maxFrameBytes: 64 * 1024,
        streamWindowBytes: 128 * 1024,
        sessionWindowBytes: 512 * 1024,
      },
      sessionId: "s-1",
      resumeToken: "tok-1",
      incarnation: identity.options.runtime.incarnation,
      wallTime: clock.wallNow(),
    });
    // What we send must pass the peer's own check of it.
    assert.equal(parseMessage(HelloSchema, hello).ok, true);
  });

  it("stamps the wall time at the moment it is built", async () => {
    // The peer estimates the clock offset from it, so a HELLO built later must say later.
    const clock = new FakeClock();
    const identity = own(clock);
    const first = buildHello(identity, {}).wallTime;
    await clock.advance(1_500);
    assert.equal(buildHello(identity, {}).wallTime, first + 1_500);
  });

  it("adds the answer-specific fields of `extra`, and lets them override the defaults", () => {
    const hello = buildHello(own(), {
      nonce: "n-1",
      resumed: { received: 17 },
      confirmsClose: true,
      sessionId: "adopted",
    });
    assert.equal(hello.nonce, "n-1");
    assert.deepEqual(hello.resumed, { received: 17 });
    assert.equal(hello.confirmsClose, true);
    assert.equal(hello.sessionId, "adopted");
    assert.equal(hello.resumeToken, "tok-1", "what extra does not name is left as it was");
  });
});

describe("agreeVersion", () => {
  it("picks our highest version when the peer speaks beyond it", () => {
    assert.deepEqual(agreeVersion([0, OUR_HIGH + 3]), { version: OUR_HIGH });
  });

  it("picks the peer's highest when that is the highest both speak", () => {
    assert.deepEqual(agreeVersion([0, OUR_LOW]), { version: OUR_LOW });
    assert.deepEqual(agreeVersion([OUR_LOW, OUR_HIGH]), { version: OUR_HIGH });
  });

  it("refuses a peer entirely newer, naming both ranges", () => {
    const answer = agreeVersion([OUR_HIGH + 1, OUR_HIGH + 2]);
    assert.ok("refusal" in answer);
    assert.match(answer.refusal, new RegExp(`this side speaks ${OUR_LOW}\\.\\.${OUR_HIGH}`));
    assert.match(answer.refusal, new RegExp(`the peer ${OUR_HIGH + 1}\\.\\.${OUR_HIGH + 2}`));
  });

  it("refuses a peer entirely older, naming both ranges", () => {
    const answer = agreeVersion([0, OUR_LOW - 1]);
    assert.ok("refusal" in answer);
    assert.match(answer.refusal, new RegExp(`${OUR_LOW}\\.\\.${OUR_HIGH}`));
    assert.match(answer.refusal, new RegExp(`the peer 0\\.\\.${OUR_LOW - 1}`));
  });
});

describe("agreeUnchecked", () => {
  it("goes without checksums only when both sides want it", () => {
    assert.equal(agreeUnchecked(true, peerHello({ uncheckedPayloads: true })), true);
    assert.equal(agreeUnchecked(false, peerHello({ uncheckedPayloads: true })), false);
    assert.equal(agreeUnchecked(true, peerHello({ uncheckedPayloads: false })), false);
    assert.equal(agreeUnchecked(false, peerHello({ uncheckedPayloads: false })), false);
  });

  it("keeps checksums when the peer's HELLO does not mention them", () => {
    // An older peer, or one that did not ask: absent is not consent.
    assert.equal(agreeUnchecked(true, peerHello()), false);
  });
});

describe("sortRedialAnswer", () => {
  const known = { sessionId: "peer-s", incarnation: "peer-inc-1" };

  it("is a resume when the same session of the same process answers `resumed`", () => {
    const hello = peerHello({ resumed: { received: 42 } });
    assert.deepEqual(sortRedialAnswer(hello, known, true, "the host"), {
      kind: "resumed",
      received: 42,
    });
  });

  it("is a restart with reason peer-restarted when the incarnation changed", () => {
    // Even a `resumed` from a new process cannot be believed: it holds none of our frames.
    const hello = peerHello({ incarnation: "peer-inc-2", resumed: { received: 42 } });
    const answer = sortRedialAnswer(hello, known, true, "the host");
    assert.equal(answer?.kind, "restarted");
    assert.ok(answer?.kind === "restarted");
    assert.equal(answer.reason, "peer-restarted");
    assert.match(answer.why, /^the host restarted/);
  });

  it("is a restart with the peer's reason when it refused the resume", () => {
    const hello = peerHello({
      resumeRefused: { reason: "replay-lost", message: "frames 3..9 were dropped" },
    });
    const answer = sortRedialAnswer(hello, known, true, "the guest");
    assert.ok(answer?.kind === "restarted");
    assert.equal(answer.reason, "replay-lost");
    assert.match(answer.why, /the guest could not resume the session: frames 3\.\.9 were dropped/);
  });

  it("is a restart when the same process answers for another session, whatever it says", () => {
    const hello = peerHello({ sessionId: "peer-s-other", resumed: { received: 1 } });
    const answer = sortRedialAnswer(hello, known, true, "the host");
    assert.ok(answer?.kind === "restarted");
    assert.equal(answer.reason, "refused");
  });

  it("is a refusal with no reason given when the same session answers neither way", () => {
    const answer = sortRedialAnswer(peerHello(), known, true, "the host");
    assert.ok(answer?.kind === "restarted");
    assert.equal(answer.reason, "refused");
    assert.match(answer.why, /no reason given/);
  });

  it("is undefined when we did not ask to resume", () => {
    assert.equal(sortRedialAnswer(peerHello(), known, false, "the host"), undefined);
    // Nor does a stray `resumed` make one out of a connection we did not dial to resume.
    const stray = peerHello({ resumed: { received: 5 } });
    assert.equal(sortRedialAnswer(stray, known, false, "the host"), undefined);
    const moved = peerHello({ incarnation: "peer-inc-2" });
    assert.equal(sortRedialAnswer(moved, known, false, "the host"), undefined);
  });
});

describe("isRepeatOf", () => {
  it("is a repeat when the HELLO carries the nonce already taken", () => {
    assert.equal(isRepeatOf("n-1", helloFrame(peerHello({ nonce: "n-1" }))), true);
  });

  it("is not a repeat when the nonce differs or is absent", () => {
    assert.equal(isRepeatOf("n-1", helloFrame(peerHello({ nonce: "n-2" }))), false);
    assert.equal(isRepeatOf("n-1", helloFrame(peerHello())), false);
  });

  it("is never a repeat when no nonce was taken on the connection", () => {
    assert.equal(isRepeatOf(undefined, helloFrame(peerHello({ nonce: "n-1" }))), false);
    assert.equal(isRepeatOf(undefined, helloFrame(peerHello())), false);
  });

  it("does not take an unreadable payload for a repeat, nor throw", () => {
    // A map of two entries cut off in its first key; whoever takes the frame next refuses it.
    const garbage: Frame = { ...helloFrame({}), payload: Uint8Array.of(0x82, 0xa5, 0x6e) };
    assert.equal(isRepeatOf("n-1", garbage), false);
    // A msgpack value that is not a map is unreadable as a HELLO too.
    assert.equal(isRepeatOf("n-1", helloFrame("n-1")), false);
  });
});

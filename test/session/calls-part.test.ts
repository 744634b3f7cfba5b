/** The session's calls on their own: CALL, RESULT, ERROR and CANCEL, with a fake port and clock. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AbortSignalLike } from "../../src/abort.ts";
import { GuestlinkError, isGuestlinkError } from "../../src/errors.ts";
import { type CallContext, RemoteError } from "../../src/session/call.ts";
import { Calls, type CallsPort } from "../../src/session/calls.ts";
import { DeadlineQueue } from "../../src/session/deadlines.ts";
import { IdSpace } from "../../src/session/ids.ts";
import { Streams } from "../../src/session/streams.ts";
import { ProtocolViolation } from "../../src/session/violation.ts";
import { decodeControl, encodeControl } from "../../src/wire/control.ts";
import { type Frame, FrameType, frameTypeName } from "../../src/wire/frame.ts";
import { FakeClock, settle } from "../helpers/fake-clock.ts";

interface Sent {
  type: number;
  streamId: number;
  /** The control value sent, decoded again (DATA: its length). */
  value: unknown;
}

/** The control value a recorded frame carried, as a map (empty when there was no frame). */
function fields(s: Sent | undefined): Record<string, unknown> {
  return (s?.value ?? {}) as Record<string, unknown>;
}

/** What handlers see as `ctx.session`: any object will do, the calls only pass it on. */
const SESSION = { name: "the session" };

function rig() {
  const clock = new FakeClock();
  const ids = new IdSpace("client");
  const sent: Sent[] = [];
  const state = {
    handshaking: false,
    closing: false,
    ended: false,
    finished: 0,
    notificationFailed: 0,
    refuse: undefined as GuestlinkError | undefined,
  };
  // The streams' port only needs to let stream output through; it records it with the rest.
  const streams = new Streams(
    {
      send: (type, streamId, payload) => sent.push({ type, streamId, value: payload?.length ?? 0 }),
      sendControl: (type, streamId, value) => sent.push({ type, streamId, value }),
      canSend: () => true,
      ended: () => false,
      maybeFinishClosing: () => {},
      counted: () => {},
    },
    ids,
    1024,
    4096,
  );
  streams.peerLimits({ maxFrameBytes: 1 << 20, streamWindowBytes: 1024, sessionWindowBytes: 4096 });
  const deadlines = new DeadlineQueue(clock);
  /** What waits for the handshake, while `state.handshaking`. */
  const queued: (() => void)[] = [];
  const port: CallsPort = {
    send: (type, streamId, payload) => sent.push({ type, streamId, value: decodeControl(payload) }),
    sendControl: (type, streamId, value) => sent.push({ type, streamId, value }),
    // Unless a test says the handshake is under way, it is long done: what waits runs at once.
    whenOpen: (fn) => (state.handshaking ? queued.push(fn) : fn()),
    isOpen: () => !state.handshaking,
    assertCanStartCall: () => {
      if (state.refuse) throw state.refuse;
    },
    goaway: () => state.closing,
    ended: () => state.ended,
    finished: () => state.finished++,
    notificationFailed: () => state.notificationFailed++,
  };
  const calls = new Calls(port, SESSION, { ids, streams, deadlines, clock }, 30_000);
  /** The frames sent, as "TYPE id". */
  const wire = () => sent.map((s) => `${frameTypeName(s.type)} ${s.streamId}`);
  /** The handshake is done: what waited for it runs. */
  const opened = () => {
    state.handshaking = false;
    for (const fn of queued.splice(0)) fn();
  };
  return { clock, ids, streams, sent, state, calls, wire, opened };
}

function frame(type: FrameType, streamId: number, value: unknown): Frame {
  return { type, flags: 0, streamId, seq: 0, payload: encodeControl(value) };
}

const call = (id: number, value: Record<string, unknown>) => frame(FrameType.CALL, id, value);
const result = (id: number, value: unknown) => frame(FrameType.RESULT, id, { value });

const rejectsWith = async (p: Promise<unknown>, code: string) => {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isGuestlinkError(err), `expected a GuestlinkError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
};

function violates(fn: () => void, violation: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProtocolViolation, `expected a ProtocolViolation, got ${String(err)}`);
    assert.equal(err.violation, violation, err.message);
    return true;
  });
}

/** A handler that runs until its signal aborts, then fails with the signal's reason. */
function untilAborted(_params: unknown, ctx: CallContext): Promise<never> {
  return new Promise((_resolve, reject) =>
    ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)),
  );
}

describe("Calls: calls we start", () => {
  it("a call cancelled during the handshake is never sent, nor its CANCEL, and is over at once", async () => {
    const { state, calls, wire, opened } = rig();
    state.handshaking = true;
    const call = calls.open("slow", {});
    call.cancel("changed my mind");
    await assert.rejects(call.result, (e) => isGuestlinkError(e, "CANCELLED"));
    opened();
    assert.deepEqual(wire(), []);
    await assert.rejects(call.confirmed, (e) => isGuestlinkError(e, "CANCELLED"));
    assert.equal(calls.inFlight, 0);
    assert.equal(calls.waiting, false);
    assert.equal(state.finished, 1);
  });

  it("sends a CALL with method, params and the time left, and resolves with the RESULT", async () => {
    const { clock, calls, sent, state } = rig();
    const c = calls.open("add", { a: 1, b: 2 }, { deadline: clock.now() + 5000 });
    assert.deepEqual(sent, [
      {
        type: FrameType.CALL,
        streamId: 1,
        value: { method: "add", params: { a: 1, b: 2 }, timeoutMs: 5000 },
      },
    ]);
    assert.equal(calls.inFlight, 1);
    assert.equal(calls.waiting, true);
    calls.onReply(result(1, 3));
    assert.equal(await c.result, 3);
    assert.equal(await c.confirmed, 3);
    assert.equal(calls.inFlight, 0);
    assert.equal(state.finished, 1);
    // The deadline went with the call: passing it sends nothing.
    await clock.advance(10_000);
    assert.equal(sent.length, 1);
  });

  it("gives a call the default deadline, names its streams, and uses new ids for each", () => {
    const { calls, sent } = rig();
    calls.open("exec", null, { streams: ["stdin", "stdout"] });
    calls.open("ping", null);
    assert.deepEqual(
      sent.map((s) => [s.streamId, s.value]),
      [
        [1, { method: "exec", params: null, timeoutMs: 30_000, streams: { stdin: 3, stdout: 5 } }],
        [7, { method: "ping", params: null, timeoutMs: 30_000 }],
      ],
    );
  });

  it("sends no timeoutMs for a call with no deadline", () => {
    const { calls, sent } = rig();
    calls.open("forever", null, { deadline: Number.POSITIVE_INFINITY });
    assert.deepEqual(sent[0]?.value, { method: "forever", params: null });
  });

  it("rejects with a RemoteError carrying the peer's code on an ERROR, and resets the call's streams", async () => {
    const { calls, wire } = rig();
    const c = calls.open("read", null, { streams: ["out"] });
    calls.onReply(frame(FrameType.ERROR, 1, { code: "ENOENT", message: "no such file" }));
    await assert.rejects(c.result, (err: unknown) => {
      assert.ok(err instanceof RemoteError);
      // Not one of ours: the code is REMOTE_ERROR, the peer's code is kept as it came.
      assert.equal(err.code, "REMOTE_ERROR");
      assert.equal(err.remoteCode, "ENOENT");
      assert.equal(err.message, "no such file");
      return true;
    });
    assert.deepEqual(wire(), ["CALL 1", "RESET 3"]);
    assert.equal(c.streams.out?.closed, true);
  });

  it("keeps a code of ours from the peer's ERROR as the error's code", async () => {
    const { calls } = rig();
    const c = calls.open("nope", null);
    calls.onReply(frame(FrameType.ERROR, 1, { code: "METHOD_NOT_FOUND", message: "no" }));
    await rejectsWith(c.result, "METHOD_NOT_FOUND");
  });

  it("refuses a reply for a call not in flight: never started, or already answered", async () => {
    const { calls } = rig();
    violates(() => calls.onReply(result(1, 0)), "UNEXPECTED_REPLY");
    const c = calls.open("once", null);
    calls.onReply(result(1, "first"));
    assert.equal(await c.result, "first");
    violates(() => calls.onReply(result(1, "second")), "UNEXPECTED_REPLY");
    violates(
      () => calls.onReply(frame(FrameType.ERROR, 1, { code: "X", message: "" })),
      "UNEXPECTED_REPLY",
    );
  });

  it("cancel sends CANCEL and rejects with CANCELLED; the peer's confirmation still arrives", async () => {
    const { calls, sent } = rig();
    const c = calls.open("slow", null);
    c.cancel("bored");
    await rejectsWith(c.result, "CANCELLED");
    assert.deepEqual(sent[1], {
      type: FrameType.CANCEL,
      streamId: 1,
      value: { reason: "bored", code: "CANCELLED" },
    });
    // In flight until the peer confirms: its reply is expected, not a violation.
    assert.equal(calls.inFlight, 1);
    calls.onReply(result(1, "stopped at 40%"));
    assert.equal(await c.confirmed, "stopped at 40%");
    assert.equal(calls.inFlight, 0);
    c.cancel();
    assert.equal(sent.length, 2, "a second cancel sends nothing");
  });

  it("cancels when the caller's signal aborts", async () => {
    const { calls, wire } = rig();
    const controller = new AbortController();
    const c = calls.open("slow", null, { signal: controller.signal });
    controller.abort(new GuestlinkError("CANCELLED", "user pressed ^C"));
    await rejectsWith(c.result, "CANCELLED");
    assert.deepEqual(wire(), ["CALL 1", "CANCEL 1"]);
  });

  it("rejects with DEADLINE_EXCEEDED when the deadline passes, telling the peer why", async () => {
    const { clock, calls, sent } = rig();
    const c = calls.open("slow", null, { deadline: clock.now() + 1000 });
    await clock.advance(999);
    assert.equal(sent.length, 1);
    await clock.advance(1);
    await rejectsWith(c.result, "DEADLINE_EXCEEDED");
    assert.deepEqual(sent[1], {
      type: FrameType.CANCEL,
      streamId: 1,
      value: { reason: "deadline exceeded", code: "DEADLINE_EXCEEDED" },
    });
  });

  it("refuses a call the session cannot start without sending anything or using an id", async () => {
    const { calls, sent, state, ids } = rig();
    state.refuse = new GuestlinkError("SESSION_CLOSING", "closing");
    const c = calls.open("late", null, { streams: ["out"] });
    await rejectsWith(c.result, "SESSION_CLOSING");
    await rejectsWith(c.confirmed, "SESSION_CLOSING");
    assert.equal(c.streams.out?.closed, true);
    assert.deepEqual(sent, []);
    assert.equal(calls.inFlight, 0);
    assert.equal(ids.allocate(), 1);
  });

  it("failAll rejects every call in flight and aborts every handler running", async () => {
    const { calls } = rig();
    let signal: AbortSignalLike | undefined;
    calls.handlers.set("wait", (p, ctx) => {
      signal = ctx.signal;
      return untilAborted(p, ctx);
    });
    const a = calls.open("a", null);
    const b = calls.open("b", null);
    calls.onCall(call(2, { method: "wait" }));
    await settle();
    assert.equal(calls.inFlight, 3);
    const reason = new GuestlinkError("SESSION_CLOSED", "gone");
    calls.failAll(reason);
    await assert.rejects(a.result, (err) => err === reason);
    await assert.rejects(b.confirmed, (err) => err === reason);
    assert.equal(signal?.aborted, true);
    assert.equal(signal?.reason, reason);
    assert.equal(calls.inFlight, 0);
  });

  it("after failAll for a restarted peer, a handler that finishes late sends nothing", async () => {
    const { calls, sent } = rig();
    let finish: (value: unknown) => void = () => {};
    calls.handlers.set("late", () => new Promise((resolve) => (finish = resolve)));
    calls.onCall(call(2, { method: "late" }));
    await settle();
    calls.failAll(new GuestlinkError("RESUME_FAILED", "the peer restarted"), true);
    finish("for the old peer");
    await settle();
    assert.deepEqual(sent, []);
  });
});

describe("Calls: the peer's calls", () => {
  it("runs the handler with the params and the session, and sends its RESULT", async () => {
    const { calls, sent, state } = rig();
    let seen: { params: unknown; session: unknown; method: string } | undefined;
    calls.handlers.set("echo", (params, ctx) => {
      seen = { params, session: ctx.session, method: ctx.method };
      return { echoed: params };
    });
    calls.onCall(call(2, { method: "echo", params: [1, "two"] }));
    assert.deepEqual(sent, [], "the handler runs after the frames that came with the CALL");
    await settle();
    assert.deepEqual(seen, { params: [1, "two"], session: SESSION, method: "echo" });
    assert.deepEqual(sent, [
      { type: FrameType.RESULT, streamId: 2, value: { value: { echoed: [1, "two"] } } },
    ]);
    assert.equal(state.finished, 1);
  });

  it("sends the RESULT of a handler that returns a promise once it settles", async () => {
    const { calls, sent } = rig();
    let finish: (value: unknown) => void = () => {};
    calls.handlers.set("later", () => new Promise((resolve) => (finish = resolve)));
    calls.onCall(call(2, { method: "later" }));
    await settle();
    assert.deepEqual(sent, []);
    finish(42);
    await settle();
    assert.deepEqual(sent, [{ type: FrameType.RESULT, streamId: 2, value: { value: 42 } }]);
  });

  it("ends a handler's streams and sends their output before the RESULT", async () => {
    const { calls, wire } = rig();
    calls.handlers.set("cat", (_p, ctx) => {
      ctx.streams.out?.write(new Uint8Array(100));
      return "done";
    });
    calls.onCall(call(2, { method: "cat", streams: { out: 4 } }));
    await settle();
    assert.deepEqual(wire(), ["DATA 4", "END 4", "RESULT 2"]);
  });

  it("answers an unknown method with ERROR METHOD_NOT_FOUND, naming what there is", async () => {
    const { calls, sent } = rig();
    calls.handlers.set("known", () => 1);
    calls.onCall(call(2, { method: "unknown" }));
    assert.equal(sent[0]?.type, FrameType.ERROR);
    assert.deepEqual(sent[0]?.value, {
      code: "METHOD_NOT_FOUND",
      message: "no such method: unknown",
      details: { method: "unknown", available: ["known"] },
    });
    assert.equal(calls.running, 0);
  });

  it("sends ERROR with the code of what a handler threw or rejected with", async () => {
    const { calls, sent } = rig();
    calls.handlers.set("enoent", () => {
      throw Object.assign(new Error("no such file"), { code: "ENOENT" });
    });
    calls.handlers.set("denied", async () => {
      throw new GuestlinkError("POLICY_DENIED", "not on the list");
    });
    calls.handlers.set("plain", () => {
      throw new Error("oops");
    });
    calls.onCall(call(2, { method: "enoent" }));
    calls.onCall(call(4, { method: "denied" }));
    calls.onCall(call(6, { method: "plain" }));
    await settle();
    const errors = sent.map((s) => [
      s.type,
      s.streamId,
      (s.value as { code: string; message: string }).code,
      (s.value as { code: string; message: string }).message,
    ]);
    assert.deepEqual(errors, [
      [FrameType.ERROR, 2, "ENOENT", "no such file"],
      [FrameType.ERROR, 6, "HANDLER_FAILED", "oops"],
      [FrameType.ERROR, 4, "POLICY_DENIED", "not on the list"],
    ]);
  });

  it("answers SESSION_CLOSING while the session is closing, without running the handler", async () => {
    const { calls, sent, state } = rig();
    let ran = false;
    calls.handlers.set("work", () => {
      ran = true;
    });
    state.closing = true;
    calls.onCall(call(2, { method: "work" }));
    await settle();
    assert.equal(ran, false);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]?.type, FrameType.ERROR);
    assert.equal(fields(sent[0]).code, "SESSION_CLOSING");
  });

  it("aborts the handler's signal on the peer's CANCEL, and says why", async () => {
    const { calls, sent } = rig();
    calls.handlers.set("wait", untilAborted);
    calls.onCall(call(2, { method: "wait" }));
    calls.onCall(call(4, { method: "wait" }));
    await settle();
    calls.onCancel(frame(FrameType.CANCEL, 2, { reason: "bored" }));
    calls.onCancel(frame(FrameType.CANCEL, 4, { code: "DEADLINE_EXCEEDED" }));
    await settle();
    const replies = sent.map((s) => [s.streamId, (s.value as { code: string }).code]);
    assert.deepEqual(replies, [
      [2, "CANCELLED"],
      [4, "DEADLINE_EXCEEDED"],
    ]);
    assert.match(String(fields(sent[0]).message), /bored/);
  });

  it("ignores a CANCEL for a call already finished (it crossed the reply)", async () => {
    const { calls, sent } = rig();
    calls.handlers.set("quick", () => 1);
    calls.onCall(call(2, { method: "quick" }));
    await settle();
    calls.onCancel(frame(FrameType.CANCEL, 2, {}));
    assert.equal(sent.length, 1);
  });

  it("aborts the handler when the caller's timeoutMs passes here", async () => {
    const { clock, calls, sent } = rig();
    calls.handlers.set("wait", untilAborted);
    calls.onCall(call(2, { method: "wait", timeoutMs: 500 }));
    await clock.advance(499);
    assert.deepEqual(sent, []);
    await clock.advance(1);
    assert.equal(fields(sent[0]).code, "DEADLINE_EXCEEDED");
  });

  it("refuses a call id from our own half of the id space, or one used before", () => {
    const { calls } = rig();
    violates(() => calls.onCall(call(3, { method: "x" })), "BAD_ID");
    calls.onCall(call(4, { method: "x" }));
    violates(() => calls.onCall(call(2, { method: "x" })), "DUPLICATE_ID");
  });

  it("counts the peer's calls as running until they finish, and says when each did", async () => {
    const { calls, state } = rig();
    const finishers: ((v: unknown) => void)[] = [];
    calls.handlers.set("hold", () => new Promise((resolve) => finishers.push(resolve)));
    calls.onCall(call(2, { method: "hold" }));
    calls.onCall(frame(FrameType.CALL, 0, { method: "hold", notify: true }));
    assert.equal(calls.running, 2);
    await settle();
    assert.equal(finishers.length, 2);
    finishers[0]?.(1);
    await settle();
    assert.deepEqual([calls.running, state.finished], [1, 1]);
    finishers[1]?.(1);
    await settle();
    assert.deepEqual([calls.running, state.finished], [0, 2]);
  });
});

describe("Calls: notifications", () => {
  it("runs a notification's handler and sends nothing back", async () => {
    const { calls, sent, state } = rig();
    const seen: unknown[] = [];
    calls.handlers.set("log", (params) => {
      seen.push(params);
      return "ignored";
    });
    calls.onCall(frame(FrameType.CALL, 0, { method: "log", params: "hi", notify: true }));
    await settle();
    assert.deepEqual(seen, ["hi"]);
    assert.deepEqual(sent, []);
    assert.equal(state.finished, 1);
    assert.equal(state.notificationFailed, 0);
  });

  it("counts a notification whose handler is missing or fails", async () => {
    const { calls, sent, state } = rig();
    calls.handlers.set("bad", () => {
      throw new Error("no");
    });
    calls.onCall(frame(FrameType.CALL, 0, { method: "missing", notify: true }));
    calls.onCall(frame(FrameType.CALL, 0, { method: "bad", notify: true }));
    await settle();
    assert.equal(state.notificationFailed, 2);
    assert.deepEqual(sent, []);
  });

  it("refuses a CALL on stream 0 that is not a notification", () => {
    const { calls } = rig();
    calls.handlers.set("x", () => 1);
    violates(() => calls.onCall(frame(FrameType.CALL, 0, { method: "x" })), "BAD_MESSAGE");
  });

  it("sends a notification as a CALL on stream 0 with notify", () => {
    const { calls, sent } = rig();
    calls.notify("log", { line: 1 });
    assert.deepEqual(sent, [
      {
        type: FrameType.CALL,
        streamId: 0,
        value: { method: "log", params: { line: 1 }, notify: true },
      },
    ]);
  });
});

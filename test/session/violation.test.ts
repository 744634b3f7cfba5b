/** Parsing a control frame on its own: what a peer's bad payload becomes, and the quick path. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ResultSchema, WindowSchema } from "../../src/session/messages.ts";
import { ProtocolViolation, parseFrame } from "../../src/session/violation.ts";
import { encodeControl } from "../../src/wire/control.ts";
import { type Frame, FrameType } from "../../src/wire/frame.ts";

function frame(type: number, payload: Uint8Array): Frame {
  return { type, flags: 0, streamId: 3, seq: 0, payload };
}

/** Matches a ProtocolViolation naming `violation`, whose message matches `message`. */
function violation(name: string, message: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof ProtocolViolation, `expected a ProtocolViolation, got ${err}`);
    assert.equal(err.violation, name);
    assert.match(err.message, message);
    return true;
  };
}

describe("ProtocolViolation", () => {
  it("is an Error that names what was broken", () => {
    const err = new ProtocolViolation("FLOW_CONTROL", "sent beyond the window");
    assert.ok(err instanceof Error);
    assert.equal(err.name, "ProtocolViolation");
    assert.equal(err.violation, "FLOW_CONTROL");
    assert.equal(err.message, "sent beyond the window");
  });
});

describe("parseFrame", () => {
  it("refuses bytes that are not msgpack with BAD_CONTROL_PAYLOAD, naming the frame type", () => {
    // A map of one entry, cut off before its key.
    const bad = frame(FrameType.WINDOW, Uint8Array.of(0x81));
    assert.throws(
      () => parseFrame(WindowSchema, bad),
      violation("BAD_CONTROL_PAYLOAD", /^WINDOW: .*not valid msgpack/),
    );
  });

  it("refuses msgpack that is not a map with BAD_CONTROL_PAYLOAD", () => {
    const bad = frame(FrameType.WINDOW, encodeControl([1, 2, 3]));
    assert.throws(
      () => parseFrame(WindowSchema, bad),
      violation("BAD_CONTROL_PAYLOAD", /^WINDOW: .*must be a msgpack map/),
    );
  });

  it("does not ask the quick check about a payload it could not decode", () => {
    let asked = 0;
    const bad = frame(FrameType.RESULT, Uint8Array.of(0x81));
    assert.throws(() =>
      parseFrame(ResultSchema, bad, () => {
        asked++;
        return true;
      }),
    );
    assert.equal(asked, 0);
  });

  it("refuses a map that fails the schema with BAD_MESSAGE, naming the frame type and field", () => {
    const bad = frame(FrameType.WINDOW, encodeControl({ credit: 0 }));
    assert.throws(
      () => parseFrame(WindowSchema, bad),
      violation("BAD_MESSAGE", /^WINDOW: credit: /),
    );
  });

  it("names a frame type it does not know as UNKNOWN(n)", () => {
    const bad = frame(99, encodeControl({ credit: "lots" }));
    assert.throws(
      () => parseFrame(WindowSchema, bad),
      violation("BAD_MESSAGE", /^UNKNOWN\(99\): /),
    );
  });

  it("returns a valid message as the schema gives it", () => {
    const good = frame(FrameType.WINDOW, encodeControl({ credit: 65_536 }));
    assert.deepEqual(parseFrame(WindowSchema, good), { credit: 65_536 });
  });

  it("returns the decoded value as it is when the quick check says yes", () => {
    // The schema would drop `extra` (and refuse credit 0); the quick path skips it entirely.
    let seen: Record<string, unknown> | undefined;
    const input = frame(FrameType.WINDOW, encodeControl({ credit: 0, extra: "kept" }));
    const value = parseFrame<Record<string, unknown>>(WindowSchema, input, (decoded) => {
      seen = decoded;
      return true;
    });
    assert.equal(value, seen, "the very object the quick check was shown");
    assert.deepEqual(value, { credit: 0, extra: "kept" });
  });

  it("lets the schema decide when the quick check says no", () => {
    const quickNo = () => false;
    const good = frame(FrameType.WINDOW, encodeControl({ credit: 5, extra: "dropped" }));
    assert.deepEqual(parseFrame(WindowSchema, good, quickNo), { credit: 5 });
    const bad = frame(FrameType.WINDOW, encodeControl({ credit: -1 }));
    assert.throws(
      () => parseFrame(WindowSchema, bad, quickNo),
      violation("BAD_MESSAGE", /^WINDOW: credit/),
    );
  });
});

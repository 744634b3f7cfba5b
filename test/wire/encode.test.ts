import assert from "node:assert/strict";
import { describe, it } from "node:test";
import zlib from "node:zlib";
import { isGuestlinkError } from "../../src/errors.ts";
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameDecoder,
  FrameEncoder,
  FrameFlag,
  FrameType,
  HEADER_BYTES,
  MAX_SEQ,
  stringifyHeader,
} from "../../src/wire/index.ts";

function throwsCode(fn: () => unknown, code: string, message: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isGuestlinkError(err), `expected a GuestlinkError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

describe("FrameEncoder", () => {
  it("lays out the header as the spec says, big-endian, with a CRC-32 over bytes 0..27", () => {
    const payload = new TextEncoder().encode("hello");
    const bytes = new FrameEncoder({ payloadChecksum: true }).encode({
      type: FrameType.DATA,
      streamId: 0x01020304,
      seq: 2 ** 40 + 5,
      payload,
    });
    const view = new DataView(bytes.buffer);
    assert.deepEqual([...bytes.subarray(0, 4)], [0xab, 0x47, 0x4c, 0x4b]);
    assert.equal(bytes[4], 1, "version");
    assert.equal(bytes[5], FrameType.DATA);
    assert.equal(bytes[6], FrameFlag.PAYLOAD_CHECKSUM);
    assert.equal(bytes[7], 0, "reserved");
    assert.equal(view.getUint32(8), 0x01020304);
    assert.equal(view.getBigUint64(12), BigInt(2 ** 40 + 5));
    assert.equal(view.getUint32(20), 5);
    assert.equal(view.getUint32(24), zlib.crc32(payload));
    assert.equal(view.getUint32(28), zlib.crc32(bytes.subarray(0, 28)));
    assert.deepEqual(bytes.subarray(HEADER_BYTES), payload);
  });

  it("checksums every payload unless told not to, and never an empty payload", () => {
    const checked = new FrameEncoder().encode({ type: FrameType.DATA, payload: Uint8Array.of(1) });
    assert.equal(checked[6], FrameFlag.PAYLOAD_CHECKSUM);
    assert.equal(new DataView(checked.buffer).getUint32(24), zlib.crc32(Uint8Array.of(1)));
    const plain = new FrameEncoder({ payloadChecksum: false }).encode({
      type: FrameType.DATA,
      payload: Uint8Array.of(1),
    });
    assert.equal(plain[6], 0);
    assert.equal(new DataView(plain.buffer).getUint32(24), 0);
    const empty = new FrameEncoder().encode({ type: FrameType.PING });
    assert.equal(empty[6], 0);
  });

  it("encodeParts hands back the payload itself, not a copy", () => {
    const payload = new Uint8Array(1000);
    const parts = new FrameEncoder().encodeParts({ type: FrameType.DATA, payload });
    assert.equal(parts.length, 2);
    assert.equal(parts[1], payload);
    assert.equal(new FrameEncoder().encodeParts({ type: FrameType.PING }).length, 1);
  });

  it("round-trips every frame type, at the largest sequence number and stream id", () => {
    const encoder = new FrameEncoder({ payloadChecksum: true });
    const decoder = new FrameDecoder();
    for (const type of Object.values(FrameType)) {
      const frame = { type, streamId: 0xffffffff, seq: MAX_SEQ, payload: Uint8Array.of(type, 0) };
      const [decoded, ...rest] = decoder.push(encoder.encode(frame));
      assert.equal(rest.length, 0);
      assert.ok(decoded);
      assert.equal(decoded.type, type);
      assert.equal(decoded.streamId, 0xffffffff);
      assert.equal(decoded.seq, MAX_SEQ);
      assert.deepEqual([...decoded.payload], [type, 0]);
    }
  });

  it("refuses fields the wire cannot carry, with INVALID_FRAME and the range in the message", () => {
    const e = new FrameEncoder();
    throwsCode(
      () => e.encode({ type: 256 }),
      "INVALID_FRAME",
      /type must be an integer from 0 to 255/,
    );
    throwsCode(() => e.encode({ type: -1 }), "INVALID_FRAME", /type/);
    throwsCode(() => e.encode({ type: 1.5 }), "INVALID_FRAME", /type/);
    throwsCode(() => e.encode({ type: 1, streamId: 2 ** 32 }), "INVALID_FRAME", /stream id/);
    throwsCode(() => e.encode({ type: 1, streamId: -1 }), "INVALID_FRAME", /stream id/);
    throwsCode(() => e.encode({ type: 1, seq: MAX_SEQ + 1 }), "INVALID_FRAME", /sequence/);
    throwsCode(() => e.encode({ type: 1, seq: -1 }), "INVALID_FRAME", /sequence/);
    throwsCode(
      () => e.encode({ type: 1, payload: [1, 2] as unknown as Uint8Array }),
      "INVALID_FRAME",
      /Uint8Array/,
    );
  });

  it("refuses a payload over the maximum frame size with FRAME_TOO_LARGE and the sizes", () => {
    const e = new FrameEncoder();
    assert.doesNotThrow(() =>
      e.encode({ type: FrameType.DATA, payload: new Uint8Array(DEFAULT_MAX_FRAME_BYTES) }),
    );
    assert.throws(
      () =>
        e.encode({ type: FrameType.DATA, payload: new Uint8Array(DEFAULT_MAX_FRAME_BYTES + 1) }),
      (err: unknown) =>
        isGuestlinkError(err, "FRAME_TOO_LARGE") &&
        err.details?.length === DEFAULT_MAX_FRAME_BYTES + 1 &&
        /exceeds the maximum frame size of 1048576 bytes/.test(err.message),
    );
  });

  it("refuses a maximum frame size outside 1 KiB..64 MiB with INVALID_OPTION", () => {
    throwsCode(() => new FrameEncoder({ maxFrameBytes: 1023 }), "INVALID_OPTION", /maxFrameBytes/);
    throwsCode(() => new FrameDecoder({ maxFrameBytes: 2 ** 26 + 1 }), "INVALID_OPTION", /1024/);
    throwsCode(() => new FrameDecoder({ maxFrameBytes: Number.NaN }), "INVALID_OPTION", /NaN/);
    throwsCode(
      () => new FrameDecoder({ checksum: 5 as unknown as () => number }),
      "INVALID_OPTION",
      /checksum/,
    );
  });

  it("stringifies a header for logs", () => {
    assert.equal(
      stringifyHeader({ type: 6, flags: 1, streamId: 3, seq: 9, payload: new Uint8Array(4) }),
      "DATA stream=3 seq=9 len=4 +crc",
    );
    assert.equal(
      stringifyHeader({ type: 99, flags: 0, streamId: 0, seq: 0 }),
      "UNKNOWN(99) stream=0 seq=0",
    );
  });
});

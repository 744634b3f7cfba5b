import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import { decodeControl, encodeControl, MAX_CONTROL_DEPTH } from "../../src/wire/index.ts";

const bad = (bytes: number[] | Uint8Array, message: RegExp) =>
  assert.throws(
    () => decodeControl(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes)),
    (err: unknown) => isGuestlinkError(err, "BAD_CONTROL_PAYLOAD") && message.test(err.message),
  );

describe("control payloads", () => {
  it("round-trip plain data: maps, arrays, strings, numbers above 2^32, bytes, null", () => {
    const value = {
      method: "exec",
      params: { argv: ["ls", "-l"], env: { A: "1" }, timeoutMs: 2 ** 40, ok: true, none: null },
      bytes: Uint8Array.of(0, 1, 255),
      ratio: 0.25,
    };
    const back = decodeControl(encodeControl(value)) as typeof value;
    assert.deepEqual({ ...back, bytes: [...back.bytes] }, { ...value, bytes: [0, 1, 255] });
  });

  it("refuses bytes that are not one msgpack value", () => {
    bad([0xc1], /C1Type|not valid/);
    bad([0x92, 0x01], /not valid msgpack/); // array of 2 with 1 element
    bad([...encodeControl({ a: 1 }), 0x00], /not valid msgpack/); // trailing bytes
    bad([], /not valid msgpack/);
  });

  it("refuses msgpack extensions guestlink never sends (timestamps, msgpackr records)", () => {
    bad([0xd6, 0xff, 0, 0, 0, 1], /Date/);
  });

  it(`refuses values nested deeper than ${MAX_CONTROL_DEPTH} levels`, () => {
    // {"a": [[[…[1]…]]]}: the map is level 0, each fixarray(1) one level more.
    const nested = (arrays: number) =>
      Uint8Array.of(0x81, 0xa1, 0x61, ...Array(arrays).fill(0x91), 0x01);
    bad(nested(MAX_CONTROL_DEPTH), /nested deeper/);
    assert.doesNotThrow(() => decodeControl(nested(MAX_CONTROL_DEPTH - 1)));
  });

  it("refuses a payload that is not a map", () => {
    bad(encodeControl(5), /must be a msgpack map/);
    bad(encodeControl([1, 2]), /must be a msgpack map/);
    bad(encodeControl("x"), /must be a msgpack map/);
    bad(encodeControl(null), /must be a msgpack map/);
  });

  it("never allocates for a huge claimed array length", () => {
    bad([0xdd, 0xff, 0xff, 0xff, 0xff], /not valid msgpack/);
  });
});

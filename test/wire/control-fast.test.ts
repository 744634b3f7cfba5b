/**
 * The control codec's fast paths against msgpackr itself: `encodeControl` must write exactly the
 * bytes msgpackr writes with the same options (the wire format is unchanged), and `decodeControl`
 * must return exactly what msgpackr plus the plain-data check returned, or throw the same error.
 * `GUESTLINK_SEED=n` replays a failure.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { Packr } from "msgpackr";
import { isGuestlinkError } from "../../src/errors.ts";
import { CONTROL_PACKR_OPTIONS } from "../../src/wire/control.ts";
import { decodeControl, encodeControl, MAX_CONTROL_DEPTH } from "../../src/wire/index.ts";
import { check } from "../helpers/seed.ts";

/** msgpackr with the options control.ts gives it: the reference. */
const reference = new Packr(CONTROL_PACKR_OPTIONS);

/** decodeControl as it was before the fast path: msgpackr, then the plain-data check. */
function referenceDecode(bytes: Uint8Array): unknown {
  const value = reference.unpack(bytes);
  if (
    typeof value !== "object" ||
    value === null ||
    Array.isArray(value) ||
    value instanceof Uint8Array
  ) {
    throw new Error("not a map");
  }
  const deep = (v: unknown, depth: number): void => {
    if (depth > MAX_CONTROL_DEPTH) throw new Error("too deep");
    if (v === null || typeof v !== "object" || v instanceof Uint8Array) {
      if (typeof v === "bigint" || typeof v === "function" || typeof v === "symbol") {
        throw new Error(`a ${typeof v}`);
      }
      return;
    }
    if (Array.isArray(v)) {
      for (const item of v) deep(item, depth + 1);
      return;
    }
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) throw new Error("not plain");
    for (const key of Object.keys(v)) deep((v as Record<string, unknown>)[key], depth + 1);
  };
  deep(value, 0);
  return value;
}

/** Everything about a decoded value that a caller could see: types, key order, -0, byte views. */
function describeValue(v: unknown): unknown {
  if (v === null || v === undefined) return [String(v)];
  if (typeof v === "number") {
    return ["number", Object.is(v, -0) ? "-0" : Number.isNaN(v) ? "NaN" : String(v)];
  }
  if (typeof v !== "object") return [typeof v, v];
  if (v instanceof Uint8Array) {
    return ["bytes", Object.getPrototypeOf(v)?.constructor?.name, v.byteOffset, [...v]];
  }
  if (Array.isArray(v)) return ["array", v.length, ...v.map(describeValue)];
  return [
    "map",
    Object.getPrototypeOf(v) === Object.prototype,
    ...Object.keys(v).map((k) => [k, describeValue((v as Record<string, unknown>)[k])]),
  ];
}

const asciiKey = fc.string({ maxLength: 12 });
const anyKey = fc.oneof(
  asciiKey,
  fc.string({ maxLength: 8, unit: "binary" }),
  fc.constantFrom("__proto__", "constructor", "prototype", "toString", "0", "10", "-1", ""),
);
const numberArb = fc.oneof(
  fc.integer({ min: -40, max: 300 }),
  fc.integer(),
  fc.constantFrom(
    0,
    -0,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 40,
    2 ** 53 - 1,
    -(2 ** 31),
    -(2 ** 31) - 1,
    -32,
    -33,
    -128,
    -129,
    -32768,
    -32769,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    0.5,
    -1.25,
  ),
  fc.double(),
);
const stringArb = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ minLength: 30, maxLength: 300 }),
  fc.string({ maxLength: 20, unit: "binary" }),
  fc.string({ maxLength: 70, unit: "grapheme" }),
  fc.constantFrom("\ud800", "a\udc00b", "é", "x".repeat(65_536)),
);
const bytesArb = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  fc.constantFrom(255, 256, 65_535, 65_536).map((n) => new Uint8Array(n).fill(7)),
  fc.uint8Array({ maxLength: 8 }).map((b) => Buffer.from(b)),
);

const { value: valueArb } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constantFrom(null, undefined, true, false),
    numberArb,
    stringArb,
    bytesArb,
    fc.array(tie("value"), { maxLength: 20 }),
    fc.dictionary(anyKey, tie("value"), { maxKeys: 18 }),
  ),
}));

const mapArb = fc.dictionary(anyKey, valueArb, { maxKeys: 6 });

describe("control payloads: the fast paths agree with msgpackr", () => {
  it("encodes any plain value to exactly msgpackr's bytes", () => {
    check(
      fc.property(valueArb, (value) => {
        assert.deepEqual([...encodeControl(value)], [...reference.pack(value)]);
      }),
      500,
    );
  });

  it("encodes what msgpackr treats specially exactly as msgpackr does", () => {
    class Point {
      x = 1;
      y = 2;
    }
    const odd: unknown[] = [
      new Map([["a", 1]]),
      new Set([1]),
      new Date(0),
      new Point(),
      Object.create(null),
      { toJSON: () => "x", a: 1 },
      { hasOwnProperty: 1, a: 2 },
      { a: undefined, b: 1 },
      new Array(3).fill(undefined, 0, 1), // a hole at 1 and 2
      Object.assign(new Array(3), { 0: undefined, 2: 1 }),
      new Uint16Array([1, 2]),
      new Uint8ClampedArray([1]),
      () => 1,
      { nested: { deep: [new Date(1)] } },
      "\ud800",
      { é: "ü" },
      Array.from({ length: 70 }).reduce((inner) => [inner], 1 as unknown),
    ];
    for (const value of odd)
      assert.deepEqual([...encodeControl(value)], [...reference.pack(value)]);
    // Getters that change their answer between msgpackr's two reads of each value.
    const flipping = (first: unknown, then: unknown) => {
      let reads = 0;
      return {
        x: 1,
        get a() {
          return reads++ === 0 ? first : then;
        },
        z: 2,
      };
    };
    for (const [first, then] of [
      [undefined, 5],
      [5, undefined],
      [undefined, undefined],
    ]) {
      assert.deepEqual(
        [...encodeControl(flipping(first, then))],
        [...reference.pack(flipping(first, then))],
      );
    }
  });

  it("decodes any encoded map to exactly what msgpackr gives", () => {
    check(
      fc.property(mapArb, fc.boolean(), (map, asBuffer) => {
        const packed = reference.pack(map);
        const bytes = asBuffer ? Buffer.from(packed) : Uint8Array.from(packed);
        assert.deepEqual(
          describeValue(decodeControl(bytes)),
          describeValue(referenceDecode(bytes)),
        );
      }),
      500,
    );
  });

  it("decodes or refuses damaged and hand-made payloads exactly as msgpackr did", () => {
    const sample = fc.oneof(
      mapArb.map((m) => Uint8Array.from(reference.pack(m))),
      fc.uint8Array({ maxLength: 40 }),
      fc.uint8Array({ maxLength: 40 }).map((b) => Uint8Array.of(0x81, 0xa1, 0x61, ...b)),
    );
    const damaged = fc
      .tuple(sample, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 3 }), fc.nat())
      .map(([bytes, flips, cut]) => {
        const copy = Uint8Array.from(bytes);
        for (const [at, v] of flips) if (copy.length > 0) copy[at % copy.length] = v;
        return copy.length > 0 && cut % 4 === 0 ? copy.subarray(0, cut % copy.length) : copy;
      });
    check(
      fc.property(damaged, (bytes) => {
        let expected: unknown;
        let expectedError = false;
        try {
          expected = describeValue(referenceDecode(bytes));
        } catch {
          expectedError = true;
        }
        let actual: unknown;
        try {
          actual = describeValue(decodeControl(bytes));
        } catch (err) {
          assert.ok(isGuestlinkError(err, "BAD_CONTROL_PAYLOAD"), String(err));
          assert.ok(expectedError, `refused what msgpackr accepts: ${[...bytes]}`);
          return;
        }
        assert.ok(!expectedError, `accepted what msgpackr refuses: ${[...bytes]}`);
        assert.deepEqual(actual, expected);
      }),
      2000,
    );
  });

  it("decodes every msgpack format the fast path reads, at its edges", () => {
    const cases: number[][] = [
      [0x81, 0xa1, 0x61, 0x7f], // positive fixint 127
      [0x81, 0xa1, 0x61, 0xe0], // negative fixint -32
      [0x81, 0xa1, 0x61, 0xcc, 0xff],
      [0x81, 0xa1, 0x61, 0xcd, 0xff, 0xff],
      [0x81, 0xa1, 0x61, 0xce, 0xff, 0xff, 0xff, 0xff],
      [0x81, 0xa1, 0x61, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
      [0x81, 0xa1, 0x61, 0xd0, 0x80],
      [0x81, 0xa1, 0x61, 0xd1, 0x80, 0x00],
      [0x81, 0xa1, 0x61, 0xd2, 0x80, 0x00, 0x00, 0x00],
      [0x81, 0xa1, 0x61, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 1],
      [0x81, 0xa1, 0x61, 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
      [0x81, 0xa1, 0x61, 0xca, 0x3f, 0xc0, 0x00, 0x00],
      [0x81, 0xa1, 0x61, 0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0],
      [0x81, 0xa1, 0x61, 0xc4, 0x00],
      [0x81, 0xa1, 0x61, 0xc5, 0x00, 0x01, 0x09],
      [0x81, 0xa1, 0x61, 0xc6, 0x00, 0x00, 0x00, 0x01, 0x09],
      [0x81, 0xa1, 0x61, 0xd9, 0x01, 0x62],
      [0x81, 0xa1, 0x61, 0xda, 0x00, 0x01, 0x62],
      [0x81, 0xa1, 0x61, 0xdb, 0x00, 0x00, 0x00, 0x01, 0x62],
      [0x81, 0xa1, 0x61, 0xdc, 0x00, 0x01, 0xc3],
      [0x81, 0xa1, 0x61, 0xdd, 0x00, 0x00, 0x00, 0x01, 0xc2],
      [0xde, 0x00, 0x01, 0xd9, 0x01, 0x61, 0xc0],
      [0xdf, 0x00, 0x00, 0x00, 0x01, 0xda, 0x00, 0x01, 0x61, 0xc0],
      [0x82, 0xa1, 0x61, 0x01, 0xa1, 0x61, 0x02], // a key twice: the last wins
      [0x81, 0xa9, ...Buffer.from("__proto__"), 0x80], // renamed __proto_, as msgpackr does
      [0x81, 0xd9, 0x09, ...Buffer.from("__proto__"), 0x80],
      [0x82, 0xa1, 0x62, 0x01, 0xa1, 0x31, 0x02], // an integer-like key sorts first
      [0x81, 0xa2, 0xc3, 0xa9, 0x01], // a UTF-8 key: msgpackr's business
      [0x81, 0x01, 0x02], // an integer key: msgpackr turns it into "1"
      [0x81, 0xa1, 0x61, 0xc1],
      [0x81, 0xa1, 0x61, 0xd4, 0x72, 0x00],
      [0x80],
    ];
    for (const bytes of cases) {
      const input = Uint8Array.from(bytes);
      let expected: unknown;
      try {
        expected = describeValue(referenceDecode(input));
      } catch {
        assert.throws(() => decodeControl(input), `${bytes}`);
        continue;
      }
      assert.deepEqual(describeValue(decodeControl(input)), expected, `${bytes}`);
    }
  });

  it("encodes a value whose getter encodes another one", () => {
    const make = () => ({
      a: 1,
      get b() {
        return encodeControl({ inner: "x".repeat(40) });
      },
      c: "end",
    });
    const bytes = encodeControl(make());
    assert.deepEqual([...bytes], [...reference.pack(make())]);
    const back = decodeControl(bytes);
    assert.deepEqual(decodeControl(back.b as Uint8Array), { inner: "x".repeat(40) });
  });

  it("hands out encodings that later encodings never overwrite", () => {
    const first = encodeControl({ a: "x".repeat(100) });
    const copy = [...first];
    for (let i = 0; i < 2000; i++) encodeControl({ i, b: "y".repeat(i % 300) });
    assert.deepEqual([...first], copy);
  });
});

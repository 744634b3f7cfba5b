/**
 * The hand-written checks for the messages of every call (CALL, RESULT, ERROR, WINDOW) against
 * their valibot schemas: a check may say yes only where the schema accepts the input and its
 * output holds the input's own values, since the session then uses the input as it is. Whatever a
 * check refuses goes to the schema, so a check that is too strict costs only speed; the tests
 * also make sure the messages guestlink itself sends take the quick path.
 * `GUESTLINK_SEED=n` replays a failure.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import * as v from "valibot";
import {
  CallSchema,
  ErrorSchema,
  isPlainCall,
  isPlainError,
  isPlainResult,
  isPlainWindow,
  ResultSchema,
  WindowSchema,
} from "../../src/session/messages.ts";
import { decodeControl, encodeControl } from "../../src/wire/control.ts";
import { check } from "../helpers/seed.ts";

const checks = [
  { name: "CALL", schema: CallSchema, quick: isPlainCall },
  { name: "RESULT", schema: ResultSchema, quick: isPlainResult },
  { name: "ERROR", schema: ErrorSchema, quick: isPlainError },
  { name: "WINDOW", schema: WindowSchema, quick: isPlainWindow },
] as const;

/** Strings at and around every length limit in the schemas. */
const textArb = fc.oneof(
  fc.string({ maxLength: 10 }),
  fc.constantFrom(0, 1, 63, 64, 65, 255, 256, 257, 4095, 4096, 4097).map((n) => "m".repeat(n)),
  fc.string({ maxLength: 4, unit: "grapheme" }),
);
const numberArb = fc.oneof(
  fc.integer({ min: -3, max: 3 }),
  fc.constantFrom(
    -0,
    0.5,
    2 ** 31 - 2,
    2 ** 31 - 1,
    2 ** 31,
    0xffffffff,
    2 ** 32,
    Number.MAX_SAFE_INTEGER,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
  ),
  fc.double(),
);
const keyArb = fc.oneof(
  fc.string({ maxLength: 6 }),
  fc.constantFrom(
    "__proto__",
    "prototype",
    "constructor",
    "toString",
    "x".repeat(64),
    "y".repeat(65),
  ),
);
const leafArb = fc.oneof(
  textArb,
  numberArb,
  fc.boolean(),
  fc.constant(null),
  fc.uint8Array({ maxLength: 3 }),
);
/** Records as a decoded map can be: own data properties, any keys ("__proto__" included). */
const recordArb = fc
  .array(fc.tuple(keyArb, fc.oneof(leafArb, fc.integer({ min: 1, max: 9 }))), { maxLength: 4 })
  .map((entries) => Object.fromEntries(entries));
const fieldArb = fc.oneof(leafArb, recordArb, fc.array(leafArb, { maxLength: 3 }));
const fieldNames = [
  "method",
  "params",
  "timeoutMs",
  "notify",
  "streams",
  "value",
  "code",
  "message",
  "details",
  "credit",
  "extra",
];
/** Inputs with the schemas' fields present or not, each of any type. */
const inputArb = fc
  .array(fc.tuple(fc.constantFrom(...fieldNames), fieldArb), { maxLength: 8 })
  .map((entries) => Object.fromEntries(entries) as Record<string, unknown>);

describe("message checks: the quick path agrees with the schemas", () => {
  for (const { name, schema, quick } of checks) {
    it(`${name}: says yes only to what the schema accepts, with the input's own values`, () => {
      check(
        fc.property(inputArb, (input) => {
          if (!quick(input)) return;
          const parsed = v.safeParse(schema, input);
          assert.ok(parsed.success, `the quick check took what ${name} refuses`);
          // The session reads the schema's fields: each must be the input's own value.
          for (const key of Object.keys(schema.entries)) {
            const out: unknown = (parsed.output as Record<string, unknown>)[key];
            const own = input[key];
            if (typeof own === "object" && own !== null && !(own instanceof Uint8Array)) {
              assert.deepEqual(Object.entries(out as object), Object.entries(own));
            } else {
              assert.ok(Object.is(out, own), `${key}: ${String(out)} is not ${String(own)}`);
            }
          }
        }),
        2000,
      );
    });
  }

  it("refuses what the schemas refuse, at each limit", () => {
    const refused: [(input: Record<string, unknown>) => boolean, Record<string, unknown>][] = [
      [isPlainCall, {}],
      [isPlainCall, { method: "" }],
      [isPlainCall, { method: "m".repeat(257) }],
      [isPlainCall, { method: 5 }],
      [isPlainCall, { method: "m", timeoutMs: -1 }],
      [isPlainCall, { method: "m", timeoutMs: Number.NaN }],
      [isPlainCall, { method: "m", timeoutMs: "5" }],
      [isPlainCall, { method: "m", notify: 1 }],
      [isPlainCall, { method: "m", streams: { out: 0 } }],
      [isPlainCall, { method: "m", streams: { out: 2 ** 32 } }],
      [isPlainCall, { method: "m", streams: { out: 1.5 } }],
      [isPlainCall, { method: "m", streams: { ["s".repeat(65)]: 1 } }],
      [isPlainCall, { method: "m", streams: 5 }],
      [isPlainError, { code: "", message: "m" }],
      [isPlainError, { code: "C".repeat(65), message: "m" }],
      [isPlainError, { code: "C", message: "m".repeat(4097) }],
      [isPlainError, { code: "C" }],
      [isPlainError, { code: "C", message: "m", details: 5 }],
      [isPlainWindow, { credit: 0 }],
      [isPlainWindow, { credit: 2 ** 31 }],
      [isPlainWindow, { credit: 1.5 }],
      [isPlainWindow, {}],
    ];
    for (const [quick, input] of refused) assert.equal(quick(input), false, JSON.stringify(input));
  });

  it("leaves to the schema what it accepts but changes (records it copies without some keys)", () => {
    const streams = Object.fromEntries([
      ["out", 3],
      ["constructor", 5],
    ]);
    assert.equal(isPlainCall({ method: "m", streams }), false);
    assert.ok(v.safeParse(CallSchema, { method: "m", streams }).success);
    assert.equal(isPlainCall({ method: "m", streams: [3] }), false);
    assert.equal(isPlainError({ code: "C", message: "m", details: ["x"] }), false);
  });

  it("takes the quick path for the messages guestlink sends", () => {
    const decoded = (value: unknown) => decodeControl(encodeControl(value));
    assert.ok(isPlainCall(decoded({ method: "echo", params: new Uint8Array(8), timeoutMs: 1 })));
    assert.ok(
      isPlainCall(decoded({ method: "exec", params: { argv: ["ls"] }, streams: { stdout: 3 } })),
    );
    assert.ok(isPlainCall(decoded({ method: "log", params: "x", notify: true })));
    assert.ok(isPlainResult(decoded({ value: { a: [1, 2] } })));
    assert.ok(isPlainResult(decoded({})));
    assert.ok(isPlainError(decoded({ code: "ENOENT", message: "no such file" })));
    assert.ok(isPlainError(decoded({ code: "X", message: "m", details: { remoteCode: "X" } })));
    assert.ok(isPlainWindow(decoded({ credit: 65536 })));
  });
});

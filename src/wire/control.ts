/**
 * Control payloads (HELLO, CALL, RESULT, ERROR, …) are msgpack maps. Decoding is defensive: the
 * peer is untrusted, so after msgpack has parsed the bytes the value must be a map of plain data — null,
 * booleans, numbers, strings, byte arrays, arrays and string-keyed maps — no deeper than
 * `MAX_CONTROL_DEPTH`. Extensions that decode to anything else (timestamps, structured clones,
 * Error, RegExp, Set…) are refused. msgpackr always decodes its record extension (fixext 0x72) to
 * plain maps, whatever its options; guestlink never sends it, and what it yields is plain data.
 *
 * Every call encodes and decodes a few small control payloads, and msgpackr's general machinery
 * (extension lookups, its own buffer management, a Buffer per result) was a fifth of a call's
 * cost. So the common case — plain data with ASCII strings — has a fast path each way, written
 * to give exactly what msgpackr gives: the same bytes when encoding (the wire format is
 * msgpackr's with the options below), the same values when decoding. Anything else (other
 * strings, extensions, malformed or truncated input, odd objects) goes to msgpackr as before.
 */
import { type Options, Packr } from "msgpackr";
import { BadControlPayloadError } from "../errors.ts";
import { fastDecode } from "./control-decode-fast.ts";
import { fastEncode } from "./control-encode-fast.ts";
import { MAX_CONTROL_DEPTH } from "./frame.ts";

export { MAX_CONTROL_DEPTH };

/** msgpackr's options for control payloads: the wire format (the fast paths match it exactly). */
// `skipValues` is a msgpackr option its type declarations do not list yet.
export const CONTROL_PACKR_OPTIONS = {
  useRecords: false,
  mapsAsObjects: true,
  int64AsType: "number",
  variableMapSize: true,
  // An absent value is absent on the wire: undefined properties are left out, and undefined in
  // an array becomes nil (msgpackr would otherwise use an extension no other decoder knows).
  skipValues: [undefined],
  encodeUndefinedAsNil: true,
} as Options & { skipValues: unknown[] };

const packr = new Packr(CONTROL_PACKR_OPTIONS);

/** Encodes a control value as msgpack. */
export function encodeControl(value: unknown): Uint8Array {
  return fastEncode(value) ?? packr.pack(value);
}

/** Decodes and checks a control payload (one msgpack map); throws `BAD_CONTROL_PAYLOAD` otherwise. */
export function decodeControl(bytes: Uint8Array): Record<string, unknown> {
  const fast = fastDecode(bytes);
  if (fast !== undefined) return fast;
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (cause) {
    throw new BadControlPayloadError(
      `control payload is not valid msgpack (${bytes.length} bytes)`,
      {
        cause,
      },
    );
  }
  if (
    typeof value !== "object" ||
    value === null ||
    Array.isArray(value) ||
    value instanceof Uint8Array
  ) {
    throw new BadControlPayloadError("control payload must be a msgpack map");
  }
  const problem = findNonPlainData(value, 0);
  if (problem !== undefined) {
    throw new BadControlPayloadError(`control payload holds ${problem}`);
  }
  return value as Record<string, unknown>;
}

function findNonPlainData(value: unknown, depth: number): string | undefined {
  if (depth > MAX_CONTROL_DEPTH) return `values nested deeper than ${MAX_CONTROL_DEPTH} levels`;
  if (value === null) return undefined;
  switch (typeof value) {
    case "boolean":
    case "string":
      return undefined;
    case "number":
      return undefined;
    case "object":
      break;
    default:
      return `a value of type ${typeof value}`;
  }
  if (value instanceof Uint8Array) return undefined;
  if (Array.isArray(value)) {
    for (const item of value) {
      const problem = findNonPlainData(item, depth + 1);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    return `an object of type ${(value as object).constructor?.name ?? "unknown"}`;
  }
  for (const key of Object.keys(value)) {
    const problem = findNonPlainData((value as Record<string, unknown>)[key], depth + 1);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/**
 * Control payloads (HELLO, CALL, RESULT, ERROR, …) are msgpack maps. Decoding is defensive: the
 * peer is untrusted, so after msgpack has parsed the bytes the value must be plain data — null,
 * booleans, numbers, strings, byte arrays, arrays and string-keyed maps — no deeper than
 * `MAX_CONTROL_DEPTH`. msgpackr's extensions (records, structured clones, Error, RegExp, Set…)
 * are never sent by guestlink and are refused when received.
 */
import { Packr } from "msgpackr";
import { BadControlPayloadError } from "../errors.ts";

/** How deeply control values may nest. Real messages need a handful of levels. */
export const MAX_CONTROL_DEPTH = 32;

const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  int64AsType: "number",
  // The spec says maps; msgpackr's default compact map sizing is standard msgpack as well.
  variableMapSize: true,
});

/** Encodes a control value as msgpack. */
export function encodeControl(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes and checks a control payload; throws `BAD_CONTROL_PAYLOAD` on anything else. */
export function decodeControl(bytes: Uint8Array): unknown {
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
  const problem = findNonPlainData(value, 0);
  if (problem !== undefined) {
    throw new BadControlPayloadError(`control payload holds ${problem}`);
  }
  return value;
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

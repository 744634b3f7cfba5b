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

/** How deeply control values may nest. Real messages need a handful of levels. */
export const MAX_CONTROL_DEPTH = 32;

// `skipValues` is a msgpackr option its type declarations do not list yet.
const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  int64AsType: "number",
  variableMapSize: true,
  // An absent value is absent on the wire: undefined properties are left out, and undefined in
  // an array becomes nil (msgpackr would otherwise use an extension no other decoder knows).
  skipValues: [undefined],
  encodeUndefinedAsNil: true,
} as Options & { skipValues: unknown[] });

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

// ---- the fast encoder ----------------------------------------------------------------------------
//
// It writes what msgpackr's `pack` writes for these options, value by value: maps for objects whose
// `constructor` is Object (own enumerable keys in for-in order, undefined values left out), arrays
// (holes and undefined as nil), bin for Uint8Arrays (and Buffers), the smallest integer formats
// (positive integers below 128 as fixint, as with `useRecords: false`), float64 for other
// numbers, and strings as str with the smallest header. It gives up (returns undefined, and
// msgpackr encodes the value) on strings that are not ASCII (msgpackr's UTF-8 has quirks for lone
// surrogates), anything else msgpackr has an extension or a special case for, or deep nesting.

/** Encoded values are carved out of slabs of this size; a slab is never written twice. */
const ENCODE_SLAB_BYTES = 16 * 1024;
/** Deeper values are left to msgpackr (which recurses as deep as the stack allows). */
const MAX_FAST_ENCODE_DEPTH = 64;

let out = new Uint8Array(ENCODE_SLAB_BYTES);
/** Where the value being encoded starts in `out`, and the write position. */
let start = 0;
let at = 0;
const float64 = new DataView(new ArrayBuffer(8));

/** Set while a value is being encoded: a getter that encodes something is msgpackr's business. */
let encoding = false;

function fastEncode(value: unknown): Uint8Array | undefined {
  if (encoding) return undefined;
  if (out.length - at < 1024) {
    out = new Uint8Array(ENCODE_SLAB_BYTES);
    at = 0;
  }
  start = at;
  let ok = false;
  encoding = true;
  try {
    ok = writeValue(value, 0);
  } finally {
    encoding = false;
    if (!ok) at = start;
  }
  return ok ? out.subarray(start, at) : undefined;
}

/** Makes room for `n` more bytes, moving the value written so far to a bigger slab if need be. */
function room(n: number): void {
  if (at + n <= out.length) return;
  const written = at - start;
  const bigger = new Uint8Array(Math.max(ENCODE_SLAB_BYTES, 2 * (written + n)));
  bigger.set(out.subarray(start, at));
  out = bigger;
  start = 0;
  at = written;
}

function writeValue(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case "string":
      return writeString(value);
    case "number":
      writeNumber(value);
      return true;
    case "boolean":
      room(1);
      out[at++] = value ? 0xc3 : 0xc2;
      return true;
    case "undefined":
      room(1);
      out[at++] = 0xc0;
      return true;
    case "object": {
      if (value === null) {
        room(1);
        out[at++] = 0xc0;
        return true;
      }
      if (depth >= MAX_FAST_ENCODE_DEPTH) return false;
      // The order of msgpackr's own checks: `constructor` first, then the extensions.
      const made = (value as { constructor?: unknown }).constructor;
      if (made === Object) return writeMap(value as Record<string, unknown>, depth);
      if (made === Array) return writeArray(value as unknown[], depth);
      if (made === Map) return false;
      if (isPlainByteArray(value)) {
        writeBin(value);
        return true;
      }
      return false;
    }
    default:
      return false; // functions, symbols and bigints: msgpackr's business
  }
}

/** A Uint8Array or a subclass of it (a Buffer), nothing odd in its prototype chain. */
function isPlainByteArray(value: object): value is Uint8Array {
  const proto = Object.getPrototypeOf(value);
  return (
    proto === Uint8Array.prototype ||
    (proto !== null && Object.getPrototypeOf(proto) === Uint8Array.prototype)
  );
}

function writeNumber(value: number): void {
  room(9);
  if (value >>> 0 === value) {
    if (value < 0x80) {
      out[at++] = value;
    } else if (value < 0x100) {
      out[at++] = 0xcc;
      out[at++] = value;
    } else if (value < 0x10000) {
      out[at++] = 0xcd;
      out[at++] = value >> 8;
      out[at++] = value & 0xff;
    } else {
      out[at++] = 0xce;
      writeU32(value);
    }
  } else if (value >> 0 === value) {
    if (value >= -0x20) {
      out[at++] = 0x100 + value;
    } else if (value >= -0x80) {
      out[at++] = 0xd0;
      out[at++] = value + 0x100;
    } else if (value >= -0x8000) {
      out[at++] = 0xd1;
      out[at++] = (value >> 8) & 0xff;
      out[at++] = value & 0xff;
    } else {
      out[at++] = 0xd2;
      writeU32(value >>> 0);
    }
  } else {
    out[at++] = 0xcb;
    float64.setFloat64(0, value);
    for (let i = 0; i < 8; i++) out[at++] = float64.getUint8(i);
  }
}

function writeU32(value: number): void {
  out[at++] = value >>> 24;
  out[at++] = (value >>> 16) & 0xff;
  out[at++] = (value >>> 8) & 0xff;
  out[at++] = value & 0xff;
}

/** ASCII only; returns false, having written part of it, for any other character. */
function writeString(value: string): boolean {
  const length = value.length;
  room(length + 5);
  if (length < 0x20) {
    out[at++] = 0xa0 | length;
  } else if (length < 0x100) {
    out[at++] = 0xd9;
    out[at++] = length;
  } else if (length < 0x10000) {
    out[at++] = 0xda;
    out[at++] = length >> 8;
    out[at++] = length & 0xff;
  } else {
    out[at++] = 0xdb;
    writeU32(length);
  }
  for (let i = 0; i < length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0x80) return false;
    out[at++] = c;
  }
  return true;
}

function writeBin(value: Uint8Array): void {
  const length = value.byteLength;
  room(length + 5);
  if (length < 0x100) {
    out[at++] = 0xc4;
    out[at++] = length;
  } else if (length < 0x10000) {
    out[at++] = 0xc5;
    out[at++] = length >> 8;
    out[at++] = length & 0xff;
  } else {
    out[at++] = 0xc6;
    writeU32(length);
  }
  out.set(value, at);
  at += length;
}

function writeArray(value: unknown[], depth: number): boolean {
  const length = value.length;
  room(5);
  if (length < 0x10) {
    out[at++] = 0x90 | length;
  } else if (length < 0x10000) {
    out[at++] = 0xdc;
    out[at++] = length >> 8;
    out[at++] = length & 0xff;
  } else {
    out[at++] = 0xdd;
    writeU32(length);
  }
  for (let i = 0; i < length; i++) if (!writeValue(value[i], depth + 1)) return false;
  return true;
}

const standardHasOwn = Object.prototype.hasOwnProperty;

function writeMap(value: Record<string, unknown>, depth: number): boolean {
  // As msgpackr: the keys first (own, enumerable, value not undefined), then each key and value.
  // msgpackr walks for-in and asks `value.hasOwnProperty(key)`: with the standard method that
  // is Object.keys, in the same order; an object with a method of its own is msgpackr's business.
  if (value.hasOwnProperty !== standardHasOwn) return false;
  const keys = Object.keys(value);
  let written = keys;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    if (value[key] === undefined) {
      if (written === keys) written = keys.slice(0, i);
    } else if (written !== keys) {
      written.push(key);
    }
  }
  const length = written.length;
  room(5);
  if (length < 0x10) {
    out[at++] = 0x80 | length;
  } else if (length < 0x10000) {
    out[at++] = 0xde;
    out[at++] = length >> 8;
    out[at++] = length & 0xff;
  } else {
    out[at++] = 0xdf;
    writeU32(length);
  }
  for (let i = 0; i < length; i++) {
    const key = written[i] as string;
    if (!writeString(key) || !writeValue(value[key], depth + 1)) return false;
  }
  return true;
}

// ---- the fast decoder ----------------------------------------------------------------------------
//
// It accepts what decodeControl accepts and msgpackr reads without any of its special cases:
// nil, booleans, every integer and float format, str with ASCII bytes only, bin (as msgpackr: a
// view into the payload, `subarray`), arrays, and maps with ASCII str keys (`__proto__` renamed
// `__proto_`, as msgpackr does), nested no deeper than MAX_CONTROL_DEPTH, the top a map, every
// byte used. Anything else returns undefined and is decoded (or refused) by the general path.

/** Returned by the readers when the fast path gives up. */
const GIVE_UP: unique symbol = Symbol("give up");
type Read = unknown | typeof GIVE_UP;

let src: Uint8Array = new Uint8Array(0);
let pos = 0;
let end = 0;

function fastDecode(bytes: Uint8Array): Record<string, unknown> | undefined {
  const first = bytes[0];
  if (
    first === undefined ||
    !((first >= 0x80 && first <= 0x8f) || first === 0xde || first === 0xdf)
  ) {
    return undefined;
  }
  src = bytes;
  pos = 0;
  end = bytes.length;
  let value: Read;
  try {
    value = readValue(0);
  } finally {
    src = EMPTY_BYTES;
  }
  if (value === GIVE_UP || pos !== end) return undefined;
  return value as Record<string, unknown>;
}

const EMPTY_BYTES = new Uint8Array(0);

function readValue(depth: number): Read {
  if (depth > MAX_CONTROL_DEPTH || pos >= end) return GIVE_UP;
  const token = src[pos++] as number;
  if (token < 0x80) return token;
  if (token < 0x90) return readMap(token - 0x80, depth);
  if (token < 0xa0) return readArray(token - 0x90, depth);
  if (token < 0xc0) return readString(token - 0xa0);
  if (token >= 0xe0) return token - 0x100;
  switch (token) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xc4:
      return pos + 1 <= end ? readBin(readUint(1)) : GIVE_UP;
    case 0xc5:
      return pos + 2 <= end ? readBin(readUint(2)) : GIVE_UP;
    case 0xc6:
      return pos + 4 <= end ? readBin(readUint(4)) : GIVE_UP;
    case 0xca:
      return pos + 4 <= end ? readFloat(4) : GIVE_UP;
    case 0xcb:
      return pos + 8 <= end ? readFloat(8) : GIVE_UP;
    case 0xcc:
      return pos + 1 <= end ? readUint(1) : GIVE_UP;
    case 0xcd:
      return pos + 2 <= end ? readUint(2) : GIVE_UP;
    case 0xce:
      return pos + 4 <= end ? readUint(4) : GIVE_UP;
    case 0xcf:
      // As msgpackr with int64AsType "number": high word * 2^32 + low word.
      return pos + 8 <= end ? readUint(4) * 0x100000000 + readUint(4) : GIVE_UP;
    case 0xd0:
      return pos + 1 <= end ? (readUint(1) << 24) >> 24 : GIVE_UP;
    case 0xd1:
      return pos + 2 <= end ? (readUint(2) << 16) >> 16 : GIVE_UP;
    case 0xd2:
      return pos + 4 <= end ? readUint(4) | 0 : GIVE_UP;
    case 0xd3:
      return pos + 8 <= end ? (readUint(4) | 0) * 0x100000000 + readUint(4) : GIVE_UP;
    case 0xd9:
      return pos + 1 <= end ? readString(readUint(1)) : GIVE_UP;
    case 0xda:
      return pos + 2 <= end ? readString(readUint(2)) : GIVE_UP;
    case 0xdb:
      return pos + 4 <= end ? readString(readUint(4)) : GIVE_UP;
    case 0xdc:
      return pos + 2 <= end ? readArray(readUint(2), depth) : GIVE_UP;
    case 0xdd:
      return pos + 4 <= end ? readArray(readUint(4), depth) : GIVE_UP;
    case 0xde:
      return pos + 2 <= end ? readMap(readUint(2), depth) : GIVE_UP;
    case 0xdf:
      return pos + 4 <= end ? readMap(readUint(4), depth) : GIVE_UP;
    default:
      return GIVE_UP; // 0xc1 and the extensions
  }
}

/** A big-endian unsigned integer of `n` (1, 2 or 4) bytes; the caller checked they are there. */
function readUint(n: 1 | 2 | 4): number {
  const b = src;
  const p = pos;
  pos = p + n;
  if (n === 1) return b[p] as number;
  if (n === 2) return ((b[p] as number) << 8) | (b[p + 1] as number);
  return (
    (b[p] as number) * 0x1000000 +
    (((b[p + 1] as number) << 16) | ((b[p + 2] as number) << 8) | (b[p + 3] as number))
  );
}

function readFloat(n: 4 | 8): number {
  for (let i = 0; i < n; i++) float64.setUint8(i, src[pos + i] as number);
  pos += n;
  return n === 4 ? float64.getFloat32(0) : float64.getFloat64(0);
}

function readBin(length: number): Read {
  if (length > end - pos) return GIVE_UP;
  const bin = src.subarray(pos, pos + length);
  pos += length;
  return bin;
}

/**
 * Short strings seen lately (map keys, mostly: "method", "params", "value"…), by a hash of their
 * length and first bytes, so that decoding one again makes no new string. Bounded: 4096 slots of
 * strings under 16 characters, whatever a peer sends.
 */
const shortStrings: (string | undefined)[] = new Array(4096).fill(undefined);

/** Strings of ASCII bytes only (any decoder agrees on those); others are msgpackr's business. */
function readString(length: number): Read {
  if (length > end - pos || length > 4096) return GIVE_UP;
  const b = src;
  const p = pos;
  const stop = p + length;
  let text = "";
  if (length < 16) {
    const slot =
      ((length << 5) ^
        (length > 1
          ? ((b[p] as number) << 8) | (b[p + 1] as number)
          : length > 0
            ? (b[p] as number)
            : 0)) &
      0xfff;
    const seen = shortStrings[slot];
    if (seen !== undefined && seen.length === length) {
      let i = 0;
      while (i < length && seen.charCodeAt(i) === b[p + i]) i++;
      if (i === length) {
        pos = stop;
        return seen;
      }
    }
    for (let i = p; i < stop; i++) {
      const c = b[i] as number;
      if (c >= 0x80) return GIVE_UP;
      text += String.fromCharCode(c);
    }
    shortStrings[slot] = text;
  } else {
    for (let i = p; i < stop; i++) if ((b[i] as number) >= 0x80) return GIVE_UP;
    text = String.fromCharCode.apply(null, b.subarray(p, stop) as unknown as number[]);
  }
  pos = stop;
  return text;
}

function readArray(length: number, depth: number): Read {
  // Every item takes at least a byte: a longer claim is malformed (msgpackr says how).
  if (length > end - pos) return GIVE_UP;
  const array = new Array(length);
  for (let i = 0; i < length; i++) {
    const item = readValue(depth + 1);
    if (item === GIVE_UP) return GIVE_UP;
    array[i] = item;
  }
  return array;
}

function readMap(length: number, depth: number): Read {
  if (length > (end - pos) / 2) return GIVE_UP;
  const object: Record<string, unknown> = {};
  for (let i = 0; i < length; i++) {
    const token = src[pos];
    let key: Read;
    if (token !== undefined && token >= 0xa0 && token < 0xc0) {
      pos++;
      key = readString(token - 0xa0);
    } else if (token === 0xd9 || token === 0xda || token === 0xdb) {
      key = readValue(depth + 1);
    } else {
      return GIVE_UP; // keys that are not strings: msgpackr turns them into strings
    }
    if (key === GIVE_UP) return GIVE_UP;
    const item = readValue(depth + 1);
    if (item === GIVE_UP) return GIVE_UP;
    object[key === "__proto__" ? "__proto_" : (key as string)] = item;
  }
  return object;
}

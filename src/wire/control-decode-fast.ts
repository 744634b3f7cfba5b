/**
 * The fast path of decoding control payloads (control.ts): to exactly the values msgpackr reads.
 * Returns undefined where it gives up (and for anything malformed), and control.ts falls back to
 * msgpackr, which decodes or refuses it. test/wire/control-fast.test.ts compares the two.
 */
import { MAX_CONTROL_DEPTH } from "./frame.ts";

/** Scratch for reading floats. */
const float64 = new DataView(new ArrayBuffer(8));

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

export function fastDecode(bytes: Uint8Array): Record<string, unknown> | undefined {
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

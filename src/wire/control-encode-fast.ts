/**
 * The fast path of encoding control payloads (control.ts): plain data with ASCII strings, to
 * exactly the bytes msgpackr writes with control.ts's options. Returns undefined where it gives
 * up, and control.ts falls back to msgpackr. test/wire/control-fast.test.ts compares the two.
 */

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

export function fastEncode(value: unknown): Uint8Array | undefined {
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

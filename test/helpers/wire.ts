/** Helpers for wire tests: building streams of frames, garbage, and feeding decoders. */

import { crc32 } from "../../src/wire/crc32.ts";
import { FrameFlag, HEADER_BYTES } from "../../src/wire/frame.ts";
import { writeHeader } from "../../src/wire/header.ts";
import {
  type Frame,
  type FrameDecoder,
  FrameEncoder,
  type FrameInit,
  type WireOptions,
} from "../../src/wire/index.ts";

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function encodeAll(frames: readonly FrameInit[], options?: WireOptions): Uint8Array {
  const encoder = new FrameEncoder(options);
  return concat(frames.map((f) => encoder.encode(f)));
}

/** Feeds `bytes` cut at `cuts` (sorted offsets) and returns every frame yielded. */
export function decodeInPieces(
  decoder: FrameDecoder,
  bytes: Uint8Array,
  cuts: readonly number[],
): Frame[] {
  const out: Frame[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(...decoder.push(bytes.slice(from, cut)));
    from = cut;
  }
  return out;
}

/** The comparable part of a frame (payload copied to a plain array for deepStrictEqual). */
export function plain(f: Frame | FrameInit): {
  type: number;
  streamId: number;
  seq: number;
  payload: number[];
} {
  return {
    type: f.type,
    streamId: f.streamId ?? 0,
    seq: f.seq ?? 0,
    payload: [...(f.payload ?? [])],
  };
}

/**
 * A header whose checksum is valid but whose contents lie: `length` may exceed any limit, and
 * with `payloadCrc` set the payload checksum flag is on (and the crc will not match what follows).
 */
export function forgedHeader(fields: {
  type?: number;
  length: number;
  payloadCrc?: number;
}): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES);
  writeHeader(b, 0, {
    type: fields.type ?? 6,
    flags: fields.payloadCrc === undefined ? 0 : FrameFlag.PAYLOAD_CHECKSUM,
    streamId: 1,
    seq: 0,
    length: fields.length,
    payloadCrc: fields.payloadCrc ?? 0,
  });
  return b;
}

/** Applies `mutate` to the header at `bytes[0..32)` and then fixes its checksum, as a liar would. */
export function resealHeader(bytes: Uint8Array, mutate: (header: Uint8Array) => void): Uint8Array {
  const out = bytes.slice();
  mutate(out);
  new DataView(out.buffer).setUint32(28, crc32(out.subarray(0, 28)));
  return out;
}

/** XORs `bytes[at]` with `mask` in place (simulated corruption). */
export function flip(bytes: Uint8Array, at: number, mask = 0x01): void {
  bytes[at] = (bytes[at] ?? 0) ^ mask;
}

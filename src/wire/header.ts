/**
 * Reading and writing the 32-byte frame header (layout in frame.ts and docs/protocol.md).
 * Hot path: no allocation; the reader fills a caller-owned object.
 */
import { crc32Range } from "./crc32.ts";
import { FrameFlag, KNOWN_FLAGS, MAGIC, MAX_SEQ, WIRE_VERSION } from "./frame.ts";

/** Header fields other than magic and checksums. */
export interface HeaderFields {
  type: number;
  flags: number;
  streamId: number;
  seq: number;
  length: number;
  payloadCrc: number;
}

/** Why a 32-byte candidate is not a header we accept. */
export const HeaderVerdict = {
  OK: 0,
  /** The header checksum does not match: garbage, a fake magic, or corruption. */
  BAD_CHECKSUM: 1,
  /** The checksum matches but a field is invalid (version, reserved bits, sequence). */
  BAD_FIELD: 2,
  /** The checksum matches but the length is beyond the maximum frame size. */
  OVERSIZE: 3,
} as const;

export type HeaderVerdict = (typeof HeaderVerdict)[keyof typeof HeaderVerdict];

const M0 = MAGIC[0] as number;
const M1 = MAGIC[1] as number;
const M2 = MAGIC[2] as number;
const M3 = MAGIC[3] as number;

function readU32(b: Uint8Array, o: number): number {
  return (
    (((b[o] as number) << 24) |
      ((b[o + 1] as number) << 16) |
      ((b[o + 2] as number) << 8) |
      (b[o + 3] as number)) >>>
    0
  );
}

function writeU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

/**
 * Checks that `b[o .. o + 32)` is a header (the caller has already matched the magic) and fills
 * `out`. Fields are trusted only after the checksum passes.
 */
export function readHeader(
  b: Uint8Array,
  o: number,
  maxFrameBytes: number,
  out: HeaderFields,
): HeaderVerdict {
  if (crc32Range(b, o, o + 28) !== readU32(b, o + 28)) return HeaderVerdict.BAD_CHECKSUM;
  const flags = b[o + 6] as number;
  const seqHigh = readU32(b, o + 12);
  const payloadCrc = readU32(b, o + 24);
  if (
    b[o + 4] !== WIRE_VERSION ||
    b[o + 7] !== 0 ||
    (flags & ~KNOWN_FLAGS) !== 0 ||
    seqHigh > Math.floor(MAX_SEQ / 2 ** 32) ||
    ((flags & FrameFlag.PAYLOAD_CHECKSUM) === 0 && payloadCrc !== 0)
  ) {
    return HeaderVerdict.BAD_FIELD;
  }
  const length = readU32(b, o + 20);
  // An empty payload never carries a checksum (the encoder never sets the flag for one).
  if (length === 0 && (flags & FrameFlag.PAYLOAD_CHECKSUM) !== 0) return HeaderVerdict.BAD_FIELD;
  if (length > maxFrameBytes) return HeaderVerdict.OVERSIZE;
  out.type = b[o + 5] as number;
  out.flags = flags;
  out.streamId = readU32(b, o + 8);
  out.seq = seqHigh * 2 ** 32 + readU32(b, o + 16);
  out.length = length;
  out.payloadCrc = payloadCrc;
  return HeaderVerdict.OK;
}

/** Writes a complete header, checksum included, at `b[o]`. Fields must already be validated. */
export function writeHeader(b: Uint8Array, o: number, f: HeaderFields): void {
  b[o] = M0;
  b[o + 1] = M1;
  b[o + 2] = M2;
  b[o + 3] = M3;
  b[o + 4] = WIRE_VERSION;
  b[o + 5] = f.type;
  b[o + 6] = f.flags;
  b[o + 7] = 0;
  writeU32(b, o + 8, f.streamId);
  writeU32(b, o + 12, Math.floor(f.seq / 2 ** 32));
  writeU32(b, o + 16, f.seq >>> 0);
  writeU32(b, o + 20, f.length);
  writeU32(b, o + 24, f.payloadCrc);
  writeU32(b, o + 28, crc32Range(b, o, o + 28));
}

/** The number of leading bytes of `b[o .. end)` that agree with the magic (at most 4). */
export function magicPrefixLength(b: Uint8Array, o: number, end: number): number {
  let k = 0;
  while (k < 4 && o + k < end && b[o + k] === MAGIC[k]) k++;
  return k;
}

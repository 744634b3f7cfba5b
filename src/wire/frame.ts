/**
 * The frame: what every byte on a guestlink channel belongs to. `docs/protocol.md` is the
 * normative description; the names and words here follow it.
 *
 * ```
 *  0       4   5    6     7    8          12               20       24          28          32
 *  | magic | ver | type | flags | rsvd | stream id | sequence | length | payload crc | header crc |
 *     4      1     1      1      1        4           8          4          4             4
 * ```
 * All integers are big-endian. The header checksum covers bytes 0..27, so a length is believed
 * only after the header checks out.
 */

/** Marks the start of a frame: 0xAB then "GLK". A non-ASCII first byte so text lines rarely hold it. */
export const MAGIC = Uint8Array.of(0xab, 0x47, 0x4c, 0x4b);

/** The frame format version carried in every header. The session negotiates its own protocol version. */
export const WIRE_VERSION = 1;

/** Size of the fixed frame header. */
export const HEADER_BYTES = 32;

/** Default and bounds for the largest payload a decoder accepts and an encoder produces. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;
export const MIN_MAX_FRAME_BYTES = 1024;
export const LIMIT_MAX_FRAME_BYTES = 64 * 1024 * 1024;

/** How deeply control payload values may nest. Real messages need a handful of levels. */
export const MAX_CONTROL_DEPTH = 32;

/** Sequence numbers and stream ids are exact in a JavaScript number up to these bounds. */
export const MAX_SEQ = Number.MAX_SAFE_INTEGER;
export const MAX_STREAM_ID = 0xffffffff;

/** Frame types. Control frames carry msgpack payloads; DATA carries raw bytes. */
export const FrameType = {
  /** Opens (or re-opens) a session: versions, identity, limits, resume token. */
  HELLO: 1,
  /** Starts a call (stream id = call id) or, with no reply expected, a notification. */
  CALL: 2,
  /** A call's successful result. */
  RESULT: 3,
  /** A call's failure, or a session-level error when stream id is 0. */
  ERROR: 4,
  /** Asks the peer to stop a call; the peer confirms with RESULT or ERROR. */
  CANCEL: 5,
  /** Raw stream bytes. */
  DATA: 6,
  /** Grants the sender more credit on a stream (or on the session when stream id is 0). */
  WINDOW: 7,
  /** Half-closes one direction of a stream. */
  END: 8,
  /** Aborts a stream in both directions, with a reason. */
  RESET: 9,
  /** Keepalive probe; the peer answers PONG with the same payload. */
  PING: 10,
  /** Keepalive answer. */
  PONG: 11,
  /** Cumulative acknowledgement of received sequence numbers (for resume). */
  ACK: 12,
  /** The sender will start no new calls; in-flight work drains, then the session closes. */
  GOAWAY: 13,
} as const;

export type FrameType = (typeof FrameType)[keyof typeof FrameType];

const FRAME_TYPE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(FrameType).map(([name, value]) => [value, name]),
);

/** True when `type` is a frame type this version defines. */
export function isFrameType(type: number): type is FrameType {
  return FRAME_TYPE_NAMES[type] !== undefined;
}

/** The name of a frame type, or `UNKNOWN(n)`. */
export function frameTypeName(type: number): string {
  return FRAME_TYPE_NAMES[type] ?? `UNKNOWN(${type})`;
}

/** Header flag bits. Bits not defined here must be zero. */
export const FrameFlag = {
  /** The payload crc field holds a CRC-32 of the payload, checked before the frame is yielded. */
  PAYLOAD_CHECKSUM: 0x01,
} as const;

export const KNOWN_FLAGS = FrameFlag.PAYLOAD_CHECKSUM;

/** A decoded frame. `payload` may be a view into the bytes the decoder was given. */
export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  seq: number;
  payload: Uint8Array;
}

/** What callers pass to the encoder; omitted fields are zero or empty. */
export interface FrameInit {
  type: number;
  streamId?: number;
  seq?: number;
  payload?: Uint8Array;
}

/** A one-line rendering of a frame's header for logs and test failures. */
export function stringifyHeader(
  frame: Pick<Frame, "type" | "flags" | "streamId" | "seq"> & {
    payload?: Uint8Array;
  },
): string {
  const flags = frame.flags & FrameFlag.PAYLOAD_CHECKSUM ? " +crc" : "";
  const length = frame.payload === undefined ? "" : ` len=${frame.payload.length}`;
  return `${frameTypeName(frame.type)} stream=${frame.streamId} seq=${frame.seq}${length}${flags}`;
}

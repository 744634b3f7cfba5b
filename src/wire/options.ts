/** Options shared by the encoder and decoder, filled with defaults in one place. */
import { InvalidOptionError } from "../errors.ts";
import { type Crc32, crc32 } from "./crc32.ts";
import { DEFAULT_MAX_FRAME_BYTES, LIMIT_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES } from "./frame.ts";

export interface WireOptions {
  /** Largest payload accepted or produced. Default 1 MiB; from 1 KiB to 64 MiB. */
  maxFrameBytes?: number;
  /**
   * Encoder only: add a payload checksum to every frame that has a payload. Default true: only a
   * session whose two sides agreed to go without (docs/protocol.md 9.1) turns it off.
   */
  payloadChecksum?: boolean;
  /**
   * Decoder only: drop a frame whose payload has no checksum, as one whose checksum fails. Default
   * false (a receiver checks what is flagged); a session turns it on unless both sides agreed to
   * go without, so a peer cannot send unchecked payloads it was not allowed to.
   */
  requirePayloadChecksum?: boolean;
  /** CRC-32 used for payloads. Default: the wire's own; Node passes `zlib.crc32`, which is faster. */
  checksum?: Crc32;
}

export interface ResolvedWireOptions {
  maxFrameBytes: number;
  payloadChecksum: boolean;
  requirePayloadChecksum: boolean;
  checksum: Crc32;
}

export function resolveWireOptions(options: WireOptions = {}): ResolvedWireOptions {
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (
    !Number.isInteger(maxFrameBytes) ||
    maxFrameBytes < MIN_MAX_FRAME_BYTES ||
    maxFrameBytes > LIMIT_MAX_FRAME_BYTES
  ) {
    throw new InvalidOptionError(
      `maxFrameBytes must be an integer from ${MIN_MAX_FRAME_BYTES} to ${LIMIT_MAX_FRAME_BYTES}, got ${maxFrameBytes}`,
      { details: { option: "maxFrameBytes", value: maxFrameBytes } },
    );
  }
  if (options.checksum !== undefined && typeof options.checksum !== "function") {
    throw new InvalidOptionError("checksum must be a CRC-32 function", {
      details: { option: "checksum" },
    });
  }
  return {
    maxFrameBytes,
    payloadChecksum: options.payloadChecksum ?? true,
    requirePayloadChecksum: options.requirePayloadChecksum ?? false,
    checksum: options.checksum ?? crc32,
  };
}

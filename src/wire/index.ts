/** The wire layer: frame format, encoder, resynchronising decoder, checksums, limits. */
export { decodeControl, encodeControl, MAX_CONTROL_DEPTH } from "./control.ts";
export { type Crc32, crc32 } from "./crc32.ts";
export { type DecoderStats, FrameDecoder } from "./decode.ts";
export { FrameEncoder } from "./encode.ts";
export {
  DEFAULT_MAX_FRAME_BYTES,
  type Frame,
  FrameFlag,
  type FrameInit,
  FrameType,
  frameTypeName,
  HEADER_BYTES,
  isFrameType,
  LIMIT_MAX_FRAME_BYTES,
  MAGIC,
  MAX_SEQ,
  MAX_STREAM_ID,
  MIN_MAX_FRAME_BYTES,
  stringifyHeader,
  WIRE_VERSION,
} from "./frame.ts";
export { type ResolvedWireOptions, resolveWireOptions, type WireOptions } from "./options.ts";

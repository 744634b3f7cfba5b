/** Turning frames into bytes. */
import { FrameTooLargeError, InvalidFrameError } from "../errors.ts";
import { FrameFlag, type FrameInit, HEADER_BYTES, MAX_SEQ, MAX_STREAM_ID } from "./frame.ts";
import { type HeaderFields, writeHeader } from "./header.ts";
import { type ResolvedWireOptions, resolveWireOptions, type WireOptions } from "./options.ts";

const EMPTY = new Uint8Array(0);

/**
 * Encodes frames. `encodeParts` returns the header and the payload separately so a transport can
 * write both without copying the payload (writev); `encode` returns one buffer.
 */
export class FrameEncoder {
  readonly options: ResolvedWireOptions;
  readonly #fields: HeaderFields = {
    type: 0,
    flags: 0,
    streamId: 0,
    seq: 0,
    length: 0,
    payloadCrc: 0,
  };

  constructor(options?: WireOptions) {
    this.options = resolveWireOptions(options);
  }

  /** The 32-byte header for `frame`, checksums included. */
  encodeHeader(frame: FrameInit): Uint8Array {
    const header = new Uint8Array(HEADER_BYTES);
    this.#writeHeader(frame, header, 0);
    return header;
  }

  /**
   * Writes the 32-byte header for `frame` (checksums included) into `out` at `offset`, for a
   * caller that assembles frames in a buffer of its own; the payload is not written.
   */
  encodeHeaderInto(frame: FrameInit, out: Uint8Array, offset: number): void {
    if (offset < 0 || offset + HEADER_BYTES > out.length) {
      throw new RangeError(`no room for a frame header at offset ${offset} of ${out.length}`);
    }
    this.#writeHeader(frame, out, offset);
  }

  /** `[header, payload]`, or `[header]` when the payload is empty. The payload is not copied. */
  encodeParts(frame: FrameInit): Uint8Array[] {
    const header = this.encodeHeader(frame);
    const payload = frame.payload;
    return payload === undefined || payload.length === 0 ? [header] : [header, payload];
  }

  /** The whole frame in one new buffer. */
  encode(frame: FrameInit): Uint8Array {
    const payload = frame.payload ?? EMPTY;
    const out = new Uint8Array(HEADER_BYTES + payload.length);
    this.#writeHeader(frame, out, 0);
    out.set(payload, HEADER_BYTES);
    return out;
  }

  #writeHeader(frame: FrameInit, out: Uint8Array, offset: number): void {
    const payload = frame.payload ?? EMPTY;
    const streamId = frame.streamId ?? 0;
    const seq = frame.seq ?? 0;
    if (!Number.isInteger(frame.type) || frame.type < 0 || frame.type > 0xff) {
      throw new InvalidFrameError(`frame type must be an integer from 0 to 255, got ${frame.type}`);
    }
    if (!Number.isInteger(streamId) || streamId < 0 || streamId > MAX_STREAM_ID) {
      throw new InvalidFrameError(`stream id must be an integer from 0 to 2^32-1, got ${streamId}`);
    }
    if (!Number.isInteger(seq) || seq < 0 || seq > MAX_SEQ) {
      throw new InvalidFrameError(`sequence must be an integer from 0 to 2^53-1, got ${seq}`);
    }
    if (!(payload instanceof Uint8Array)) {
      throw new InvalidFrameError("payload must be a Uint8Array");
    }
    if (payload.length > this.options.maxFrameBytes) {
      throw new FrameTooLargeError(
        `payload of ${payload.length} bytes exceeds the maximum frame size of ${this.options.maxFrameBytes} bytes`,
        { details: { length: payload.length, maxFrameBytes: this.options.maxFrameBytes } },
      );
    }
    const f = this.#fields;
    const checksummed = this.options.payloadChecksum && payload.length > 0;
    f.type = frame.type;
    f.flags = checksummed ? FrameFlag.PAYLOAD_CHECKSUM : 0;
    f.streamId = streamId;
    f.seq = seq;
    f.length = payload.length;
    f.payloadCrc = checksummed ? this.options.checksum(payload) : 0;
    writeHeader(out, offset, f);
  }
}

/**
 * The incremental, resynchronising frame decoder.
 *
 * Feed it bytes in any chunking; it yields whole frames. It trusts nothing before it is checked:
 * a candidate header must start with the magic and pass its checksum before its length is
 * believed, and the length must be within `maxFrameBytes`. On any failure it skips ONE byte (not
 * the claimed length) and scans for the next magic, as node-mavlink's splitter does, so a frame
 * that follows garbage, a stray log line or half a frame is still found. A frame whose payload
 * checksum fails (or that has none when one is required) is dropped, and its bytes after the first are scanned again: the "payload" may
 * have swallowed the start of real frames (a truncated frame left in a serial port by an earlier
 * connection, then a new connection's frames).
 *
 * It holds at most a header's worth of bytes between frames and one frame (payload at most
 * `maxFrameBytes`) while a frame is in progress. A payload is not copied when it can be a view:
 * one within a chunk, and one spread over chunks that lie side by side in one buffer (a transport
 * that reads into the free end of a large buffer, as the socket transports do). Only a payload
 * split between separate buffers is assembled in one of its own.
 */
import { type Frame, FrameFlag, HEADER_BYTES, MAGIC } from "./frame.ts";
import { type HeaderFields, HeaderVerdict, magicPrefixLength, readHeader } from "./header.ts";
import { type ResolvedWireOptions, resolveWireOptions, type WireOptions } from "./options.ts";

/** Counters for everything the decoder saw. `frameBytes + skippedBytes + bufferedBytes` = bytes fed. */
export interface DecoderStats {
  /** Frames yielded. */
  frames: number;
  /** Header and payload bytes of the frames yielded. */
  frameBytes: number;
  /** Bytes that belong to no yielded frame (garbage, rejected headers, dropped frames' first byte). */
  skippedBytes: number;
  /** Candidates with a full magic whose header checksum or fields were bad. */
  badHeaders: number;
  /** Frames dropped because their payload checksum did not match (or was missing, when required). */
  badPayloads: number;
  /** Headers that checked out but claimed a length beyond `maxFrameBytes`. */
  oversize: number;
  /** Frames in progress given up by `resync()`. */
  abandoned: number;
}

const M0 = MAGIC[0] as number;
const EMPTY = new Uint8Array(0);

/** Counters that add `a` and `b` (a session sums those of its connections); no argument: zeros. */
export function sumDecoderStats(a?: DecoderStats, b?: DecoderStats): DecoderStats {
  const n = (k: keyof DecoderStats) => (a?.[k] ?? 0) + (b?.[k] ?? 0);
  return {
    frames: n("frames"),
    frameBytes: n("frameBytes"),
    skippedBytes: n("skippedBytes"),
    badHeaders: n("badHeaders"),
    badPayloads: n("badPayloads"),
    oversize: n("oversize"),
    abandoned: n("abandoned"),
  };
}

export class FrameDecoder {
  readonly options: ResolvedWireOptions;
  /** Drop frames whose payload has no checksum (see `WireOptions.requirePayloadChecksum`). */
  requirePayloadChecksum: boolean;
  readonly stats: DecoderStats = sumDecoderStats();

  /** Candidate header bytes; `#hdr[0]` is always the magic's first byte when `#hdrLen > 0`. */
  readonly #hdr = new Uint8Array(HEADER_BYTES);
  #hdrLen = 0;
  /** The accepted header of the frame in progress (valid while `#inFrame`). */
  readonly #fields: HeaderFields = {
    type: 0,
    flags: 0,
    streamId: 0,
    seq: 0,
    length: 0,
    payloadCrc: 0,
  };
  #inFrame = false;
  /**
   * The payload so far: a view of the chunks it came in while they lie side by side in one
   * buffer (`#owned` false, `#filled` bytes long), else a buffer of its full length being filled.
   */
  #payload: Uint8Array | null = null;
  #owned = false;
  #filled = 0;

  constructor(options?: WireOptions) {
    this.options = resolveWireOptions(options);
    this.requirePayloadChecksum = this.options.requirePayloadChecksum;
  }

  /** Bytes held for a frame not yet complete (never more than a header plus `maxFrameBytes`). */
  get bufferedBytes(): number {
    return this.#hdrLen + this.#filled;
  }

  /**
   * Feeds bytes and returns the frames they complete, in order. A payload may be a view into
   * `chunk` when the whole frame arrived in it: do not reuse `chunk` while its frames are alive.
   */
  push(chunk: Uint8Array): Frame[] {
    const out: Frame[] = [];
    // Rejected frames put their bytes back in front of the rest of the input; a stack keeps
    // that iterative however often it happens.
    const pending: Uint8Array[] = [chunk];
    for (let b = pending.pop(); b !== undefined; b = pending.pop()) this.#scan(b, out, pending);
    return out;
  }

  /**
   * Gives up on the frame in progress and scans its bytes again, returning any frames found in
   * them. The session calls this when a partial frame has waited too long: the header was real
   * but stale (an earlier connection's half-written frame) and the bytes after it are new frames.
   */
  resync(): Frame[] {
    if (!this.#inFrame) return [];
    this.stats.abandoned++;
    const replay = this.#takeReplay();
    return this.push(replay);
  }

  /** Drops everything held, counting it as skipped. For a transport known to start afresh. */
  reset(): void {
    this.stats.skippedBytes += this.bufferedBytes;
    this.#clear();
  }

  #scan(b: Uint8Array, out: Frame[], pending: Uint8Array[]): void {
    const n = b.length;
    const stats = this.stats;
    const fields = this.#fields;
    const max = this.options.maxFrameBytes;
    let i = 0;
    while (i < n) {
      if (this.#inFrame) {
        i = this.#fillPayload(b, i, out, pending);
        continue;
      }
      if (this.#hdrLen === 0) {
        const j = b.indexOf(M0, i);
        if (j < 0) {
          stats.skippedBytes += n - i;
          return;
        }
        stats.skippedBytes += j - i;
        i = j;
        if (n - i >= HEADER_BYTES) {
          // Fast path: the whole candidate header is in this chunk.
          if (magicPrefixLength(b, i, i + 4) < 4) {
            stats.skippedBytes++;
            i++;
            continue;
          }
          const verdict = readHeader(b, i, max, fields);
          if (verdict !== HeaderVerdict.OK) {
            this.#countRejection(verdict);
            stats.skippedBytes++;
            i++;
            continue;
          }
          const start = i + HEADER_BYTES;
          const length = fields.length;
          if (n - start >= length) {
            const payload = length === 0 ? EMPTY : b.subarray(start, start + length);
            if (this.#payloadChecks(payload)) {
              this.#emit(payload, out);
              i = start + length;
            } else {
              stats.badPayloads++;
              stats.skippedBytes++;
              i++;
            }
            continue;
          }
          // The payload runs past this chunk: keep the header in case the frame is rejected.
          this.#hdr.set(b.subarray(i, start));
          this.#hdrLen = HEADER_BYTES;
          this.#inFrame = true;
          i = start;
          continue;
        }
      }
      // Slow path: assemble a candidate header across chunks.
      const take = Math.min(HEADER_BYTES - this.#hdrLen, n - i);
      this.#hdr.set(b.subarray(i, i + take), this.#hdrLen);
      this.#hdrLen += take;
      i += take;
      this.#settleHeader(out);
    }
  }

  /** Checks what `#hdr` holds: drops bytes until it is a magic prefix, and accepts a full header. */
  #settleHeader(out: Frame[]): void {
    while (this.#hdrLen > 0) {
      if (magicPrefixLength(this.#hdr, 0, this.#hdrLen) < Math.min(4, this.#hdrLen)) {
        this.#dropFirstHeaderByte();
        continue;
      }
      if (this.#hdrLen < HEADER_BYTES) return;
      const verdict = readHeader(this.#hdr, 0, this.options.maxFrameBytes, this.#fields);
      if (verdict !== HeaderVerdict.OK) {
        this.#countRejection(verdict);
        this.#dropFirstHeaderByte();
        continue;
      }
      if (this.#fields.length === 0) {
        this.#hdrLen = 0;
        this.#emit(EMPTY, out);
      } else {
        this.#inFrame = true;
      }
      return;
    }
  }

  /** Skips `#hdr[0]` and shifts the next possible magic start to the front. */
  #dropFirstHeaderByte(): void {
    const next = this.#hdr.subarray(0, this.#hdrLen).indexOf(M0, 1);
    const drop = next < 0 ? this.#hdrLen : next;
    this.stats.skippedBytes += drop;
    this.#hdr.copyWithin(0, drop, this.#hdrLen);
    this.#hdrLen -= drop;
  }

  /** Takes payload bytes from `b[i..]` (a view while it can be one); returns where it stopped. */
  #fillPayload(b: Uint8Array, i: number, out: Frame[], pending: Uint8Array[]): number {
    const length = this.#fields.length;
    const take = Math.min(length - this.#filled, b.length - i);
    const so = this.#payload;
    if (so === null) {
      this.#payload = b.subarray(i, i + take);
    } else if (
      !this.#owned &&
      so.buffer === b.buffer &&
      so.byteOffset + so.length === b.byteOffset + i
    ) {
      // The chunk goes on where the last one ended, in the same buffer: a longer view will do.
      this.#payload = new Uint8Array(so.buffer, so.byteOffset, so.length + take);
    } else {
      if (!this.#owned) {
        const own = new Uint8Array(length);
        own.set(so);
        this.#payload = own;
        this.#owned = true;
      }
      (this.#payload as Uint8Array).set(b.subarray(i, i + take), this.#filled);
    }
    this.#filled += take;
    const next = i + take;
    if (this.#filled < length) return next;
    const payload = this.#payload as Uint8Array;
    if (this.#payloadChecks(payload)) {
      this.#clear();
      this.#emit(payload, out);
      return next;
    }
    this.stats.badPayloads++;
    // Scan the rejected frame's bytes again before the rest of this chunk.
    if (next < b.length) pending.push(b.subarray(next));
    pending.push(this.#takeReplay());
    return b.length;
  }

  /** The frame in progress minus its first byte (counted as skipped), clearing the state. */
  #takeReplay(): Uint8Array {
    const replay = new Uint8Array(HEADER_BYTES - 1 + this.#filled);
    replay.set(this.#hdr.subarray(1, HEADER_BYTES));
    if (this.#payload !== null)
      replay.set(this.#payload.subarray(0, this.#filled), HEADER_BYTES - 1);
    this.stats.skippedBytes++;
    this.#clear();
    return replay;
  }

  #payloadChecks(payload: Uint8Array): boolean {
    const f = this.#fields;
    if ((f.flags & FrameFlag.PAYLOAD_CHECKSUM) === 0) {
      return payload.length === 0 || !this.requirePayloadChecksum;
    }
    return this.options.checksum(payload) === f.payloadCrc;
  }

  #countRejection(verdict: HeaderVerdict): void {
    if (verdict === HeaderVerdict.OVERSIZE) this.stats.oversize++;
    else this.stats.badHeaders++;
  }

  #emit(payload: Uint8Array, out: Frame[]): void {
    const f = this.#fields;
    out.push({ type: f.type, flags: f.flags, streamId: f.streamId, seq: f.seq, payload });
    this.stats.frames++;
    this.stats.frameBytes += HEADER_BYTES + payload.length;
  }

  #clear(): void {
    this.#hdrLen = 0;
    this.#inFrame = false;
    this.#payload = null;
    this.#owned = false;
    this.#filled = 0;
  }
}

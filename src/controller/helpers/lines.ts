/**
 * Lines out of a byte stream, as a helper process writes them (issue 16's `lines` protocol, and
 * NDJSON): many lines in one write, a line split across writes, a last line without a newline
 * at the end. Every line comes out once and in order; a line longer than `maxLineBytes` is never
 * cut or merged with the next: it is reported with its length and skipped, and the line after it
 * comes out as usual. Memory stays within `maxLineBytes` whatever the stream holds.
 */

export interface LineSink {
  /** A whole line, without its newline. */
  line(text: string): void;
  /** A line of `bytes` bytes (newline not counted) that was longer than the limit, skipped. */
  tooLong(bytes: number): void;
}

const NEWLINE = 0x0a;

export class LineSplitter {
  readonly #max: number;
  readonly #sink: LineSink;
  /** The start of the current line, while it fits. */
  #parts: Buffer[] = [];
  #partBytes = 0;
  /** Bytes of the current line once it no longer fits (then nothing of it is kept). */
  #overflow = -1;

  constructor(maxLineBytes: number, sink: LineSink) {
    if (!Number.isSafeInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(
        `maxLineBytes must be a whole number of bytes >= 1, got ${maxLineBytes}`,
      );
    }
    this.#max = maxLineBytes;
    this.#sink = sink;
  }

  /** Bytes held for the line not yet ended (at most `maxLineBytes`). */
  get heldBytes(): number {
    return this.#partBytes;
  }

  push(chunk: Uint8Array): void {
    const bytes = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let from = 0;
    if (this.#partBytes > 0 || this.#overflow >= 0) {
      // The line begun in an earlier chunk, first.
      const newline = bytes.indexOf(NEWLINE);
      if (newline < 0) {
        this.#take(bytes);
        return;
      }
      this.#take(bytes.subarray(0, newline));
      this.#finishLine();
      from = newline + 1;
    }
    const last = bytes.lastIndexOf(NEWLINE);
    if (last >= from) {
      if (last - from <= this.#max) this.#wholeLines(bytes.toString("utf8", from, last));
      else this.#wholeLinesChecked(bytes, from, last);
      from = last + 1;
    }
    if (from < bytes.length) this.#take(bytes.subarray(from));
  }
  /** The stream ended: a last line without a newline comes out too. */
  end(): void {
    if (this.#partBytes > 0 || this.#overflow >= 0) this.#finishLine();
  }

  /**
   * Lines that all fit (their bytes together do), decoded as one text and cut at its newlines.
   * A newline byte is never part of a multi-byte UTF-8 sequence, so this is the text that
   * decoding each line apart gives, at one decoding per chunk instead of one per line.
   */
  #wholeLines(text: string): void {
    const sink = this.#sink;
    let from = 0;
    for (;;) {
      const newline = text.indexOf("\n", from);
      if (newline < 0) break;
      sink.line(text.slice(from, newline));
      from = newline + 1;
    }
    sink.line(from === 0 ? text : text.slice(from));
  }

  /** Lines from `bytes[from]` to the newline at `last`, each held to the limit. */
  #wholeLinesChecked(bytes: Buffer, from: number, last: number): void {
    for (;;) {
      const newline = bytes.indexOf(NEWLINE, from);
      const length = newline - from;
      if (length > this.#max) this.#sink.tooLong(length);
      else this.#sink.line(bytes.toString("utf8", from, newline));
      if (newline === last) return;
      from = newline + 1;
    }
  }

  #take(piece: Buffer): void {
    if (piece.length === 0) return;
    if (this.#overflow >= 0) {
      this.#overflow += piece.length;
      return;
    }
    if (this.#partBytes + piece.length > this.#max) {
      this.#overflow = this.#partBytes + piece.length;
      this.#parts = [];
      this.#partBytes = 0;
      return;
    }
    // Copied: the caller may reuse its buffer once push returns.
    this.#parts.push(Buffer.from(piece));
    this.#partBytes += piece.length;
  }

  #finishLine(): void {
    if (this.#overflow >= 0) {
      const bytes = this.#overflow;
      this.#overflow = -1;
      this.#sink.tooLong(bytes);
      return;
    }
    const text =
      this.#parts.length === 1
        ? (this.#parts[0] as Buffer).toString("utf8")
        : Buffer.concat(this.#parts, this.#partBytes).toString("utf8");
    this.#parts = [];
    this.#partBytes = 0;
    this.#sink.line(text);
  }
}

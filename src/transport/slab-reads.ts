/**
 * Reading a socket into large buffers (Node's `onread` option for `net.connect`): each read goes
 * into the free end of a 1 MiB slab, right after the one before, so bytes that arrived in several
 * reads still lie side by side. The frame decoder then takes a payload spread over reads as one
 * view instead of assembling a copy, and a read is not one allocation of its own. Node's default
 * reads allocate 64 KiB each and hand the frames spanning two of them to the decoder to copy.
 *
 * A slab lives as long as any view into it, as a read's buffer does with Node's own reads.
 */
import type net from "node:net";

/** Size of the buffers read into. */
export const SLAB_READ_BYTES = 1024 * 1024;
/** A slab with less free room than this is left for a new one (a read takes at most the room). */
export const MIN_READ_ROOM_BYTES = 64 * 1024;

/** Where the chunks go: the transport's `#onData`. */
export type ChunkSink = (chunk: Uint8Array) => void;

export class SlabReads {
  #slab: Uint8Array = Buffer.alloc(0);
  #at = 0;
  #sink: ChunkSink | undefined;
  /** What was read before the transport took over (it is made once the connect resolves). */
  #early: Uint8Array[] = [];

  /** For `net.connect({ onread })`. */
  readonly onread: net.OnReadOpts = {
    buffer: () => this.#room(),
    callback: (nread: number, buf: Uint8Array) => {
      const chunk = buf.subarray(0, nread);
      this.#at += nread;
      if (this.#sink === undefined) this.#early.push(chunk);
      else this.#sink(chunk);
      return true; // the transport pauses the socket itself, with pause()
    },
  };

  /** From now on chunks go to `sink`, those read so far first. */
  attach(sink: ChunkSink): void {
    this.#sink = sink;
    for (const chunk of this.#early.splice(0)) sink(chunk);
  }

  #room(): Uint8Array {
    if (this.#slab.length - this.#at < MIN_READ_ROOM_BYTES) {
      // Not zeroed: only what a read wrote is ever handed out.
      this.#slab = Buffer.allocUnsafeSlow(SLAB_READ_BYTES);
      this.#at = 0;
    }
    return this.#slab.subarray(this.#at);
  }
}

/**
 * Reading a socket into large buffers (Node's `onread` option for `net.connect`): each read goes
 * into the free end of a 1 MiB slab, right after the one before, so bytes that arrived in several
 * reads still lie side by side. The frame decoder then takes a payload spread over reads as one
 * view instead of assembling a copy, and a read is not one allocation of its own. Node's default
 * reads allocate 64 KiB each and hand the frames spanning two of them to the decoder to copy.
 *
 * A slab lives as long as any view into it, as a read's buffer does with Node's own reads, and
 * is read into again only when the session says nothing of it is in use any more (recycle.ts):
 * the decoder has moved past it, and every payload it handed out of it was stream data whose
 * consumer adopted it and the session released (the daemon passing an agent's output on). A
 * slab any other payload came from (a call's parameters) is left to the garbage collector.
 */
import type net from "node:net";
import { newSlab } from "../platform/slabs.ts";
import { type Recycler, recycleFrom } from "../recycle.ts";

/** Size of the buffers read into. */
export const SLAB_READ_BYTES = 1024 * 1024;
/** A slab with less free room than this is left for a new one (a read takes at most the room). */
export const MIN_READ_ROOM_BYTES = 64 * 1024;

/** Free slabs kept for reuse at most; more are left to the garbage collector. */
const MAX_FREE_SLABS = 8;
/**
 * Slabs free for reuse, shared by every SlabReads of the process: a connection that replaces a
 * lost one reads into the slabs its predecessor left (once its socket closed and its decoder was
 * done), instead of allocating its own and leaving those to the garbage collector. Measured with
 * a session whose connection was cut every 2 MiB of a stream (240 cuts): 30 mark-compacts and
 * 0.8 s of garbage collection in the client, against 1 and 0.05 s without cuts.
 */
const free: Uint8Array[] = [];

/** Chunks read and not yet decoded beyond which recycling stops (nobody reports decoding). */
const MAX_UNDECODED = 16_384;
const EMPTY = new Uint8Array(0);
let allocated = 0;
/** Slabs allocated so far by every SlabReads of the process (the rest were read into again). */
export function slabsAllocated(): number {
  return allocated;
}

/** Where the chunks go: the transport's `#onData`. */
export type ChunkSink = (chunk: Uint8Array) => void;

/** What became of one slab's bytes. */
interface SlabUse {
  readonly slab: Uint8Array;
  /** No longer read into. */
  retired: boolean;
  /** The decoder has taken a chunk of a later slab. */
  passed: boolean;
  /** A payload came out of it that never comes back. */
  kept: boolean;
  handedOut: number;
  adopted: number;
  released: number;
}

export class SlabReads implements Recycler {
  #slab: Uint8Array = Buffer.alloc(0);
  #at = 0;
  readonly #uses = new WeakMap<ArrayBufferLike, SlabUse>();
  /** The slab of the last chunk the decoder took. */
  #decoding: ArrayBufferLike | undefined;
  #recycling = true;
  /** Chunks read and handed on, not yet taken by the decoder, oldest first from the head. */
  #undecoded: Uint8Array[] = [];
  #undecodedHead = 0;

  #sink: ChunkSink | undefined;
  /** What was read before the transport took over (it is made once the connect resolves). */
  #early: Uint8Array[] = [];
  /** The socket closed: nothing is read into the slabs any more. */
  #closed = false;
  /** The decoder said it is done: it hands out nothing more (`finished`). */
  #finished = false;

  /** For `net.connect({ onread })`. */
  readonly onread: net.OnReadOpts = {
    buffer: () => this.#room(),
    callback: (nread: number, buf: Uint8Array) => {
      const chunk = buf.subarray(0, nread);
      this.#at += nread;
      if (!this.#recycling) {
        // As without recycling: nothing to track.
      } else if (this.#undecoded.length - this.#undecodedHead < MAX_UNDECODED) {
        this.#undecoded.push(chunk);
      } else {
        // Whoever reads this transport does not say what it decoded (recycle.ts): read into new
        // slabs from now on, as without recycling.
        this.#undecoded = [];
        this.#undecodedHead = 0;
        this.#recycling = false;
      }
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

  /**
   * Stops handing chunks to the sink until the next `attach`, which gets `first` (if any) before
   * what is read meanwhile. For a preamble read before the protocol (an HTTP upgrade's answer):
   * its reader says `decoded` of each chunk it used up, and gives back a copy of what followed.
   */
  detach(first?: Uint8Array): void {
    this.#sink = undefined;
    if (first !== undefined && first.length > 0) this.#early.unshift(first);
  }

  handedOut(view: Uint8Array, mayComeBack: boolean): void {
    const use = this.#uses.get(view.buffer);
    if (use === undefined) return;
    if (mayComeBack) use.handedOut += view.length;
    else use.kept = true;
  }

  decoded(chunk: Uint8Array): void {
    if (!this.#recycling) return;
    // Only our own chunks, in the order they were read, tell where our decoder is: a decoder of
    // another session fed views of our slabs (an in-process pair passes bytes uncopied) does not.
    if (chunk !== this.#undecoded[this.#undecodedHead]) return;
    this.#undecoded[this.#undecodedHead++] = EMPTY;
    if (this.#undecodedHead === this.#undecoded.length) {
      this.#undecoded = [];
      this.#undecodedHead = 0;
    }
    if (chunk.buffer === this.#decoding) return;
    const before = this.#decoding === undefined ? undefined : this.#uses.get(this.#decoding);
    this.#decoding = chunk.buffer;
    if (before === undefined) return;
    before.passed = true;
    this.#maybeFree(before);
  }

  finished(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#wrapUp();
  }

  /** The socket's handle is closed: no read goes into a slab any more. */
  closed(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wrapUp();
  }

  /**
   * Once nothing is read into the slabs and the decoder is done with them, the ones it had not
   * moved past yet are free as soon as their stream bytes are back (which may be now).
   */
  #wrapUp(): void {
    if (!this.#closed || !this.#finished || !this.#recycling) return;
    const last = new Set<ArrayBufferLike>([this.#slab.buffer]);
    if (this.#decoding !== undefined) last.add(this.#decoding);
    for (let i = this.#undecodedHead; i < this.#undecoded.length; i++) {
      last.add((this.#undecoded[i] as Uint8Array).buffer);
    }
    this.#undecoded = [];
    this.#undecodedHead = 0;
    for (const buffer of last) {
      const use = this.#uses.get(buffer);
      if (use === undefined) continue;
      use.retired = true;
      use.passed = true;
      this.#maybeFree(use);
    }
  }

  share(view: Uint8Array): void {
    const use = this.#uses.get(view.buffer);
    if (use !== undefined) use.kept = true;
  }

  adopt(view: Uint8Array): void {
    const use = this.#uses.get(view.buffer);
    if (use !== undefined) use.adopted += view.length;
  }

  release(view: Uint8Array): void {
    const use = this.#uses.get(view.buffer);
    if (use === undefined) return;
    use.released += view.length;
    this.#maybeFree(use);
  }

  #maybeFree(use: SlabUse): void {
    if (
      !use.retired ||
      !use.passed ||
      use.kept ||
      use.adopted !== use.handedOut ||
      use.released !== use.handedOut ||
      free.length >= MAX_FREE_SLABS
    ) {
      return;
    }
    this.#uses.delete(use.slab.buffer);
    free.push(use.slab);
  }

  #room(): Uint8Array {
    if (this.#slab.length - this.#at < MIN_READ_ROOM_BYTES) {
      const retired = this.#uses.get(this.#slab.buffer);
      if (retired !== undefined) {
        retired.retired = true;
        this.#maybeFree(retired);
      }
      let slab = free.pop();
      if (slab === undefined) {
        slab = newSlab(SLAB_READ_BYTES);
        allocated++;
      }
      recycleFrom(slab.buffer, this);
      this.#uses.set(slab.buffer, {
        slab,
        retired: false,
        passed: false,
        kept: false,
        handedOut: 0,
        adopted: 0,
        released: 0,
      });
      this.#slab = slab;
      this.#at = 0;
    }
    return this.#slab.subarray(this.#at);
  }
}

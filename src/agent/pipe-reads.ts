/**
 * A command's output pipe read into a few recycled buffers (src/recycle.ts), as a Readable.
 *
 * Node reads a pipe into a new 64 KiB buffer each time; streaming a command's output then
 * allocates as many bytes as it streams, and the agent's heap answers with a full collection
 * every few MiB and tens of MiB of garbage held between them. Here each read goes into the free
 * end of a 1 MiB slab, right after the one before (so the session sends consecutive reads as one
 * frame without copying them), and a slab is read into again once the session has handed back
 * every byte read into it: once the peer acknowledged them. Slabs whose bytes are never handed
 * back (the stream was reset, the output was cut at its limit) are left to the garbage collector.
 */
import net from "node:net";
import { Readable } from "node:stream";
import { newSlab } from "../platform/slabs.ts";
import { type Recycler, recycleFrom } from "../recycle.ts";

/** Size of the slabs read into. */
export const PIPE_SLAB_BYTES = 1024 * 1024;
/** A slab with less room than this is retired for another (a pipe read returns at most 64 KiB). */
const MIN_READ_ROOM_BYTES = 64 * 1024;
/** Retired slabs kept for reuse at most; more are left to the garbage collector. */
const MAX_FREE_SLABS = 4;

/** Slabs and what of each the session still holds. Shared by every pipe of the agent. */
class SlabPool implements Recycler {
  readonly #free: Uint8Array[] = [];
  /** Bytes read into each slab and not yet handed back (weak: a slab never handed back is garbage). */
  readonly #held = new WeakMap<ArrayBufferLike, number>();
  /** Slabs still being read into: they are not free even when nothing of them is held. */
  readonly #reading = new WeakSet<ArrayBufferLike>();
  /** Slabs some of whose bytes went elsewhere uncopied (recycle.ts `shared`): never reused. */
  readonly #shared = new WeakSet<ArrayBufferLike>();

  /** Slabs allocated so far (the rest of the reads went into slabs used again). */
  allocated = 0;

  take(): Uint8Array {
    let slab = this.#free.pop();
    if (slab === undefined) {
      slab = newSlab(PIPE_SLAB_BYTES);
      this.allocated++;
    }
    recycleFrom(slab.buffer, this);
    this.#reading.add(slab.buffer);
    return slab;
  }

  /** `view` was read into a slab and handed to the session. */
  read(view: Uint8Array): void {
    this.#held.set(view.buffer, (this.#held.get(view.buffer) ?? 0) + view.length);
  }

  /** `slab` is no longer read into: free once nothing of it is held. */
  retire(slab: Uint8Array): void {
    this.#reading.delete(slab.buffer);
    if (!this.#held.has(slab.buffer)) this.#keep(slab);
  }

  release(view: Uint8Array): void {
    const held = (this.#held.get(view.buffer) ?? 0) - view.length;
    if (held > 0) {
      this.#held.set(view.buffer, held);
      return;
    }
    this.#held.delete(view.buffer);
    if (!this.#reading.has(view.buffer)) this.#keep(new Uint8Array(view.buffer));
  }

  share(view: Uint8Array): void {
    this.#shared.add(view.buffer);
  }

  #keep(slab: Uint8Array): void {
    if (this.#free.length < MAX_FREE_SLABS && !this.#shared.has(slab.buffer)) {
      this.#free.push(slab);
    }
  }
}

export const pipeSlabs = new SlabPool();

/** The read end of a pipe (`fd`), its reads in recycled slabs. */
export class PipeReadable extends Readable {
  readonly #socket: net.Socket;
  #slab: Uint8Array;
  #at = 0;

  constructor(fd: number) {
    super();
    this.#slab = pipeSlabs.take();
    // `onread` works in the constructor as in net.connect (Node 12+); @types/node omits it there.
    this.#socket = new net.Socket({
      fd,
      readable: true,
      writable: false,
      onread: {
        buffer: () => this.#room(),
        callback: (nread: number, buf: Uint8Array) => {
          const chunk = buf.subarray(0, nread);
          pipeSlabs.read(chunk);
          this.#at += nread;
          if (!this.push(chunk)) this.#socket.pause();
          return true;
        },
      },
    } as net.SocketConstructorOpts);
    this.#socket.on("end", () => this.#finish(() => this.push(null)));
    this.#socket.on("error", (err) => this.#finish(() => this.destroy(err)));
  }

  override _read(): void {
    this.#socket.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#finish(() => this.#socket.destroy());
    callback(err);
  }

  #room(): Uint8Array {
    if (this.#slab.length - this.#at < MIN_READ_ROOM_BYTES) {
      pipeSlabs.retire(this.#slab);
      this.#slab = pipeSlabs.take();
      this.#at = 0;
    }
    return this.#slab.subarray(this.#at);
  }

  #finished = false;
  #finish(then: () => void): void {
    if (!this.#finished) {
      this.#finished = true;
      pipeSlabs.retire(this.#slab);
    }
    then();
  }
}

/**
 * Buffers whose bytes go back to their owner once nobody needs them, so that bulk data is read
 * into the same few buffers again instead of new ones for every read. Fresh buffers for every
 * byte cost more than the allocation: V8 counts them as external memory and, with a small heap,
 * answers nearly every few MiB of them with a full mark-compact (about 30-40 per 512 MiB
 * streamed, measured), and the garbage between collections is tens of MiB of resident memory.
 *
 * An owner registers a buffer (`recycleFrom`). Two owners use it:
 *
 * - A source of stream bytes (a command's output pipe in the agent) hands chunks of its buffers
 *   to a session stream. The session hands them back (`release`) exactly once each: once they
 *   were copied elsewhere, or once the peer acknowledged the frame that carried them (it is
 *   written and will never be written again). A frame sent again after damage goes as a copy,
 *   so its bytes come back all the same. Bytes of a frame replayed as they are on the transport
 *   that wrote them (a peer began anew in mid-stream) never come back: the first write may still
 *   wait in its queue. A frame replayed on a new transport does: the one it replaced was
 *   aborted, and what it still queued is never written.
 * - A transport's reads (transport/slab-reads.ts). The session tells it what the decoder made of
 *   its bytes (`handedOut`: every payload, and whether it is stream data that may come back;
 *   `decoded`: the decoder has taken a chunk; `finished`: the connection is over and its decoder
 *   hands out nothing more), and a consumer that keeps no reference to stream bytes once the
 *   session is done with them says so (`adopt`: the daemon passing an agent's output on to a
 *   client, the CLI writing it to stdout). A buffer is read into again, by any connection of the
 *   process, only when every payload handed out of it was stream data, adopted, and released,
 *   and the decoder has moved past it (or finished, with the socket closed). Small control
 *   payloads (a HELLO, a call's parameters) are copied out instead of keeping their buffer.
 *
 * A transport that hands the bytes it is given to its peer as they are, without copying them
 * (the memory pair), says so (`shared`): the peer's reader may keep them, so their buffer is
 * never read into again.
 *
 * Bytes dropped without coming back only keep their buffer from being reused: the garbage
 * collector takes it as it would have anyway. Nothing here ever makes a buffer reused early.
 */

/** Takes back bytes of the buffers it registered. */
export interface Recycler {
  /** The session is done with `view`'s bytes (a view into a buffer registered by this owner). */
  release(view: Uint8Array): void;
  /** A payload the decoder made of this owner's bytes; `mayComeBack`: stream data. */
  handedOut?(view: Uint8Array, mayComeBack: boolean): void;
  /** The decoder has taken `chunk` (and holds no view of buffers read before it). */
  decoded?(chunk: Uint8Array): void;
  /** The decoder is done with this owner's bytes: it hands out nothing more of them. */
  finished?(): void;
  /** Stream bytes whose consumer keeps no reference once the session releases them. */
  adopt?(view: Uint8Array): void;
  /** Bytes handed to someone else as they are, who may keep them: never reuse their buffer. */
  share(view: Uint8Array): void;
}

const owners = new WeakMap<ArrayBufferLike, Recycler>();

/** Bytes in `buffer` go back to `owner` (see above). */
export function recycleFrom(buffer: ArrayBufferLike, owner: Recycler): void {
  owners.set(buffer, owner);
}

/** The session is done with `view`'s bytes: its owner, if it has one, takes them back. */
export function release(view: Uint8Array): void {
  owners.get(view.buffer)?.release(view);
}

/** Whether `view`'s buffer has an owner that may read into it again. */
export function recycled(view: Uint8Array): boolean {
  return owners.has(view.buffer);
}

/** The decoder handed out `view`, a frame's payload: stream data (`mayComeBack`) or not. */
export function handedOut(view: Uint8Array, mayComeBack: boolean): void {
  owners.get(view.buffer)?.handedOut?.(view, mayComeBack);
}

/** The decoder has taken `chunk`. */
export function decoded(chunk: Uint8Array): void {
  owners.get(chunk.buffer)?.decoded?.(chunk);
}

/** The decoder whose last chunk was `chunk` is done: it hands out nothing more of its bytes. */
export function finished(chunk: Uint8Array): void {
  owners.get(chunk.buffer)?.finished?.();
}

/** `view`'s consumer keeps no reference to it once the session releases it. */
export function adopt(view: Uint8Array): void {
  owners.get(view.buffer)?.adopt?.(view);
}

/**
 * `view`'s bytes in a buffer of their own, of the same class. Not `view.slice()`: on a Node
 * Buffer that is a view of the same bytes, which would then be read into again under whoever
 * holds the "copy".
 */
export function copyOf<T extends Uint8Array>(view: T): T {
  return Uint8Array.prototype.slice.call(view) as T;
}

/**
 * Stream bytes handed out that nobody will be given (a frame the connection ended before, a
 * duplicate, one dropped after a gap): they go back to their owner at once, as if consumed.
 */
export function discard(view: Uint8Array): void {
  const owner = owners.get(view.buffer);
  owner?.adopt?.(view);
  owner?.release(view);
}

/** `view` went to a peer uncopied (an in-memory transport): its buffer is never reused. */
export function shared(view: Uint8Array): void {
  owners.get(view.buffer)?.share(view);
}

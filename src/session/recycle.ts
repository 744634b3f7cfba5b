/**
 * Buffers whose bytes go back to their owner once the session no longer needs them, so that a
 * source of bulk data (a command's output in the agent) reads into the same few buffers again
 * instead of allocating new ones for every read. Fresh buffers for every byte cost more than
 * the allocation: V8 counts them as external memory and, with a small heap, answers nearly every
 * few MiB of them with a full mark-compact (about 40 per 512 MiB streamed, measured), and the
 * garbage between collections is tens of MiB of resident memory.
 *
 * An owner registers a buffer (`recycleFrom`); stream bytes that lie in it are then handed back
 * (`release`) exactly once each, when the session is done with them: once they were copied
 * elsewhere, or once the peer acknowledged the frame that carried them (it is written and will
 * never be written again). Bytes the session drops without sending (a reset stream) are never
 * handed back, so the owner never reuses that buffer and the garbage collector takes it as usual.
 * A frame that was written twice (sent again after damage, or replayed on a new connection) is
 * not handed back either: a copy may still wait in a transport's queue.
 */

/** Takes back bytes of the buffers it registered. */
export interface Recycler {
  /** The session is done with `view`'s bytes (a view into a buffer registered by this owner). */
  release(view: Uint8Array): void;
}

const owners = new WeakMap<ArrayBufferLike, Recycler>();

/** Stream bytes in `buffer` go back to `owner` once the session is done with them. */
export function recycleFrom(buffer: ArrayBufferLike, owner: Recycler): void {
  owners.set(buffer, owner);
}

/** The session is done with `view`'s bytes: its owner, if it has one, takes them back. */
export function release(view: Uint8Array): void {
  owners.get(view.buffer)?.release(view);
}

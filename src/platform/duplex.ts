/**
 * A session stream as a Node Duplex, so it pipes to and from files, sockets and child processes
 * with backpressure end to end: the Duplex's writable side holds its callback while the stream's
 * queue is full (so `pipe()` pauses the source), and bytes are reported consumed only once the
 * readable side has room for them (so a slow reader withholds credit from the peer).
 *
 * Received chunks wait here until Node asks for more (`read()`), and go one at a time, never
 * from inside `read()` itself: Node's `read()` with no size (an async iterator's) joins every
 * chunk its buffer holds into one new buffer, a copy of the stream that a reader keeping up
 * would otherwise pay whenever one transport read brought several DATA frames.
 */
import { Duplex } from "node:stream";
import { GuestlinkError } from "../errors.ts";
import type { SessionStream } from "../session/stream.ts";

const EMPTY = new Uint8Array(0);

/**
 * Errors (a RESET from the peer, the session ending) are emitted as usual, but a Duplex that
 * nobody listens to any more never crashes the process with one: the call that owns the stream
 * reports the failure. A Duplex destroyed after reading the peer's direction to its end, having
 * written nothing (a for-await reader that is done), ends our direction instead of resetting it.
 */
export function toDuplex(stream: SessionStream): Duplex {
  /** Received chunks not yet given to Node, oldest first from `heldHead`. */
  let held: Uint8Array[] = [];
  let heldHead = 0;
  let heldBytes = 0;
  /** Node asked for more and has not been given a chunk since. */
  let wanted = false;
  /** A `give` is queued (Node asked from inside its `read()`). */
  let giving = false;
  /** The peer's END arrived: Node's end follows the held chunks. */
  let remoteEnded = false;
  let endGiven = false;
  let written = 0;
  /** Hands held chunks to Node while it wants more; each counts as consumed as it goes. */
  const give = () => {
    giving = false;
    while (wanted && heldHead < held.length) {
      const chunk = held[heldHead] as Uint8Array;
      held[heldHead++] = EMPTY;
      heldBytes -= chunk.length;
      if (heldHead === held.length) {
        held = [];
        heldHead = 0;
      }
      stream.consumed(chunk.length);
      wanted = duplex.push(chunk);
    }
    if (remoteEnded && heldHead === held.length && !endGiven) {
      endGiven = true;
      duplex.push(null);
    }
  };
  const duplex = new Duplex({
    // Node's own buffering stays small; the stream's window does the real work.
    readableHighWaterMark: 64 * 1024,
    writableHighWaterMark: 64 * 1024,
    write(chunk: Buffer, _encoding, callback) {
      written += chunk.length;
      try {
        if (stream.write(chunk)) callback();
        else stream.onDrain = () => callback(stream.closed ? closedError(stream) : undefined);
      } catch (err) {
        callback(err as Error);
      }
    },
    writev(chunks, callback) {
      try {
        let below = true;
        for (const { chunk } of chunks) {
          written += (chunk as Buffer).length;
          below = stream.write(chunk as Buffer);
        }
        if (below) callback();
        else stream.onDrain = () => callback(stream.closed ? closedError(stream) : undefined);
      } catch (err) {
        callback(err as Error);
      }
    },
    final(callback) {
      stream.end();
      stream.whenOutputDone(() => callback());
    },
    read() {
      wanted = true;
      if (!giving && (heldHead < held.length || remoteEnded)) {
        giving = true;
        queueMicrotask(give);
      }
    },
    destroy(err, callback) {
      if (!stream.closed) {
        // Node destroys a Duplex whose reader is done (for-await over it does, with an
        // AbortError while our writable side is open). Read to the peer's END with nothing
        // written is a normal finish: end our direction. Anything else abandons the stream
        // (a writer aborted half-way must not look complete): reset it.
        const readerDone = duplex.readableEnded && written === 0;
        if (readerDone && (!err || err.name === "AbortError")) stream.end();
        else stream.reset("CANCELLED", err ? err.message : "stream destroyed before its end");
      }
      // What the reader was never given is consumed as far as the peer is concerned.
      if (heldBytes > 0) {
        stream.consumed(heldBytes);
        held = [];
        heldHead = 0;
        heldBytes = 0;
      }
      callback(err);
    },
  });
  duplex.on("error", () => {});
  stream.attach({
    data(chunk) {
      if (duplex.destroyed) {
        stream.consumed(chunk.length);
        return;
      }
      held.push(chunk);
      heldBytes += chunk.length;
      if (wanted && !giving) give();
    },
    end() {
      remoteEnded = true;
      if (!giving && heldHead === held.length) give();
    },
    error(err) {
      duplex.destroy(err);
    },
  });
  return duplex;
}

function closedError(stream: SessionStream): GuestlinkError {
  return new GuestlinkError("STREAM_CLOSED", `stream "${stream.name}" closed while writing`);
}

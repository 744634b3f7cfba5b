/**
 * A session stream as a Node Duplex, so it pipes to and from files, sockets and child processes
 * with backpressure end to end: the Duplex's writable side holds its callback while the stream's
 * queue is full (so `pipe()` pauses the source), and bytes are reported consumed only once the
 * readable side has room for them (so a slow reader withholds credit from the peer).
 */
import { Duplex } from "node:stream";
import { GuestlinkError } from "../errors.ts";
import type { SessionStream } from "../session/stream.ts";

/**
 * Errors (a RESET from the peer, the session ending) are emitted as usual, but a Duplex that
 * nobody listens to any more never crashes the process with one: the call that owns the stream
 * reports the failure. A Duplex destroyed after reading the peer's direction to its end, having
 * written nothing (a for-await reader that is done), ends our direction instead of resetting it.
 */
export function toDuplex(stream: SessionStream): Duplex {
  /** Bytes pushed while the readable side was full: consumed when Node next asks for more. */
  let owed = 0;
  let written = 0;
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
      if (owed > 0) {
        const n = owed;
        owed = 0;
        stream.consumed(n);
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
      // What the reader was given but never took back is consumed as far as the peer is concerned.
      if (owed > 0) {
        stream.consumed(owed);
        owed = 0;
      }
      callback(err);
    },
  });
  duplex.on("error", () => {});
  stream.attach({
    data(chunk) {
      if (duplex.push(chunk)) stream.consumed(chunk.length);
      else owed += chunk.length;
    },
    end() {
      duplex.push(null);
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

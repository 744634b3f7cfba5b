/**
 * A session stream as a Node Duplex, so it pipes to and from files, sockets and child processes
 * with backpressure end to end: the Duplex's writable side holds its callback while the stream's
 * queue is full (so `pipe()` pauses the source), and bytes are reported consumed only once the
 * readable side has room for them (so a slow reader withholds credit from the peer).
 */
import { Duplex } from "node:stream";
import { GuestlinkError } from "../errors.ts";
import type { SessionStream } from "../session/stream.ts";

export function toDuplex(stream: SessionStream): Duplex {
  /** Bytes pushed while the readable side was full: consumed when Node next asks for more. */
  let owed = 0;
  const duplex = new Duplex({
    // Node's own buffering stays small; the stream's window does the real work.
    readableHighWaterMark: 64 * 1024,
    writableHighWaterMark: 64 * 1024,
    write(chunk: Buffer, _encoding, callback) {
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
        for (const { chunk } of chunks) below = stream.write(chunk as Buffer);
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
        // AbortError when our writable side is still open). Having read to the peer's END is
        // a normal finish: end our direction. Anything else abandons the stream: reset it.
        if (stream.remoteEnded && (!err || err.name === "AbortError")) stream.end();
        else stream.reset("CANCELLED", err ? err.message : "stream destroyed before its end");
      }
      callback(err);
    },
  });
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

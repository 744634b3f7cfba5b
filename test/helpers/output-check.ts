/** Checking a command's output byte for byte without keeping it. */
import { createHash } from "node:crypto";
import { Writable } from "node:stream";

/**
 * A command writing `bytes` random bytes to stdout and into `file`, then the file's sha256 to
 * stderr: what arrived is checked against the command's own hash of what it wrote.
 */
export function randomOutput(bytes: number, file: string): string[] {
  return ["sh", "-c", `head -c ${bytes} /dev/urandom | tee "$1"; sha256sum "$1" >&2`, "sh", file];
}

/**
 * A Writable that hashes and counts what it is given and keeps nothing once a write is done, as
 * process.stdout does.
 */
export function hashSink(): Writable & { digest(): { sha256: string; bytes: number } } {
  const hash = createHash("sha256");
  let bytes = 0;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      bytes += chunk.length;
      done();
    },
  });
  return Object.assign(sink, { digest: () => ({ sha256: hash.digest("hex"), bytes }) });
}

/** A Writable that keeps what it is given as text (a command's stderr, a short output). */
export function textSink(): Writable & { text(): string } {
  let text = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  return Object.assign(sink, { text: () => text });
}

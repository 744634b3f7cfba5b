/** Helpers for transport tests: moving bytes through a Transport and checking how it fails. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ErrorCode } from "../../src/errors.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import type { Listener, Transport } from "../../src/transport/transport.ts";
import { concat } from "./wire.ts";

/** Deterministic, non-repeating-looking bytes: byte i of stream `seed`. */
export function pattern(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

export { concat };

export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Reads until the end of the stream and returns everything, copied into one array. */
export async function readAll(transport: Transport): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of transport) chunks.push(Uint8Array.from(chunk));
  return concat(chunks);
}

/** Sends `data` in `chunkBytes` pieces (several per send), honouring backpressure. */
export async function sendAll(
  transport: Transport,
  data: Uint8Array,
  chunkBytes = 16 * 1024,
  chunksPerSend = 4,
): Promise<void> {
  for (let at = 0; at < data.length; ) {
    const batch: Uint8Array[] = [];
    for (let i = 0; i < chunksPerSend && at < data.length; i++) {
      batch.push(data.subarray(at, at + chunkBytes));
      at += chunkBytes;
    }
    if (!transport.send(batch)) await transport.drain();
  }
}

/** Sends back everything it receives, then closes when the peer has closed its side. */
export async function echo(transport: Transport): Promise<void> {
  for await (const chunk of transport) {
    if (!transport.send([chunk])) await transport.drain();
  }
  await transport.close();
}

/** The next accepted connection. */
export async function accept(listener: Listener): Promise<Transport> {
  const next = await listener[Symbol.asyncIterator]().next();
  assert.equal(next.done, false, "the listener ended instead of accepting");
  return next.value as Transport;
}

/** Asserts that `promise` rejects with a guestlink error of `code` whose message matches. */
export async function rejectsWith(
  promise: Promise<unknown>,
  code: ErrorCode,
  message?: RegExp,
): Promise<Error> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `expected a ${code} rejection, but it resolved`);
  assert.ok(
    isGuestlinkError(caught, code),
    `expected ${code}, got ${(caught as { code?: string }).code ?? ""} ${String(caught)}`,
  );
  if (message !== undefined) assert.match((caught as Error).message, message);
  return caught as Error;
}

/** Asserts that `fn` throws a guestlink error of `code` whose message matches. */
export function throwsWith(fn: () => unknown, code: ErrorCode, message?: RegExp): Error {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `expected a ${code} error, but nothing was thrown`);
  assert.ok(
    isGuestlinkError(caught, code),
    `expected ${code}, got ${(caught as { code?: string }).code ?? ""} ${String(caught)}`,
  );
  if (message !== undefined) assert.match((caught as Error).message, message);
  return caught as Error;
}

/**
 * Whether `promise` is still pending once everything already queued has run. Promise jobs and
 * I/O callbacks that are due run before a `setImmediate`, so this is a fact, not a timing guess,
 * for anything that settles by promise resolution alone (the memory pair).
 */
export async function isPending(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  await new Promise((resolve) => setImmediate(resolve));
  return !settled;
}

/** A fresh temporary folder; remove it with the returned function. */
export async function tempDir(): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), "guestlink-"));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** `inner`, but every `everyChunks`-th chunk it sends has junk inserted in its middle. */
export function junkInserting(
  inner: Transport,
  everyChunks: number,
): Transport & { bursts: number } {
  let chunks = 0;
  const wrapper = {
    bursts: 0,
    get description() {
      return inner.description;
    },
    send(parts: readonly Uint8Array[]): boolean {
      const out: Uint8Array[] = [];
      for (const part of parts) {
        chunks++;
        if (chunks % everyChunks !== 0 || part.length < 64) {
          out.push(part);
          continue;
        }
        const at = Math.floor(part.length / 2);
        out.push(
          part.subarray(0, at),
          Uint8Array.from({ length: 37 }, (_, i) => i * 7),
          part.subarray(at),
        );
        wrapper.bursts++;
      }
      return inner.send(out);
    },
    drain: () => inner.drain(),
    close: () => inner.close(),
    abort: (reason?: Error) => inner.abort(reason),
    [Symbol.asyncIterator]: () => inner[Symbol.asyncIterator](),
  };
  return wrapper;
}

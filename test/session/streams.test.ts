import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { readAll, sessionPair, settle } from "../helpers/session.ts";

/** Reads a stream to its end, consuming as it goes; resolves with all bytes. */

/** Writes `total` bytes of a pattern as a well-behaved source: pauses when write() says so. */
async function writePattern(
  stream: SessionStream,
  total: number,
  chunkSize = 16 * 1024,
): Promise<number> {
  let written = 0;
  while (written < total) {
    const n = Math.min(chunkSize, total - written);
    const chunk = new Uint8Array(n);
    for (let i = 0; i < n; i++) chunk[i] = (written + i) % 251;
    written += n;
    if (!stream.write(chunk)) await new Promise<void>((resolve) => (stream.onDrain = resolve));
  }
  stream.end();
  return written;
}

function pattern(total: number): Uint8Array {
  const out = new Uint8Array(total);
  for (let i = 0; i < total; i++) out[i] = i % 251;
  return out;
}

describe("session: streams", () => {
  it("streams both ways, half-closes each direction, and delivers all output before the result", async () => {
    const { client, server } = sessionPair();
    server.handle("upper", async (_p, ctx) => {
      const input = await readAll(ctx.streams.stdin as SessionStream);
      const out = ctx.streams.stdout as SessionStream;
      out.write(new TextEncoder().encode(new TextDecoder().decode(input).toUpperCase()));
      out.end();
      return { bytes: input.length };
    });
    const call = client.open("upper", {}, { streams: ["stdin", "stdout"] });
    const stdin = call.streams.stdin as SessionStream;
    const stdout = call.streams.stdout as SessionStream;
    let outputDoneFirst = false;
    const output = readAll(stdout).then((b) => {
      outputDoneFirst = true;
      return b;
    });
    stdin.write(new TextEncoder().encode("hello, "));
    stdin.write(new TextEncoder().encode("guest"));
    stdin.end();
    const result = await call.result;
    assert.equal(outputDoneFirst, true, "stdout ended before the result arrived");
    assert.deepEqual(result, { bytes: 12 });
    assert.equal(new TextDecoder().decode(await output), "HELLO, GUEST");
  });

  it("moves 8 MiB byte-exact through small windows", async () => {
    const { client, server } = sessionPair({
      client: { streamWindowBytes: 64 * 1024, sessionWindowBytes: 128 * 1024 },
      server: { streamWindowBytes: 64 * 1024, sessionWindowBytes: 128 * 1024 },
    });
    const total = 8 * 1024 * 1024;
    server.handle("produce", async (_p, ctx) =>
      writePattern(ctx.streams.out as SessionStream, total),
    );
    const call = client.open("produce", {}, { streams: ["out"] });
    const [bytes, written] = await Promise.all([
      readAll(call.streams.out as SessionStream),
      call.result,
    ]);
    assert.equal(written, total);
    assert.ok(Buffer.from(bytes).equals(Buffer.from(pattern(total))));
  });

  it("stops a writer after one window when the reader stalls, and pauses its source", async () => {
    const window = 64 * 1024;
    const { client, server } = sessionPair({
      client: { streamWindowBytes: window, sessionWindowBytes: 4 * window },
      server: { streamWindowBytes: window },
    });
    let produced = 0;
    let paused = false;
    server.handle("flood", async (_p, ctx) => {
      const out = ctx.streams.out as SessionStream;
      while (produced < 10 * 1024 * 1024) {
        const chunk = new Uint8Array(8192).fill(7);
        produced += chunk.length;
        if (!out.write(chunk)) {
          paused = true;
          await new Promise<void>((resolve) => (out.onDrain = resolve));
          paused = false;
        }
      }
      out.end();
    });
    const call = client.open("flood", {}, { streams: ["out"] });
    const out = call.streams.out as SessionStream;
    let received = 0;
    let consume = false;
    const pending: number[] = [];
    out.attach({
      data: (chunk) => {
        received += chunk.length;
        if (consume) out.consumed(chunk.length);
        else pending.push(chunk.length);
      },
      end: () => {},
      error: () => {},
    });
    await settle(50);
    assert.ok(received <= window, `in flight ${received} bytes, window ${window}`);
    assert.ok(received > 0);
    assert.equal(paused, true, "the source was paused, not buffered");
    assert.ok(produced <= received + 2 * window, `produced ${produced}: the source stopped early`);
    // The reader resumes: everything flows.
    consume = true;
    out.consumed(pending.reduce((a, b) => a + b, 0));
    await call.result;
    assert.equal(received, 10 * 1024 * 1024);
  });

  it("keeps other streams flowing while one reader stalls, within the session window", async () => {
    const window = 32 * 1024;
    const { client, server } = sessionPair({
      client: { streamWindowBytes: window, sessionWindowBytes: 4 * window },
      server: { streamWindowBytes: window },
    });
    server.handle("two", async (_p, ctx) => {
      await Promise.all([
        writePattern(ctx.streams.stalled as SessionStream, 1024 * 1024),
        writePattern(ctx.streams.flowing as SessionStream, 1024 * 1024),
      ]);
    });
    const call = client.open("two", {}, { streams: ["stalled", "flowing"] });
    let stalledBytes = 0;
    (call.streams.stalled as SessionStream).attach({
      data: (c) => {
        stalledBytes += c.length;
      },
      end: () => {},
      error: () => {},
    });
    const flowing = await readAll(call.streams.flowing as SessionStream);
    assert.equal(flowing.length, 1024 * 1024);
    assert.ok(stalledBytes <= window);
    call.cancel("test over");
    await assert.rejects(call.result, (err: unknown) => isGuestlinkError(err, "CANCELLED"));
  });

  it("resets a stream from either side, failing both directions with STREAM_RESET", async () => {
    const { client, server } = sessionPair();
    let serverStream: SessionStream | undefined;
    let serverSawReset: unknown;
    server.handle("hold", (_p, ctx) => {
      serverStream = ctx.streams.io as SessionStream;
      serverStream.attach({ data: () => {}, end: () => {}, error: (e) => (serverSawReset = e) });
      return new Promise(() => {});
    });
    const call = client.open("hold", {}, { streams: ["io"] });
    const io = call.streams.io as SessionStream;
    await settle();
    io.reset("CANCELLED", "user gave up");
    await settle();
    assert.ok(isGuestlinkError(serverSawReset, "STREAM_RESET"));
    assert.equal((serverSawReset as { details?: Record<string, unknown> }).details?.by, "peer");
    assert.throws(
      () => io.write(Uint8Array.of(1)),
      (e: unknown) => isGuestlinkError(e, "STREAM_RESET"),
    );

    // And from the callee's side.
    let clientSawReset: unknown;
    const second = client.open("hold", {}, { streams: ["io"] });
    (second.streams.io as SessionStream).attach({
      data: () => {},
      end: () => {},
      error: (e) => (clientSawReset = e),
    });
    await settle();
    serverStream?.reset("INTERNAL", "agent shutting down");
    await settle();
    assert.ok(isGuestlinkError(clientSawReset, "STREAM_RESET"));
    assert.match((clientSawReset as Error).message, /agent shutting down/);
  });

  it("refuses writes after end()", async () => {
    const { client } = sessionPair();
    const call = client.open("x", {}, { streams: ["a"] });
    const a = call.streams.a as SessionStream;
    a.end();
    assert.throws(
      () => a.write(Uint8Array.of(1)),
      (e: unknown) => isGuestlinkError(e, "STREAM_CLOSED"),
    );
    call.cancel();
    await assert.rejects(call.result);
  });

  it("fails the streams of a call that fails", async () => {
    const { client } = sessionPair();
    const call = client.open("missing", {}, { streams: ["out"] });
    let streamError: unknown;
    (call.streams.out as SessionStream).attach({
      data: () => {},
      end: () => {},
      error: (e) => (streamError = e),
    });
    await assert.rejects(call.result, (e: unknown) => isGuestlinkError(e, "METHOD_NOT_FOUND"));
    await settle();
    assert.ok(isGuestlinkError(streamError));
  });
});

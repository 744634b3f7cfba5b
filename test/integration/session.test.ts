/**
 * Sessions over real transports: Unix sockets in a temporary folder, loopback TCP, and a child
 * process spoken to over its stdio.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import { toDuplex } from "../../src/platform/duplex.ts";
import { openSession, type SessionServer, serveSessions } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { serveTestServices } from "../fixtures/services.ts";
import { hashStream } from "../helpers/session.ts";

function patternHash(bytes: number): string {
  const block = Buffer.alloc(64 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = i % 251;
  const hash = createHash("sha256");
  for (let left = bytes; left > 0; left -= block.length)
    hash.update(block.subarray(0, Math.min(left, block.length)));
  return hash.digest("hex");
}

async function exercise(session: Session) {
  // Many calls at once, answered in order of completion.
  const results = await Promise.all(
    Array.from({ length: 200 }, (_, n) => session.call("echo", { n })),
  );
  assert.deepEqual(
    results,
    Array.from({ length: 200 }, (_, n) => ({ n })),
  );
  await assert.rejects(
    session.call("fail"),
    (e: unknown) => isGuestlinkError(e) && /asked to fail/.test(e.message),
  );

  // 16 MiB out of the peer, hashed on arrival.
  const total = 16 * 1024 * 1024;
  const produce = session.open("produce", { bytes: total }, { streams: ["out"] });
  const { sha256, bytes } = await hashStream(produce.streams.out as SessionStream);
  assert.equal(await produce.result, total);
  assert.equal(bytes, total);
  assert.equal(sha256, patternHash(total));

  // 8 MiB through the peer and back.
  const cat = session.open("cat", {}, { streams: ["in", "out"] });
  const input = toDuplex(cat.streams.in as SessionStream);
  const output = toDuplex(cat.streams.out as SessionStream);
  const back = createHash("sha256");
  const reading = (async () => {
    for await (const chunk of output) back.update(chunk as Buffer);
  })();
  const block = Buffer.alloc(64 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = i % 251;
  for (let i = 0; i < 128; i++)
    if (!input.write(block)) await new Promise((r) => input.once("drain", r));
  input.end();
  const [peerHash] = await Promise.all([cat.result, reading]);
  const expected = patternHash(8 * 1024 * 1024);
  assert.equal(peerHash, expected);
  assert.equal(back.digest("hex"), expected);
}

describe("sessions over real transports", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-test-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const kind of ["unix", "tcp"] as const) {
    it(`${kind}: calls, errors and streams both ways, then a clean close`, async () => {
      const address = kind === "unix" ? `unix:${join(dir, "s.sock")}` : "tcp:127.0.0.1:0";
      const server: SessionServer = await serveSessions(address, serveTestServices);
      try {
        const session = await openSession(server.address);
        assert.equal(session.peer?.services.includes("cat"), true);
        await exercise(session);
        await session.close();
        assert.equal(await session.closed, undefined);
      } finally {
        await server.close();
      }
    });
  }

  it("exec: a child process spoken to over its stdin and stdout, with payload checksums", async () => {
    const fixture = new URL("../fixtures/stdio-peer.ts", import.meta.url).pathname;
    const session = await openSession(`exec:${process.execPath} --import tsx ${fixture}`);
    assert.equal(session.options.payloadChecksum, true);
    const childPid = await session.call("pid");
    assert.equal(typeof childPid, "number");
    await exercise(session);
    await session.close();
    assert.equal(await session.closed, undefined);
  });

  it("connecting to nothing fails with CONNECT_FAILED", async () => {
    await assert.rejects(openSession(`unix:${join(dir, "nobody.sock")}`), (e: unknown) =>
      isGuestlinkError(e, "CONNECT_FAILED"),
    );
  });

  it("a server that goes away fails the calls in flight instead of hanging", async () => {
    const server = await serveSessions(`unix:${join(dir, "gone.sock")}`, (s) => {
      s.handle("hang", () => new Promise(() => {}));
    });
    const session = await openSession(server.address);
    const call = session.call("hang");
    await new Promise((r) => setImmediate(r));
    await server.close({ abort: true });
    await assert.rejects(call, (e: unknown) => isGuestlinkError(e));
    assert.ok(await session.closed);
  });
});

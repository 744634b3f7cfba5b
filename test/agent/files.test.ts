/**
 * The files service and the host's getFile/putFile, over a real Unix socket in a temporary
 * folder. "remote" and "local" are two folders on this machine: the agent serves one, the host
 * side uses the other.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { type FilesEvent, filesService } from "../../src/agent/files.ts";
import type { Service } from "../../src/agent/service.ts";
import { getFile, putFile } from "../../src/controller/files.ts";
import { type ErrorCode, isGuestlinkError } from "../../src/errors.ts";
import { toDuplex } from "../../src/platform/duplex.ts";
import { openSession, type SessionServer, serveSessions } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const hasCode = (code: ErrorCode) => (err: unknown) => isGuestlinkError(err, code);
const temps = async (folder: string) =>
  (await readdir(folder)).filter((name) => name.endsWith(".tmp"));

/** Every run of every handler, so a test can wait until the agent has finished its side. */
class Agent {
  readonly runs: Promise<unknown>[] = [];
  readonly #waiters: { match: (e: FilesEvent) => boolean; resolve: (e: FilesEvent) => void }[] = [];

  readonly onEvent = (event: FilesEvent) => {
    for (const waiter of [...this.#waiters]) {
      if (waiter.match(event)) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve(event);
      }
    }
  };

  /** Resolves at the next event that matches (register before causing it). */
  nextEvent(match: (e: FilesEvent) => boolean): Promise<FilesEvent> {
    return new Promise((resolve) => this.#waiters.push({ match, resolve }));
  }

  attach(session: Session, service: Service): void {
    for (const [method, handler] of Object.entries(service.methods)) {
      session.handle(method, (params, ctx) => {
        const run = Promise.resolve().then(() => handler(params, ctx));
        this.runs.push(run.catch(() => {}));
        return run;
      });
    }
  }

  settled(): Promise<unknown> {
    return Promise.all(this.runs);
  }
}

/** Uploads `bytes` by hand and resolves with the agent's answer (nothing committed). */
function rawPut(session: Session, path: string, bytes: Uint8Array) {
  const call = session.open("files.put", { path }, { streams: ["data"] });
  toDuplex(call.streams.data as SessionStream).end(bytes);
  return call.result as Promise<{ token: string; size: number; sha256: string }>;
}

/**
 * Writes to an upload until the agent has taken bytes from it. The first window (1 MiB) goes
 * out on credit and 1 MiB more may wait in the queue; once 3 MiB have been taken, the agent has
 * granted more credit, which it does only after opening its temporary file.
 */
async function writeUntilAgentWrites(data: Writable): Promise<void> {
  const block = randomBytes(256 * 1024);
  for (let written = 0; written < 3 * MiB; written += block.length) {
    if (!data.write(block)) await once(data, "drain");
  }
}

describe("files over a Unix socket", () => {
  let dir: string;
  let remote: string;
  let local: string;
  let server: SessionServer;
  let session: Session;
  const agent = new Agent();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-files-"));
    remote = join(dir, "remote");
    local = join(dir, "local");
    await mkdir(remote);
    await mkdir(local);
    const service = filesService({ onEvent: agent.onEvent });
    server = await serveSessions(`unix:${join(dir, "agent.sock")}`, (s) =>
      agent.attach(s, service),
    );
    session = await openSession(server.address);
  });

  after(async () => {
    await session?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("moves a 20 MiB random file to the agent and back byte for byte, keeping mode 0750", async () => {
    const data = randomBytes(20 * MiB);
    const source = join(local, "big.bin");
    await writeFile(source, data);
    await chmod(source, 0o750);
    let progress = 0;
    let progressTotal: number | undefined;
    const put = await putFile(session, source, join(remote, "big.bin"), {
      onProgress: (bytes, total) => {
        progress = bytes;
        progressTotal = total;
      },
    });
    assert.deepEqual(put, {
      size: data.length,
      sha256: sha256(data),
      mode: 0o750,
      path: join(remote, "big.bin"),
    });
    assert.equal(progress, data.length);
    assert.equal(progressTotal, data.length);
    assert.equal((await stat(join(remote, "big.bin"))).mode & 0o777, 0o750);
    assert.ok(data.equals(await readFile(join(remote, "big.bin"))));

    const back = join(local, "back.bin");
    let received = 0;
    const got = await getFile(session, join(remote, "big.bin"), back, {
      onProgress: (bytes) => {
        received = bytes;
      },
    });
    assert.deepEqual(got, { size: data.length, sha256: sha256(data), mode: 0o750, path: back });
    assert.equal(received, data.length);
    assert.equal((await stat(back)).mode & 0o777, 0o750);
    assert.ok(data.equals(await readFile(back)));
    assert.deepEqual(await temps(remote), []);
    assert.deepEqual(await temps(local), []);
  });

  it("moves an empty file both ways", async () => {
    const empty = sha256(new Uint8Array());
    await writeFile(join(local, "empty"), "");
    await chmod(join(local, "empty"), 0o600);
    const put = await putFile(session, join(local, "empty"), join(remote, "empty"));
    assert.deepEqual(put, { size: 0, sha256: empty, mode: 0o600, path: join(remote, "empty") });
    const got = await getFile(session, join(remote, "empty"), join(local, "empty-back"));
    assert.deepEqual(got, { size: 0, sha256: empty, mode: 0o600, path: join(local, "empty-back") });
    assert.equal((await readFile(join(local, "empty-back"))).length, 0);
  });

  it("replaces an existing target and keeps its mode when the caller names none", async () => {
    const target = join(remote, "existing.sh");
    await writeFile(target, "old");
    await chmod(target, 0o700);
    const upload = await rawPut(session, target, Buffer.from("new"));
    const committed = await session.call("files.commit", upload);
    assert.deepEqual(committed, {
      path: target,
      size: 3,
      sha256: sha256(Buffer.from("new")),
      mode: 0o700,
    });
    assert.equal(await readFile(target, "utf8"), "new");
    assert.equal((await stat(target)).mode & 0o777, 0o700);
  });

  it("gives a new file mode 0644 when the caller names none", async () => {
    const upload = await rawPut(session, join(remote, "fresh.txt"), Buffer.from("x"));
    const committed = (await session.call("files.commit", upload)) as { mode: number };
    assert.equal(committed.mode, 0o644);
    assert.equal((await stat(join(remote, "fresh.txt"))).mode & 0o777, 0o644);
  });

  it("fails a get of a missing file with FILE_NOT_FOUND and writes nothing here", async () => {
    const missing = join(remote, "no-such-file");
    await assert.rejects(getFile(session, missing, join(local, "missing")), (err: unknown) => {
      assert.ok(isGuestlinkError(err, "FILE_NOT_FOUND"), String(err));
      assert.equal(err.details?.path, missing);
      return true;
    });
    assert.ok(!(await readdir(local)).includes("missing"));
    assert.deepEqual(await temps(local), []);
  });

  it("fails a get of a folder with IS_A_DIRECTORY, leaving an existing local file alone", async () => {
    await writeFile(join(local, "keep"), "mine");
    await assert.rejects(getFile(session, remote, join(local, "keep")), hasCode("IS_A_DIRECTORY"));
    assert.equal(await readFile(join(local, "keep"), "utf8"), "mine");
    assert.deepEqual(await temps(local), []);
  });

  it("fails a get of an unreadable file with PERMISSION_DENIED", {
    skip: isRoot ? "running as root, for whom chmod 000 does not stop reading" : false,
  }, async () => {
    const locked = join(remote, "locked");
    await writeFile(locked, "secret");
    await chmod(locked, 0o000);
    await assert.rejects(
      getFile(session, locked, join(local, "locked")),
      hasCode("PERMISSION_DENIED"),
    );
    assert.deepEqual(await temps(local), []);
  });

  it("fails a put into a missing folder with FILE_NOT_FOUND naming the folder", async () => {
    await writeFile(join(local, "small"), "hello");
    const folder = join(remote, "no-such-folder");
    await assert.rejects(
      putFile(session, join(local, "small"), join(folder, "x")),
      (err: unknown) => {
        assert.ok(isGuestlinkError(err, "FILE_NOT_FOUND"), String(err));
        assert.equal(err.details?.path, folder);
        return true;
      },
    );
  });

  it("fails a put of a missing local file with FILE_NOT_FOUND before calling the agent", async () => {
    const runs = agent.runs.length;
    await assert.rejects(
      putFile(session, join(local, "nothing-here"), join(remote, "x")),
      hasCode("FILE_NOT_FOUND"),
    );
    assert.equal(agent.runs.length, runs);
  });

  it("refuses bad parameters with INVALID_OPTION", async () => {
    await assert.rejects(
      session.call("files.commit", { token: "t", sha256: "xyz" }),
      hasCode("INVALID_OPTION"),
    );
    await assert.rejects(session.call("files.discard", {}), hasCode("INVALID_OPTION"));
    const empty = session.open("files.get", { path: "" }, { streams: ["data"] });
    await assert.rejects(empty.result, (err: unknown) => {
      assert.ok(isGuestlinkError(err, "INVALID_OPTION"));
      assert.match(err.message, /path must not be empty/);
      return true;
    });
    const badName = session.open(
      "files.put",
      { path: remote, name: "../escape" },
      { streams: ["data"] },
    );
    await assert.rejects(badName.result, hasCode("INVALID_OPTION"));
    const badMode = session.open(
      "files.put",
      { path: join(remote, "m"), mode: 0o10000 },
      { streams: ["data"] },
    );
    await assert.rejects(badMode.result, hasCode("INVALID_OPTION"));
    await assert.rejects(
      session.call("files.get", { path: join(remote, "big.bin") }),
      (err: unknown) => {
        assert.ok(isGuestlinkError(err, "INVALID_OPTION"));
        assert.match(err.message, /stream named "data"/);
        return true;
      },
    );
  });

  it("leaves the old target untouched and no temporary file when a put is cancelled midway", async () => {
    const folder = join(remote, "cancel");
    await mkdir(folder);
    await writeFile(join(folder, "target"), "old");
    const source = join(local, "cancel.bin");
    await writeFile(source, randomBytes(20 * MiB));
    const controller = new AbortController();
    const own = await openSession(server.address);
    await assert.rejects(
      putFile(own, source, join(folder, "target"), {
        signal: controller.signal,
        // Well past what flow control lets run ahead of the agent: it is writing by now.
        onProgress: (bytes) => {
          if (bytes >= 8 * MiB) controller.abort();
        },
      }),
      hasCode("CANCELLED"),
    );
    await agent.settled();
    await own.close();
    assert.deepEqual(await readdir(folder), ["target"]);
    assert.equal(await readFile(join(folder, "target"), "utf8"), "old");
  });

  it("deletes the temporary file it was writing when the call is cancelled", async () => {
    const folder = join(remote, "midway");
    await mkdir(folder);
    await writeFile(join(folder, "target"), "old");
    const own = await openSession(server.address);
    const call = own.open("files.put", { path: join(folder, "target") }, { streams: ["data"] });
    const data = toDuplex(call.streams.data as SessionStream);
    data.on("error", () => {}); // reset by the cancel below
    try {
      await writeUntilAgentWrites(data);
      assert.equal((await temps(folder)).length, 1);
    } finally {
      call.cancel();
    }
    await assert.rejects(call.result, hasCode("CANCELLED"));
    await agent.settled();
    await own.close();
    assert.deepEqual(await readdir(folder), ["target"]);
    assert.equal(await readFile(join(folder, "target"), "utf8"), "old");
  });

  it("refuses a commit with the wrong sha256 with CHECKSUM_MISMATCH and leaves the target alone", async () => {
    const folder = join(remote, "mismatch");
    await mkdir(folder);
    const target = join(folder, "target");
    await writeFile(target, "old");
    const upload = await rawPut(session, target, Buffer.from("new bytes"));
    assert.equal(upload.sha256, sha256(Buffer.from("new bytes")));
    await assert.rejects(
      session.call("files.commit", { token: upload.token, sha256: "0".repeat(64) }),
      hasCode("CHECKSUM_MISMATCH"),
    );
    assert.deepEqual(await readdir(folder), ["target"]);
    assert.equal(await readFile(target, "utf8"), "old");
    // The upload is gone: the right checksum cannot commit it any more.
    await assert.rejects(
      session.call("files.commit", { token: upload.token, sha256: upload.sha256 }),
      hasCode("INVALID_OPTION"),
    );
  });

  it("deletes an upload on discard", async () => {
    const folder = join(remote, "discard");
    await mkdir(folder);
    const upload = await rawPut(session, join(folder, "target"), Buffer.from("abc"));
    assert.equal((await temps(folder)).length, 1);
    assert.deepEqual(await session.call("files.discard", { token: upload.token }), {
      discarded: true,
    });
    assert.deepEqual(await readdir(folder), []);
    assert.deepEqual(await session.call("files.discard", { token: upload.token }), {
      discarded: false,
    });
  });

  it("fails a put whose stream carries a different size than announced with FILE_CHANGED", async () => {
    const folder = join(remote, "size");
    await mkdir(folder);
    const call = session.open(
      "files.put",
      { path: join(folder, "t"), size: 10 },
      { streams: ["data"] },
    );
    toDuplex(call.streams.data as SessionStream).end(Buffer.from("four"));
    await assert.rejects(call.result, hasCode("FILE_CHANGED"));
    await agent.settled();
    assert.deepEqual(await readdir(folder), []);
  });

  it("deletes uncommitted uploads when their session ends", async () => {
    const folder = join(remote, "session-end");
    await mkdir(folder);
    const other = await openSession(server.address);
    await rawPut(other, join(folder, "a"), Buffer.from("a"));
    await rawPut(other, join(folder, "b"), Buffer.from("b"));
    assert.equal((await temps(folder)).length, 2);
    const removed = Promise.all(
      ["a", "b"].map((name) =>
        agent.nextEvent(
          (e) =>
            e.type === "temp-removed" &&
            e.target === join(folder, name) &&
            e.reason === "session-ended",
        ),
      ),
    );
    await other.close();
    await removed;
    assert.deepEqual(await readdir(folder), []);
  });

  it("deletes an upload not committed in time", async () => {
    const folder = join(remote, "expiry");
    await mkdir(folder);
    const expiring = new Agent();
    const quick = await serveSessions(`unix:${join(dir, "quick.sock")}`, (s) =>
      expiring.attach(s, filesService({ uncommittedTtlMs: 1, onEvent: expiring.onEvent })),
    );
    const client = await openSession(quick.address);
    try {
      const expired = expiring.nextEvent(
        (e) => e.type === "temp-removed" && e.reason === "expired",
      );
      const upload = await rawPut(client, join(folder, "t"), Buffer.from("late"));
      await expired;
      assert.deepEqual(await readdir(folder), []);
      await assert.rejects(client.call("files.commit", upload), hasCode("INVALID_OPTION"));
    } finally {
      await client.close();
      await quick.close();
    }
  });
});

describe("the host side against an agent that lies", () => {
  let dir: string;
  let server: SessionServer;
  let session: Session;
  const calls: { method: string; params: unknown }[] = [];
  let discarded: () => void = () => {};

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-files-"));
    server = await serveSessions(`unix:${join(dir, "liar.sock")}`, (s) => {
      s.handle("files.get", async (_params, ctx) => {
        const out = toDuplex(ctx.streams.data as SessionStream);
        await new Promise<void>((resolve, reject) =>
          out.end(Buffer.from("not what you asked for"), (err?: Error | null) =>
            err ? reject(err) : resolve(),
          ),
        );
        return { size: 22, sha256: "a".repeat(64), mode: 0o4755 };
      });
      s.handle("files.put", async (_params, ctx) => {
        let size = 0;
        for await (const chunk of toDuplex(ctx.streams.data as SessionStream))
          size += (chunk as Buffer).length;
        return { token: "t-1", size, sha256: "b".repeat(64) };
      });
      for (const method of ["files.commit", "files.discard"]) {
        s.handle(method, (params) => {
          calls.push({ method, params });
          if (method === "files.discard") discarded();
          return { discarded: true };
        });
      }
    });
    session = await openSession(server.address);
  });

  after(async () => {
    await session?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("getFile refuses bytes that do not hash to the agent's sha256 and leaves the target alone", async () => {
    const target = join(dir, "target");
    await writeFile(target, "mine");
    await assert.rejects(getFile(session, "/anything", target), hasCode("CHECKSUM_MISMATCH"));
    assert.equal(await readFile(target, "utf8"), "mine");
    assert.deepEqual(await temps(dir), []);
  });

  it("putFile discards an upload whose sha256 differs from its own and never commits it", async () => {
    await writeFile(join(dir, "source"), "some bytes");
    const discarding = new Promise<void>((resolve) => {
      discarded = resolve;
    });
    await assert.rejects(
      putFile(session, join(dir, "source"), "/remote"),
      hasCode("CHECKSUM_MISMATCH"),
    );
    await discarding;
    assert.deepEqual(calls, [{ method: "files.discard", params: { token: "t-1" } }]);
  });
});

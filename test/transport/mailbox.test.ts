/**
 * The mailbox transport on a real folder: byte-exact streams however they are chunked (the
 * chunking drawn from the run's seed), coalescing, end and abort, backpressure that bounds the
 * files a writer leaves unread, bad folders and locks, and what happens to the connections of a
 * listener that died.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from "node:child_process";
import { watch } from "node:fs";
import {
  chmod,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { mulberry32 } from "../../src/prng.ts";
import {
  connectMailbox,
  listenMailbox,
  type MailboxOptions,
  MailboxTransport,
} from "../../src/transport/mailbox.ts";
import {
  ALIVE_FILE,
  BROKEN_FILE,
  CONNECTOR_TO_LISTENER,
  LISTENER_TO_CONNECTOR,
  removeFolder,
} from "../../src/transport/mailbox-layout.ts";
import type { Listener, Transport } from "../../src/transport/transport.ts";
import { SEED } from "../helpers/seed.ts";
import {
  accept,
  echo,
  pattern,
  readAll,
  rejectsWith,
  sha256,
  tempDir,
  throwsWith,
} from "../helpers/transport.ts";

const PEER = fileURLToPath(new URL("../fixtures/mailbox-peer.ts", import.meta.url));
const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const KiB = 1024;
const MiB = 1024 * 1024;
/** Quick to notice each other's absence, so the tests about dead peers finish fast. */
const QUICK: MailboxOptions = { heartbeatIntervalMs: 50, peerTimeoutMs: 400 };

let root: { path: string; remove: () => Promise<void> };
let folders = 0;
before(async () => {
  root = await tempDir();
});
after(async () => {
  await root.remove();
});

async function freshFolder(): Promise<string> {
  const path = join(root.path, `mb${++folders}`);
  await mkdir(path);
  return path;
}

/**
 * Resolves once `condition` holds, looking again whenever `folder` changes and at least every
 * 10 ms (changes made through fs calls of this process are not always reported). Fails after
 * `limitMs`, naming what it waited for.
 */
async function until(
  folder: string,
  what: string,
  condition: () => boolean | Promise<boolean>,
  limitMs = 10_000,
): Promise<void> {
  const started = performance.now();
  let changed: (() => void) | undefined;
  const watcher = watch(folder, () => changed?.());
  watcher.on("error", () => {});
  try {
    while (!(await condition())) {
      if (performance.now() - started > limitMs) assert.fail(`waited ${limitMs} ms for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10);
        changed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      changed = undefined;
    }
  } finally {
    watcher.close();
  }
}

async function connectionFolders(folder: string): Promise<string[]> {
  return (await readdir(folder)).filter((n) => n.startsWith("c-") || n.startsWith(".c-"));
}

async function dataFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => /^\d{16}$/.test(n));
}

async function pair(
  options: MailboxOptions = {},
  folder?: string,
): Promise<{ folder: string; listener: Listener; client: MailboxTransport; server: Transport }> {
  const f = folder ?? (await freshFolder());
  const listener = await listenMailbox(f, options);
  const [client, server] = await Promise.all([connectMailbox(f, options), accept(listener)]);
  assert.ok(client instanceof MailboxTransport);
  return { folder: f, listener, client, server };
}

/** Sends `data` in pieces of random size and random batches, sometimes yielding between sends. */
async function sendRandomly(t: Transport, data: Uint8Array, seed: number): Promise<void> {
  const random = mulberry32(seed);
  let at = 0;
  while (at < data.length) {
    const batch: Uint8Array[] = [];
    const pieces = 1 + Math.floor(random() * 5);
    for (let i = 0; i < pieces && at < data.length; i++) {
      // Mostly small pieces, some large ones that span files.
      const size =
        random() < 0.9 ? 1 + Math.floor(random() * 2000) : Math.floor(random() * 300_000);
      batch.push(data.subarray(at, at + size));
      at += size;
    }
    const below = t.send(batch);
    if (!below) await t.drain();
    else if (random() < 0.3) await new Promise((resolve) => setImmediate(resolve));
  }
}

/** A process of the fixture, with its lines of output. */
class PeerProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: string[] = [];
  #waiting: { line: string; resolve: () => void }[] = [];
  readonly exited: Promise<void>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, ["--import", "tsx", PEER, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stderr = "";
    this.child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    let buffered = "";
    this.child.stdout.setEncoding("utf8").on("data", (d: string) => {
      buffered += d;
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        this.lines.push(line);
        for (const w of this.#waiting.filter((w) => w.line === line)) w.resolve();
        this.#waiting = this.#waiting.filter((w) => w.line !== line);
      }
    });
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    void this.exited.then(() => {
      for (const w of this.#waiting) w.resolve();
      if (this.#waiting.length > 0) process.stderr.write(stderr);
    });
  }

  line(line: string): Promise<void> {
    if (this.lines.includes(line)) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push({ line, resolve }));
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }
}

describe("mailbox transport: the byte stream", () => {
  for (const watch of [true, false]) {
    it(`carries 8 MiB each way byte-exact, however the sends are chunked (seeded${watch ? "" : "; polling alone, as over NFS"})`, async () => {
      await exactness({ maxFileBytes: 64 * KiB, watch });
    });
  }

  async function exactness(options: MailboxOptions): Promise<void> {
    const { listener, client, server } = await pair(options);
    const data = pattern(8 * MiB, SEED % 1000);
    const [, received] = await Promise.all([
      echo(server),
      readAll(client),
      sendRandomly(client, data, SEED).then(() => client.close()),
    ]);
    assert.equal(received.length, data.length, `seed ${SEED}`);
    assert.equal(sha256(received), sha256(data), `seed ${SEED}: the bytes differ`);
    // 8 MiB in files of at most 64 KiB: at least 128 of them, and the END.
    assert.ok(client.stats.filesWritten >= 129, `${client.stats.filesWritten} files`);
    await listener.close();
  }

  it("coalesces 10,000 sends made in one tick into one file", async () => {
    const { listener, client, server } = await pair();
    for (let i = 0; i < 10_000; i++) client.send([text(`${String(i).padStart(9, "0")}\n`)]);
    const closed = client.close();
    const received = await readAll(server);
    assert.equal(received.length, 100_000);
    assert.equal(str(received.subarray(0, 20)), "000000000\n000000001\n");
    // One file of data, one END.
    assert.equal(client.stats.filesWritten, 2);
    await server.close();
    await closed;
    await listener.close();
  });

  it("half-closes: the peer reads to the end, answers, and the folder is removed once both are done", async () => {
    const { folder, listener, client, server } = await pair();
    client.send([text("question, "), text("in two parts")]);
    const clientClosed = client.close();
    throwsWith(() => client.send([text("more")]), "TRANSPORT_CLOSED");
    const replyRead = readAll(client);

    assert.equal(str(await readAll(server)), "question, in two parts");
    server.send([text("the answer")]);
    await server.close();
    assert.equal(str(await replyRead), "the answer");
    await clientClosed;
    await until(folder, "the connection folder to go", async () => {
      return (await connectionFolders(folder)).length === 0;
    });
    await listener.close();
    assert.deepEqual(await readdir(folder), [], "the lock is gone too");
  });

  it("a connection folder is removed with the heartbeats last, so the side still looking never takes a clean close for an abort", async () => {
    const connection = join(await freshFolder(), "c-0123456789abcdef");
    const dirs = [CONNECTOR_TO_LISTENER, LISTENER_TO_CONNECTOR].map((d) => join(connection, d));
    const names = [ALIVE_FILE, "0000000000000001", "0000000000000002", BROKEN_FILE];
    for (const d of dirs) {
      await mkdir(d, { recursive: true });
      for (const name of names) await writeFile(join(d, name), "x");
    }
    // inotify reports the removals in the order they happen.
    const removed = new Map<string, string[]>(dirs.map((d) => [d, []]));
    const watchers = dirs.map((d) =>
      watch(d, (_event, name) => {
        if (name !== null && names.includes(name)) removed.get(d)?.push(name);
      }).on("error", () => {}),
    );
    await removeFolder(connection);
    await until(root.path, "every removal to be reported", () =>
      dirs.every((d) => removed.get(d)?.includes(ALIVE_FILE)),
    );
    for (const w of watchers) w.close();
    for (const [d, order] of removed) {
      assert.equal(order.at(-1), ALIVE_FILE, `removal order in ${d}: ${order.join(", ")}`);
      assert.equal(new Set(order).size, names.length, order.join(", "));
    }
  });

  it("a peer's abort fails the other side's iteration with TRANSPORT_FAILED, and it stops sending", async () => {
    const { folder, listener, client, server } = await pair();
    client.send([text("hello")]);
    await server[Symbol.asyncIterator]().next();
    server.abort(new Error("agent shutting down"));
    await rejectsWith(readAll(client), "TRANSPORT_FAILED", /aborted.*agent shutting down/);
    await rejectsWith(client.drain(), "TRANSPORT_CLOSED");
    throwsWith(() => client.send([text("x")]), "TRANSPORT_CLOSED");
    // It broke before we closed: close() says so.
    await rejectsWith(client.close(), "TRANSPORT_FAILED");
    // The side that saw the other abort clears the folder up.
    await until(folder, "the connection folder to go", async () => {
      return (await connectionFolders(folder)).length === 0;
    });
    await listener.close();
  });

  it("abort on this side: its own reader gets TRANSPORT_CLOSED and close() resolves at once", async () => {
    const { listener, client, server } = await pair();
    const reading = readAll(client);
    client.abort(new Error("no longer wanted"));
    await rejectsWith(reading, "TRANSPORT_CLOSED", /aborted/);
    await client.close();
    client.abort();
    await rejectsWith(readAll(server), "TRANSPORT_FAILED", /no longer wanted/);
    await listener.close();
  });

  it("a writer whose reader takes nothing stops at maxUnconsumedFiles; drain waits until it reads", async () => {
    const options: MailboxOptions = {
      maxFileBytes: 64 * KiB,
      maxUnconsumedFiles: 4,
      maxUnconsumedBytes: 1 * MiB,
      readHighWaterMark: 64 * KiB,
    };
    const { listener, client, server } = await pair(options);
    const data = pattern(4 * MiB, 3);
    assert.equal(client.send([data]), false, "4 MiB is above the send buffer's mark");
    let drained = false;
    const draining = client.drain().then(() => {
      drained = true;
    });
    const outDir = join(client.folder, "c2l");
    await until(client.folder, "the writer to stop", () => client.stats.writerBlocked > 0);
    // Many more looks at the folder change nothing: the writer stays at its bound.
    const steps = client.stats.steps;
    await until(client.folder, "ten more polls", () => client.stats.steps >= steps + 10);
    assert.equal((await dataFiles(outDir)).length, 4);
    assert.equal(client.stats.unconsumedFiles, 4);
    assert.ok(client.stats.pendingBytes >= 4 * MiB - 4 * 64 * KiB);
    assert.equal(drained, false, "drain() waits for the reader");

    const reading = readAll(server);
    await draining;
    const closed = client.close();
    const received = await reading;
    assert.equal(sha256(received), sha256(data));
    await server.close();
    await closed;
    await listener.close();
  });

  it("a slow reader holds a fast writer to a bounded number of unread files and bytes", async () => {
    const options: MailboxOptions = {
      maxFileBytes: 32 * KiB,
      maxUnconsumedFiles: 8,
      maxUnconsumedBytes: 128 * KiB,
      readHighWaterMark: 32 * KiB,
    };
    const { listener, client, server } = await pair(options);
    const total = 8 * MiB;
    const chunk = pattern(16 * KiB, 5);
    let sent = 0;
    const writing = (async () => {
      while (sent < total) {
        sent += chunk.length;
        if (!client.send([chunk])) await client.drain();
      }
      await client.close();
    })();
    const outDir = join(client.folder, "c2l");
    let read = 0;
    let maxAhead = 0;
    let maxFiles = 0;
    let looks = 0;
    for await (const c of server) {
      read += c.length;
      maxAhead = Math.max(maxAhead, sent - read);
      if (looks++ % 8 === 0) {
        maxFiles = Math.max(maxFiles, (await dataFiles(outDir).catch(() => [])).length);
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await server.close();
    await writing;
    assert.equal(read, total);
    assert.ok(maxFiles <= 8, `${maxFiles} files unread at once`);
    // Unread files, what the reader holds, one file's worth being written, and the last send.
    const bound = 128 * KiB + 32 * KiB + 32 * KiB + 32 * KiB + chunk.length;
    assert.ok(maxAhead <= bound, `the writer ran ${maxAhead} bytes ahead (bound ${bound})`);
    await listener.close();
  });

  it("a consumer that stops reading early does not stall the writer: its files are still removed", async () => {
    const { listener, client, server } = await pair({
      maxFileBytes: 64 * KiB,
      maxUnconsumedFiles: 2,
    });
    client.send([text("first")]);
    for await (const _ of server) break;
    for (let i = 0; i < 64; i++) {
      if (!client.send([pattern(64 * KiB, i)])) await client.drain();
    }
    await until(
      client.folder,
      "every file to be taken",
      () => client.stats.unconsumedFiles === 0 && client.stats.pendingBytes === 0,
    );
    client.abort();
    server.abort();
    await listener.close();
  });

  it("the connector fails with TRANSPORT_FAILED when its connection folder is removed", async () => {
    const { listener, client } = await pair(QUICK);
    const failed = rejectsWith(readAll(client), "TRANSPORT_FAILED", /removed/);
    await rm(client.folder, { recursive: true, force: true });
    await failed;
    await listener.close().catch(() => {});
  });
});

describe("mailbox transport: folders, locks and listeners", () => {
  it("listens at mailbox:FOLDER; close() releases the lock and ends the accept loop", async () => {
    const folder = await freshFolder();
    const listener = await listenMailbox(folder);
    assert.equal(listener.address, `mailbox:${folder}`);
    const owner = JSON.parse(await readFile(join(folder, "listener.lock"), "utf8"));
    assert.equal(owner.pid, process.pid);
    assert.equal(owner.host, hostname());
    const next = listener[Symbol.asyncIterator]().next();
    await listener.close();
    assert.deepEqual(await next, { done: true, value: undefined });
    assert.deepEqual(await readdir(folder), []);
  });

  it("refuses a folder that does not exist, or is a file, with CONNECT_FAILED and LISTEN_FAILED", async () => {
    const missing = join(root.path, "no-such-folder");
    await rejectsWith(connectMailbox(missing), "CONNECT_FAILED", /does not exist.*mount/);
    await rejectsWith(listenMailbox(missing), "LISTEN_FAILED", /does not exist.*mount/);
    const file = join(root.path, "a-file");
    await writeFile(file, "x");
    await rejectsWith(connectMailbox(file), "CONNECT_FAILED", /not a folder/);
    await rejectsWith(listenMailbox(file), "LISTEN_FAILED", /not a folder/);
  });

  it("refuses a folder this user cannot write in", async (t) => {
    const folder = await freshFolder();
    await chmod(folder, 0o555);
    try {
      // root may write anywhere: ask as nobody instead.
      const asRoot = process.getuid?.() === 0;
      for (const [mode, code] of [
        ["connect", "CONNECT_FAILED"],
        ["listen", "LISTEN_FAILED"],
      ] as const) {
        if (asRoot) {
          await chmod(root.path, 0o755);
          const probe = spawnSync(
            process.execPath,
            ["--import", "tsx", PEER, "probe", mode, folder],
            {
              uid: 65534,
              gid: 65534,
              encoding: "utf8",
              cwd: process.cwd(),
              env: { ...process.env, HOME: "/tmp" },
            },
          );
          if (probe.error !== undefined) {
            // Root without the right to switch users (a restricted container): nothing to show.
            t.skip(`cannot run as nobody: ${probe.error.message}`);
            return;
          }
          const outcome = JSON.parse(probe.stdout.trim().split("\n").at(-1) ?? "{}");
          assert.equal(outcome.code, code, probe.stderr);
          assert.match(outcome.message, /not writable/);
        } else {
          const attempt = mode === "connect" ? connectMailbox(folder) : listenMailbox(folder);
          await rejectsWith(attempt, code, /not writable/);
        }
      }
    } finally {
      await chmod(folder, 0o755);
    }
  });

  it("connecting where nobody listens fails at once with CONNECT_FAILED saying to start the agent", async () => {
    const folder = await freshFolder();
    const err = await rejectsWith(
      connectMailbox(folder),
      "CONNECT_FAILED",
      /no agent listens.*--listen mailbox:/,
    );
    assert.equal((err as { details?: { reason?: string } }).details?.reason, "no-listener");
    assert.deepEqual(await readdir(folder), [], "nothing left behind");
  });

  it("a second listener on the same folder gets ADDRESS_IN_USE", async () => {
    const folder = await freshFolder();
    const first = await listenMailbox(folder);
    await rejectsWith(listenMailbox(folder), "ADDRESS_IN_USE", new RegExp(`pid ${process.pid}`));
    await first.close();
    const again = await listenMailbox(folder);
    await again.close();
  });

  it("a listener in another process holds the folder until it is killed; its stale lock is then replaced", async () => {
    const folder = await freshFolder();
    const peer = new PeerProcess(["listen", folder]);
    await peer.line("ready");
    await rejectsWith(listenMailbox(folder), "ADDRESS_IN_USE", new RegExp(`pid ${peer.child.pid}`));
    await peer.kill();
    // Its lock is still there, naming a pid that no longer runs.
    const stale = JSON.parse(await readFile(join(folder, "listener.lock"), "utf8"));
    assert.equal(stale.pid, peer.child.pid);
    await rejectsWith(connectMailbox(folder), "CONNECT_FAILED", /is gone/);
    const listener = await listenMailbox(folder);
    const owner = JSON.parse(await readFile(join(folder, "listener.lock"), "utf8"));
    assert.equal(owner.pid, process.pid);
    await listener.close();
  });

  it("a lock from another host is in use while its owner touches it, whatever its clock says", async () => {
    const folder = await freshFolder();
    const path = join(folder, "listener.lock");
    const lock = { pid: 1, host: "another-host", incarnation: "x", startedAt: "then" };
    await writeFile(path, JSON.stringify(lock));
    await rejectsWith(listenMailbox(folder, QUICK), "ADDRESS_IN_USE", /another-host/);
    // An owner whose clock is a minute behind ours, touching its lock every 20 ms: it looks old,
    // but it changes while the listener watches.
    let skewed = Date.now() - 60_000;
    const touching = setInterval(() => {
      skewed += 20;
      void utimes(path, new Date(skewed), new Date(skewed)).catch(() => {});
    }, 20);
    try {
      await rejectsWith(listenMailbox(folder, QUICK), "ADDRESS_IN_USE", /another-host/);
    } finally {
      clearInterval(touching);
    }
    // A connector cannot judge it: it gives the listener there acceptTimeoutMs to answer.
    await rejectsWith(
      connectMailbox(folder, { acceptTimeoutMs: 50 }),
      "CONNECT_FAILED",
      /no agent accepted.*another-host/,
    );
    // Old, and untouched while watched: abandoned.
    const old = new Date(Date.now() - 60_000);
    await utimes(path, old, old);
    const listener = await listenMailbox(folder, QUICK);
    await listener.close();
  });

  it("a connect nobody accepts fails with CONNECT_FAILED after acceptTimeoutMs, or at its deadline, and leaves nothing", async () => {
    const folder = await freshFolder();
    // A lock that looks alive (it names this process) but no listener reading the folder.
    const lock = { pid: process.pid, host: hostname(), incarnation: "x", startedAt: "now" };
    await writeFile(join(folder, "listener.lock"), JSON.stringify(lock));
    await rejectsWith(
      connectMailbox(folder, { acceptTimeoutMs: 100 }),
      "CONNECT_FAILED",
      /no agent accepted/,
    );
    const err = await rejectsWith(
      connectMailbox(folder, { deadline: performance.now() + 100 }),
      "CONNECT_FAILED",
      /deadline/,
    );
    assert.equal((err as { details?: { reason?: string } }).details?.reason, "deadline");
    const controller = new AbortController();
    const reason = new Error("user gave up");
    const attempt = connectMailbox(folder, { signal: controller.signal });
    controller.abort(reason);
    await assert.rejects(attempt, (e) => e === reason);
    await until(
      folder,
      "the connection folders to go",
      async () => (await connectionFolders(folder)).length === 0,
    );
  });

  it("rejects bad options with INVALID_OPTION", async () => {
    const folder = await freshFolder();
    await rejectsWith(
      connectMailbox(folder, { pollIntervalMs: 0 }),
      "INVALID_OPTION",
      /pollIntervalMs/,
    );
    await rejectsWith(
      listenMailbox(folder, { maxFileBytes: 1.5 }),
      "INVALID_OPTION",
      /maxFileBytes/,
    );
    await rejectsWith(
      listenMailbox(folder, { fsync: "yes" as unknown as boolean }),
      "INVALID_OPTION",
      /fsync/,
    );
    await rejectsWith(
      listenMailbox(folder, { heartbeatIntervalMs: 1000, peerTimeoutMs: 1500 }),
      "INVALID_OPTION",
      /peerTimeoutMs/,
    );
  });
});

describe("mailbox transport: dead peers and restarts", () => {
  it("a restarted listener marks its earlier incarnation's connections dead: the connector fails, a new connection works", async () => {
    const folder = await freshFolder();
    const peer = new PeerProcess(["listen", folder, JSON.stringify(QUICK)]);
    await peer.line("ready");
    const old = await connectMailbox(folder, QUICK);
    old.send([text("ping")]);
    const it = old[Symbol.asyncIterator]();
    assert.equal(str((await it.next()).value as Uint8Array), "ping");
    await peer.kill();

    const listener = await listenMailbox(folder, QUICK);
    await rejectsWith(it.next(), "TRANSPORT_FAILED", /restarted/);
    const [fresh, server] = await Promise.all([connectMailbox(folder, QUICK), accept(listener)]);
    fresh.send([text("again")]);
    const closed = fresh.close();
    assert.equal(str(await readAll(server)), "again");
    await server.close();
    await closed;
    // The dead connection's folder goes (its connector removed it), the new one too.
    await until(
      folder,
      "the connection folders to go",
      async () => (await connectionFolders(folder)).length === 0,
    );
    await listener.close();
  });

  it("a connector that died is found out: its transport fails, its folder and half-made ones are removed", async () => {
    const folder = await freshFolder();
    const listener = await listenMailbox(folder, QUICK);
    // A connection announced by a connector that died before it ever touched its alive file, and
    // one that died while preparing.
    const dead = join(folder, "c-AAAAAAAAAAAAAAAA");
    await mkdir(join(folder, ".c-BBBBBBBBBBBBBBBB.tmp", "c2l"), { recursive: true });
    await mkdir(join(dead, "c2l"), { recursive: true });
    await mkdir(join(dead, "l2c"));
    await writeFile(join(dead, "c2l", "alive"), "");
    const server = await accept(listener);
    await rejectsWith(readAll(server), "TRANSPORT_FAILED", /no sign of life/);
    await until(
      folder,
      "the dead folders to go",
      async () => (await connectionFolders(folder)).length === 0,
    );
    await listener.close();
  });

  it("connections a dead listener had accepted, whose connectors are dead too, are removed by the next listener", async () => {
    const folder = await freshFolder();
    const leftover = join(folder, "c-CCCCCCCCCCCCCCCC");
    await mkdir(join(leftover, "c2l"), { recursive: true });
    await mkdir(join(leftover, "l2c"));
    await writeFile(join(leftover, "c2l", "alive"), "");
    await writeFile(join(leftover, "c2l", "0000000000000001"), "half a stream");
    await writeFile(join(leftover, "l2c", "accepted"), "{}");
    const listener = await listenMailbox(folder, QUICK);
    await until(folder, "the leftover to be marked dead", async () => {
      return (await readdir(join(leftover, "l2c")).catch(() => [] as string[])).includes("broken");
    });
    await until(
      folder,
      "the leftover to go",
      async () => (await connectionFolders(folder)).length === 0,
    );
    await listener.close();
  });
});

describe("mailbox transport: a hostile other side", () => {
  /** Even a hostile peer's files appear whole when it renames them into place. */
  async function writeComplete(file: string, content: string | Buffer): Promise<void> {
    await writeFile(`${file}.tmp`, content);
    await rename(`${file}.tmp`, file);
  }

  const cases: [string, (file: string) => Promise<void>, RegExp][] = [
    [
      "a symbolic link to a file of ours",
      (file) => symlink("/etc/hostname", file),
      /symbolic link/,
    ],
    ["a FIFO", async (file) => void spawnSync("mkfifo", [file]), /not a regular file/],
    [
      "a file larger than maxFileBytes",
      (file) => writeComplete(file, Buffer.alloc(2 * MiB)),
      /more than the 1048592 allowed/,
    ],
    [
      "a file that is not a mailbox file",
      (file) => writeComplete(file, "GET / HTTP/1.1\r\n\r\n"),
      /not a mailbox file/,
    ],
  ];
  for (const [what, make, message] of cases) {
    it(`the next file being ${what} fails the connection with TRANSPORT_FAILED, reading nothing of it`, async () => {
      const { listener, client, server } = await pair(QUICK);
      const next = join(client.folder, "c2l", "0000000000000001");
      await make(next);
      await rejectsWith(readAll(server), "TRANSPORT_FAILED", message);
      client.abort();
      await listener.close();
    });
  }
});

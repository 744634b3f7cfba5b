/**
 * Two processes whose only channel is a folder (`mailbox:FOLDER`): an agent serving sessions in
 * a child process, the host in this one. 10,000 calls and a 100 MB stream with nothing lost,
 * then either side restarting: a SIGKILLed agent started again fails the call in flight with
 * RESUME_FAILED (peer-restarted) and serves new calls; a SIGKILLed host's successor just works.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { isGuestlinkError } from "../../src/errors.ts";
import { openSession } from "../../src/platform/session.ts";
import type { Session, SessionEvent } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { hashStream } from "../helpers/session.ts";
import { tempDir } from "../helpers/transport.ts";

const AGENT = fileURLToPath(new URL("../fixtures/mailbox-agent.ts", import.meta.url));
const HOST = fileURLToPath(new URL("../fixtures/mailbox-host.ts", import.meta.url));
const STREAM_BYTES = 100 * 1000 * 1000;

/** A fixture in its own process; `line(text)` resolves once it printed that line. */
class Child {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<void>;
  #out = "";
  #stderr = "";
  #waiting: { text: string; resolve: () => void; reject: (err: Error) => void }[] = [];

  constructor(script: string, address: string) {
    this.child = spawn(process.execPath, ["--import", "tsx", script, address], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stderr.setEncoding("utf8").on("data", (d: string) => {
      this.#stderr += d;
    });
    this.child.stdout.setEncoding("utf8").on("data", (d: string) => {
      this.#out += d;
      this.#waiting = this.#waiting.filter((w) => {
        if (!this.#out.includes(`${w.text}\n`)) return true;
        w.resolve();
        return false;
      });
    });
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    void this.exited.then(() => {
      for (const w of this.#waiting) w.reject(new Error(`${script} exited: ${this.#stderr}`));
    });
  }

  line(text: string): Promise<void> {
    if (this.#out.includes(`${text}\n`)) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiting.push({ text, resolve, reject }));
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }

  async stop(): Promise<void> {
    this.child.stdin.end();
    await this.exited;
  }
}

function patternHash(bytes: number): string {
  const block = Buffer.alloc(64 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = i % 251;
  const hash = createHash("sha256");
  for (let left = bytes; left > 0; left -= block.length)
    hash.update(block.subarray(0, Math.min(left, block.length)));
  return hash.digest("hex");
}

describe("mailbox: an agent and a host that share only a folder", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let address: string;
  let agent: Child;
  let session: Session;
  const events: SessionEvent[] = [];

  before(async () => {
    dir = await tempDir();
    address = `mailbox:${dir.path}`;
    agent = new Child(AGENT, address);
    await agent.line("ready");
    session = await openSession(address, { resume: { windowMs: 20_000 } });
    session.onEvent((e) => events.push(e));
  });

  after(async () => {
    await session?.close();
    await agent?.stop();
    await dir.remove();
  });

  it("answers 10,000 pipelined calls, every one checked", async (t) => {
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: 10_000 }, (_, n) => session.call("echo", { n })),
    );
    const seconds = (performance.now() - started) / 1000;
    for (const [n, r] of results.entries()) assert.deepEqual(r, { n });
    t.diagnostic(
      `10,000 pipelined calls in ${seconds.toFixed(2)} s: ${(10_000 / seconds).toFixed(0)} calls/s`,
    );

    const one = performance.now();
    for (let n = 0; n < 200; n++) assert.equal(await session.call("echo", n), n);
    const each = (performance.now() - one) / 200;
    t.diagnostic(
      `200 calls one at a time: ${each.toFixed(2)} ms each (${(1000 / each).toFixed(0)} calls/s)`,
    );
  });

  it("carries a 100 MB stream out of the agent, sha256 checked", async (t) => {
    const started = performance.now();
    const produce = session.open("produce", { bytes: STREAM_BYTES }, { streams: ["out"] });
    const arrived = hashStream(produce.streams.out as SessionStream);
    const { sha256, bytes } = await arrived;
    assert.equal(await produce.result, STREAM_BYTES);
    const seconds = (performance.now() - started) / 1000;
    assert.equal(bytes, STREAM_BYTES);
    assert.equal(sha256, patternHash(STREAM_BYTES));
    t.diagnostic(
      `100 MB in ${seconds.toFixed(2)} s: ${(STREAM_BYTES / 1e6 / seconds).toFixed(0)} MB/s`,
    );
  });

  it("an agent killed and started again: the call in flight fails RESUME_FAILED (peer-restarted), new calls work", async () => {
    const pid = await session.call("pid");
    const hanging = session.call("hang").catch((err: unknown) => err);
    await session.call("echo", "the hang call has reached the agent");
    await agent.kill();
    agent = new Child(AGENT, address);
    await agent.line("ready");
    const err = await hanging;
    assert.ok(isGuestlinkError(err, "RESUME_FAILED"), String(err));
    assert.equal(err.details?.reason, "peer-restarted");
    assert.notEqual(await session.call("pid"), pid);
    assert.equal(await session.call("echo", "after"), "after");
    assert.ok(events.some((e) => e.type === "restarted"));
  });

  it("a host killed mid-call: a new host process connects and works, and the agent lives on", async () => {
    const host = new Child(HOST, address);
    await host.line("called");
    await host.kill();
    const second = await openSession(address);
    try {
      assert.equal(await second.call("echo", "a new host"), "a new host");
      assert.equal(await session.call("echo", "the first host"), "the first host");
    } finally {
      await second.close();
    }
    // The dead host's connection folder is still there: the agent removes it once the host's
    // alive file has not changed for the peer timeout (30 s by default), not in this test.
    const folders = (await readdir(dir.path)).filter((n) => n.startsWith("c-"));
    assert.ok(folders.length >= 1, String(folders));
  });
});

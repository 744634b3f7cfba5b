/**
 * The agent as a whole: its allow-list, what it advertises, the bundled single-file build, and
 * garbage thrown at its socket (never a crash, never a disturbance to other clients).
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Agent } from "../../src/agent/agent.ts";
import { runAgent } from "../../src/agent/run.ts";
import { remoteExec } from "../../src/controller/exec.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { openSession, serveSessions } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";
import { FrameEncoder } from "../../src/wire/encode.ts";
import { FrameType } from "../../src/wire/frame.ts";
import { helloPayload } from "../helpers/session.ts";

const silent = { info() {}, warn() {} };

describe("agent", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-agent-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("serves only what its allow-list names, advertises only that, and refuses the rest", async () => {
    const address = `unix:${join(dir, "policy.sock")}`;
    const running = await runAgent({
      agent: new Agent({ allow: ["info"] }),
      listen: [address],
      log: silent,
    });
    try {
      const session = await openSession(address);
      assert.deepEqual(session.peer?.services.sort(), ["info", "ping"]);
      assert.ok(await session.call("info"));
      await assert.rejects(session.call("exec", { argv: ["true"] }), (e: unknown) =>
        isGuestlinkError(e, "POLICY_DENIED"),
      );
      await assert.rejects(session.call("files.get", { path: "/etc/hostname" }), (e: unknown) =>
        isGuestlinkError(e, "POLICY_DENIED"),
      );
      await session.close();
    } finally {
      await running.stop();
    }
  });

  it("with --connect, reaches a host that comes up later, and again after the host restarts", async () => {
    const path = join(dir, "host.sock");
    const running = await runAgent({
      agent: new Agent({ id: "dialer" }),
      connect: `unix:${path}`,
      reconnectDelayMs: 20,
      log: silent,
    });
    try {
      for (let round = 0; round < 2; round++) {
        let arrived!: (s: Session) => void;
        const session = new Promise<Session>((resolve) => {
          arrived = resolve;
        });
        // The host listens; the agent dials in and serves calls on the host's session.
        const host = await serveSessions(`unix:${path}`, (s) => arrived(s), { role: "client" });
        const s = await session;
        await s.ready;
        assert.equal(s.peer?.id, "dialer");
        assert.ok(await s.call("info"));
        await host.close({ abort: true });
      }
    } finally {
      await running.stop({ abort: true });
    }
  });

  it("refuses an allow-list naming a service it does not have", () => {
    assert.throws(
      () => new Agent({ allow: ["exec", "shell"] }),
      (e: unknown) =>
        isGuestlinkError(e, "INVALID_OPTION") &&
        /unknown service or method "shell"/.test(e.message),
    );
  });

  it("survives garbage on its socket without disturbing other clients", async () => {
    const address = join(dir, "garbage.sock");
    const running = await runAgent({
      agent: new Agent(),
      listen: [`unix:${address}`],
      log: silent,
    });
    try {
      const good = await openSession(`unix:${address}`);
      const encoder = new FrameEncoder();
      const junk = [
        randomBytes(64 * 1024),
        Buffer.from("2026-11-24 12:00:00 kernel: stray log line on the console\n"),
        encoder
          .encode({ type: FrameType.DATA, streamId: 1, payload: new Uint8Array(5000) })
          .subarray(0, 700),
        Buffer.concat([
          encoder.encode({ type: FrameType.HELLO, payload: helloPayload() }),
          randomBytes(1000),
        ]),
        encoder.encode({ type: 250, payload: randomBytes(10) }),
      ];
      for (const bytes of junk) {
        const socket = createConnection(address);
        await once(socket, "connect");
        socket.on("error", () => {});
        socket.resume(); // read (and drop) what the agent says, or the close never shows
        socket.write(bytes);
        socket.end();
        await once(socket, "close");
      }
      // The well-behaved client never noticed.
      const chunks: Buffer[] = [];
      const { Writable } = await import("node:stream");
      const stdout = new Writable({
        write(chunk, _e, cb) {
          chunks.push(chunk);
          cb();
        },
      });
      const result = await remoteExec(
        good,
        { argv: ["echo", "still here"] },
        { stdout, stderr: stdout },
      );
      assert.equal(result.status, 0);
      assert.equal(Buffer.concat(chunks).toString(), "still here\n");
      const fresh = await openSession(`unix:${address}`);
      assert.ok(await fresh.call("info"));
      await Promise.all([good.close(), fresh.close()]);
    } finally {
      await running.stop({ abort: true });
    }
  });

  it("bundles into one file that runs with plain node and no node_modules", async () => {
    const root = fileURLToPath(new URL("../..", import.meta.url));
    execFileSync(process.execPath, ["--import", "tsx", join(root, "scripts/build-agent.ts")], {
      cwd: root,
      stdio: "pipe",
    });
    const bundle = join(dir, "guestlink-agent.cjs");
    await copyFile(join(root, "dist/guestlink-agent.cjs"), bundle);
    const address = `unix:${join(dir, "bundled.sock")}`;
    const child: ChildProcess = spawn(
      process.execPath,
      [bundle, "--listen", address, "--id", "bundled", "--log-level", "warn"],
      {
        cwd: dir,
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    try {
      let session: Awaited<ReturnType<typeof openSession>> | undefined;
      for (let attempt = 0; attempt < 100 && !session; attempt++) {
        session = await openSession(address).catch(async (e: unknown) => {
          if (!isGuestlinkError(e, "CONNECT_FAILED")) throw e;
          await new Promise((r) => setTimeout(r, 50));
          return undefined;
        });
      }
      assert.ok(session, "the bundled agent came up");
      assert.equal(session.peer?.id, "bundled");
      const info = (await session.call("info")) as { agent: { pid: number } };
      assert.equal(info.agent.pid, child.pid);
      await session.close();
    } finally {
      child.kill("SIGTERM");
      await once(child, "exit");
    }
  });
});

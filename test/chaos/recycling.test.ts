/**
 * Read buffers through redials (recycle.ts): a stream whose connection is cut again and again
 * keeps reading into the same few buffers on both sides, and arrives byte-exact. Every cut used to
 * leave the host's read buffers of that connection to the garbage collector (the first held the
 * agent's HELLO, and the others were freed only for the same connection), and the agent's output
 * buffers of every frame replayed on the new connection: a buffer of 1 MiB per cut on each side,
 * and a full collection every few cuts. Real Unix sockets, the chaos proxy cutting the connection,
 * the agent's exec service in this process (so its buffers can be counted), default options.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { execService } from "../../src/agent/exec.ts";
import { pipeSlabs } from "../../src/agent/pipe-reads.ts";
import { spawnAddon } from "../../src/agent/spawn-native.ts";
import { remoteExec } from "../../src/controller/exec.ts";
import { openSession, type SessionServer, serveSessions } from "../../src/platform/session.ts";
import { slabsAllocated } from "../../src/transport/slab-reads.ts";
import { hashSink, randomOutput } from "../helpers/output-check.ts";
import { startChaosProxy } from "./proxy.ts";

const MiB = 1024 * 1024;

describe("read buffers through redials", () => {
  let dir: string;
  let server: SessionServer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-recycling-"));
    const exec = execService();
    server = await serveSessions(`unix:${join(dir, "agent.sock")}`, (session) => {
      for (const [method, handler] of Object.entries(exec.methods)) session.handle(method, handler);
    });
  });
  after(async () => {
    await server?.close({ abort: true });
    await rm(dir, { recursive: true, force: true });
  });

  it("a stream cut every ~1 MiB reads into the same few buffers on both sides, byte-exact", async () => {
    const proxy = await startChaosProxy({
      listen: { path: join(dir, "proxy.sock") },
      target: { path: join(dir, "agent.sock") },
      seed: 7,
      faults: { cutEveryBytes: MiB },
      direction: "both",
    });
    const session = await openSession(proxy.address);
    try {
      const hostBefore = slabsAllocated();
      const agentBefore = pipeSlabs.allocated;
      const stdout = hashSink();
      let stderr = "";
      const result = await remoteExec(
        session,
        { argv: randomOutput(32 * MiB, join(dir, "random.bin")) },
        {
          stdout,
          stderr: new Writable({
            write(chunk: Buffer, _encoding, callback) {
              stderr += chunk.toString();
              callback();
            },
          }),
          recycle: true,
        },
      );
      assert.equal(result.status, 0, stderr);
      const { sha256, bytes } = stdout.digest();
      assert.equal(bytes, 32 * MiB);
      assert.equal(sha256, stderr.split(" ")[0], "byte-exact");
      const cuts = proxy.stats.cuts;
      assert.ok(cuts >= 16, `${cuts} cuts`);
      const host = slabsAllocated() - hostBefore;
      assert.ok(host <= 8, `the host read into ${host} new buffers of 1 MiB through ${cuts} cuts`);
      // The agent reads a command's pipes into its own buffers only with its spawn addon.
      if ("addon" in spawnAddon()) {
        const agent = pipeSlabs.allocated - agentBefore;
        assert.ok(agent <= 12, `the agent read into ${agent} new buffers through ${cuts} cuts`);
      }
    } finally {
      await session.close();
      await proxy.close();
    }
  });
});

/**
 * Read buffers through redials and junk (recycle.ts): a stream whose connection is cut again and
 * again, or damaged again and again, keeps reading into the same few buffers on both sides, and
 * arrives byte-exact. Every cut used to
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
import { after, before, describe, it } from "node:test";
import { execService } from "../../src/agent/exec.ts";
import { pipeSlabs } from "../../src/agent/pipe-reads.ts";
import { spawnAddon } from "../../src/agent/spawn-native.ts";
import { remoteExec } from "../../src/controller/exec.ts";
import { openSession, type SessionServer, serveSessions } from "../../src/platform/session.ts";
import { slabsAllocated } from "../../src/transport/slab-reads.ts";
import { hashSink, randomOutput, textSink } from "../helpers/output-check.ts";
import { type ChaosFaultOptions, startChaosProxy } from "./proxy.ts";

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

  /**
   * 32 MiB of a command's output through the chaos proxy with `faults`: byte-exact, and how many
   * new read buffers of 1 MiB each side took for it.
   */
  async function streamThrough(faults: ChaosFaultOptions, seed: number) {
    const proxy = await startChaosProxy({
      listen: { path: join(dir, `proxy-${seed}.sock`) },
      target: { path: join(dir, "agent.sock") },
      seed,
      faults,
      direction: "both",
    });
    const session = await openSession(proxy.address);
    try {
      const hostBefore = slabsAllocated();
      const agentBefore = pipeSlabs.allocated;
      const stdout = hashSink();
      const stderr = textSink();
      const result = await remoteExec(
        session,
        { argv: randomOutput(32 * MiB, join(dir, "random.bin")) },
        { stdout, stderr, recycle: true },
      );
      assert.equal(result.status, 0, stderr.text());
      const { sha256, bytes } = stdout.digest();
      assert.equal(bytes, 32 * MiB);
      assert.equal(sha256, stderr.text().split(" ")[0], "byte-exact");
      return {
        stats: proxy.stats,
        host: slabsAllocated() - hostBefore,
        // The agent reads a command's pipes into its own buffers only with its spawn addon.
        agent: "addon" in spawnAddon() ? pipeSlabs.allocated - agentBefore : undefined,
      };
    } finally {
      await session.close();
      await proxy.close();
    }
  }

  it("a stream cut every ~1 MiB reads into the same few buffers on both sides, byte-exact", async () => {
    const { stats, host, agent } = await streamThrough({ cutEveryBytes: MiB }, 7);
    assert.ok(stats.cuts >= 16, `${stats.cuts} cuts`);
    assert.ok(
      host <= 8,
      `the host read into ${host} new buffers of 1 MiB through ${stats.cuts} cuts`,
    );
    if (agent !== undefined) {
      assert.ok(agent <= 12, `the agent read into ${agent} new buffers through ${stats.cuts} cuts`);
    }
  });

  // Frames damaged on a live connection are sent again as copies, and the receiver gives back
  // the bytes of duplicates and of held frames it lets go: both used to keep their buffers from
  // reuse, a new one of 1 MiB for most bursts on each side (72 on the host per 168 MB here).
  it("a stream with junk every ~256 KiB reads into the same few buffers on both sides, byte-exact", async () => {
    const { stats, host, agent } = await streamThrough({ garbageEveryBytes: 256 * 1024 }, 11);
    const bursts = stats.garbageBursts;
    assert.ok(bursts >= 64, `${bursts} bursts`);
    assert.equal(stats.cuts, 0);
    assert.ok(
      host <= 12,
      `the host read into ${host} new buffers of 1 MiB through ${bursts} bursts`,
    );
    if (agent !== undefined) {
      assert.ok(agent <= 12, `the agent read into ${agent} new buffers through ${bursts} bursts`);
    }
  });
});

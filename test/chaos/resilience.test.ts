/**
 * The chaos suite, short: real agent processes behind the fault-injecting proxy, a client that
 * must ride through cuts and garbage, a frozen agent, a restarted one, and every start order.
 * `npm run chaos -- --minutes N` runs the same scenarios for longer with more seeds.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isGuestlinkError } from "../../src/errors.ts";
import { openSession } from "../../src/platform/session.ts";
import { runCli } from "../helpers/cli.ts";
import { SEED } from "../helpers/seed.ts";
import { chaosAgentFixture } from "./fixture.ts";
import { startChaosProxy } from "./proxy.ts";
import {
  AgentProcess,
  callsThroughProxy,
  chaosSession,
  execThroughProxy,
  median,
} from "./scenarios.ts";

const MiB = 1024 * 1024;

describe("chaos: riding through faults", () => {
  const chaos = chaosAgentFixture("guestlink-chaos-");

  it("exec -- seq through a cut every ~2 MB and garbage every ~1 MB: output byte-identical, exit 0", async (t) => {
    const seed = SEED;
    const figures = await execThroughProxy(chaos.address, chaos.proxyAt(), 1_500_000, seed, {
      cutEveryBytes: 2 * MiB,
      garbageEveryBytes: 1 * MiB,
    });
    t.diagnostic(`seed ${seed}: ${JSON.stringify({ ...figures, stderr: undefined })}`);
    assert.equal(figures.exitCode, 0, `seed ${seed}: ${figures.stderr}`);
    assert.equal(figures.sha256, figures.expectedSha256, `seed ${seed}: output differs`);
    // A burst that damages a frame may end its connection (a new one makes the proxy count
    // afresh, often before it reaches its scheduled cut): count both kinds of fault together.
    assert.ok(
      figures.cuts + figures.garbageBursts >= 5,
      `seed ${seed}: only ${figures.cuts} cuts and ${figures.garbageBursts} bursts`,
    );
    assert.equal(figures.stderr, "", "nothing said without --verbose");
  });

  it("exec --verbose says when it lost the connection and resumed, and the output is still exact", async () => {
    const seed = SEED + 2;
    const figures = await execThroughProxy(
      chaos.address,
      chaos.proxyAt(),
      300_000,
      seed,
      { cutEveryBytes: 512 * 1024 },
      undefined,
      true,
    );
    assert.equal(figures.exitCode, 0, `seed ${seed}: ${figures.stderr}`);
    assert.equal(figures.sha256, figures.expectedSha256, `seed ${seed}: output differs`);
    const lost =
      figures.stderr.match(/connection lost; the session resumes once it is back/g)?.length ?? 0;
    const resumed = figures.stderr.match(/connection restored; session resumed/g)?.length ?? 0;
    assert.ok(figures.cuts >= 2, `seed ${seed}: ${figures.cuts} cuts`);
    assert.ok(lost >= 1 && resumed >= 1, `seed ${seed}: ${figures.stderr}`);
  });

  it("get and put ride through cuts: 24 MiB each way, byte-exact", async () => {
    const seed = SEED + 3;
    const proxy = await startChaosProxy({
      listen: chaos.proxyAt(),
      target: { path: chaos.address.slice("unix:".length) },
      seed,
      faults: { cutEveryBytes: 3 * MiB },
    });
    try {
      const data = randomBytes(24 * MiB);
      const local = join(chaos.dir, "local.bin");
      await writeFile(local, data);
      const remote = join(chaos.dir, "remote.bin");
      const put = await runCli(["put", proxy.address, local, remote]);
      assert.equal(put.code, 0, `seed ${seed}: ${put.stderr}`);
      const back = join(chaos.dir, "back.bin");
      const get = await runCli(["get", proxy.address, remote, back]);
      assert.equal(get.code, 0, `seed ${seed}: ${get.stderr}`);
      assert.ok(data.equals(await readFile(back)), `seed ${seed}: the file came back different`);
      assert.ok(proxy.stats.cuts >= 4, `seed ${seed}: ${proxy.stats.cuts} cuts`);
    } finally {
      await proxy.close();
    }
  });

  it("2,000 pipelined calls through random faults: each answered once, run once", async (t) => {
    const seed = SEED + 1;
    const figures = await callsThroughProxy(chaos.address, chaos.proxyAt(), 2_000, seed, {
      cutEveryBytes: 20 * 1024,
      garbageEveryBytes: 6 * 1024,
      splitWrites: 700,
      delayMs: 2,
    });
    t.diagnostic(
      `seed ${seed}: ${figures.cuts} cuts, ${figures.resumes} resumes, median handshake ${median(figures.handshakeMs).toFixed(1)} ms; ${figures.burstPlaces}`,
    );
    assert.equal(
      figures.failed.length,
      0,
      `seed ${seed}: ${figures.failed.length} calls failed, the first with: ${figures.failed[0]}`,
    );
    assert.equal(figures.answered, 2_000);
    assert.equal(figures.wrong, 0);
    assert.deepEqual(figures.executions, [[1, 2_000]], `seed ${seed}: every call ran exactly once`);
    // A cut or a damaged frame ends a connection; either way the session must have resumed.
    assert.ok(figures.resumes >= 1, `seed ${seed}: never resumed (${figures.cuts} cuts)`);
    // Garbage is denser than cuts, or most connections would be cut before their first burst.
    const { toAgent, toCli } = figures.burstsInPayloads;
    assert.ok(
      toAgent + toCli >= 1,
      `seed ${seed}: no burst inside a payload; ${figures.burstPlaces}`,
    );
  });
});

describe("chaos: frozen, restarted and late agents", () => {
  let dir: string;
  let n = 0;
  const freshAddress = () => `unix:${join(dir, `a${++n}.sock`)}`;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-chaos-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("a frozen agent (SIGSTOP) is reported PEER_UNRESPONSIVE within the keepalive bounds", async () => {
    const address = freshAddress();
    const agent = new AgentProcess(address);
    await agent.ready;
    const { session } = await chaosSession(address);
    try {
      const call = session.call("slow", 300);
      process.kill(agent.pid, "SIGSTOP");
      await assert.rejects(call, (err) => {
        assert.ok(isGuestlinkError(err, "PEER_UNRESPONSIVE"), String(err));
        const silent = err.details?.silentForMs as number;
        // Declared dead once silent for deadAfterMs, checked at least every interval.
        assert.ok(silent >= 5_000 && silent < 5_000 + 500 + 250, `silent for ${silent} ms`);
        return true;
      });
    } finally {
      process.kill(agent.pid, "SIGCONT");
      await agent.stop();
    }
  });

  it("an agent thawed (SIGCONT) before the dead timeout simply completes the call", async () => {
    const address = freshAddress();
    const agent = new AgentProcess(address);
    await agent.ready;
    const { session } = await chaosSession(address);
    try {
      const call = session.call("slow", 200);
      process.kill(agent.pid, "SIGSTOP");
      // A real process stays frozen for a while: this is the fault, not a wait for a result.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      process.kill(agent.pid, "SIGCONT");
      assert.equal(await call, "slept");
      assert.equal(await session.call("count", "thawed"), "thawed");
    } finally {
      await session.close();
      await agent.stop();
    }
  });

  it("an agent restarted mid-call: that call fails RESUME_FAILED, the next succeeds", async () => {
    const address = freshAddress();
    let agent = new AgentProcess(address);
    await agent.ready;
    const { session, events } = await chaosSession(address);
    try {
      const call = session.call("hang");
      await session.call("count", "before");
      await agent.kill();
      agent = new AgentProcess(address);
      await agent.ready;
      await assert.rejects(call, (err) => {
        assert.ok(isGuestlinkError(err, "RESUME_FAILED"), String(err));
        assert.equal(err.details?.reason, "peer-restarted");
        return true;
      });
      assert.equal(await session.call("count", "after"), "after");
      assert.deepEqual(
        events.map((e) => e.type),
        ["disconnected", "restarted"],
      );
    } finally {
      await session.close();
      await agent.stop();
    }
  });

  it("start order: a command started before its agent waits for it", async () => {
    const address = freshAddress();
    const pending = runCli(["ping", "--count", "1", address]);
    await new Promise((resolve) => setTimeout(resolve, 400)); // the agent starts later
    const agent = new AgentProcess(address);
    try {
      await agent.ready;
      const result = await pending;
      assert.equal(result.code, 0, result.stderr);
    } finally {
      await agent.stop();
    }
  });

  it("start order: an agent restarting in a loop never leaves a call hanging or answered wrong", async () => {
    const address = freshAddress();
    let agent = new AgentProcess(address);
    await agent.ready;
    const session = await openSession(address, { resume: { windowMs: 20_000 } });
    let ok = 0;
    let resumeFailed = 0;
    try {
      for (let round = 0; round < 3; round++) {
        const calls = Array.from({ length: 50 }, (_, i) => session.call("count", `${round}.${i}`));
        const hanging = session.call("hang").catch((err: unknown) => err);
        await agent.kill();
        agent = new AgentProcess(address);
        await agent.ready;
        const err = await hanging;
        assert.ok(isGuestlinkError(err, "RESUME_FAILED"), String(err));
        for (const [i, o] of (await Promise.allSettled(calls)).entries()) {
          if (o.status === "fulfilled") {
            assert.equal(o.value, `${round}.${i}`);
            ok++;
          } else {
            assert.ok(isGuestlinkError(o.reason, "RESUME_FAILED"), String(o.reason));
            resumeFailed++;
          }
        }
        assert.equal(await session.call("count", `after-${round}`), `after-${round}`);
      }
      assert.equal(ok + resumeFailed, 150);
    } finally {
      await session.close();
      await agent.stop();
    }
  });
});

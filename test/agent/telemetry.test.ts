import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseNetDev, telemetryService } from "../../src/agent/telemetry.ts";
import { type TelemetrySample, watchTelemetry } from "../../src/controller/telemetry.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { openSession, type SessionServer, serveSessions } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";

describe("telemetry over a Unix socket", () => {
  let dir: string;
  let server: SessionServer;
  let session: Session;
  /** Each run of telemetry.watch on the agent, settling when the agent's side has finished. */
  const runs: Promise<unknown>[] = [];

  before(async () => {
    dir = await mkdtemp(join(os.tmpdir(), "guestlink-telemetry-"));
    const service = telemetryService();
    server = await serveSessions(`unix:${join(dir, "agent.sock")}`, (s) => {
      for (const [method, handler] of Object.entries(service.methods)) {
        s.handle(method, (params, ctx) => {
          const run = Promise.resolve().then(() => handler(params, ctx));
          runs.push(run);
          return run;
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

  it("streams samples until the watch is stopped, and the agent stops sampling", async () => {
    const controller = new AbortController();
    const samples: TelemetrySample[] = [];
    for await (const sample of watchTelemetry(session, {
      intervalMs: 100,
      signal: controller.signal,
    })) {
      samples.push(sample);
      if (samples.length === 3) controller.abort();
    }
    assert.equal(samples.length, 3);
    for (const s of samples) {
      assert.equal(typeof s.t, "number");
      assert.ok(s.cpu.usage >= 0 && s.cpu.usage <= 1, `cpu.usage ${s.cpu.usage}`);
      assert.equal(s.cpu.count, os.cpus().length);
      assert.equal(s.memory.totalBytes, os.totalmem());
      assert.ok(s.memory.availableBytes <= s.memory.totalBytes);
      assert.equal(s.memory.usedBytes, s.memory.totalBytes - s.memory.availableBytes);
      assert.equal(s.load.length, 3);
      assert.equal(s.disks[0]?.path, "/");
      assert.ok((s.disks[0]?.freeBytes ?? -1) <= (s.disks[0]?.totalBytes ?? 0));
      assert.ok(Array.isArray(s.net));
      if (process.platform === "linux") assert.ok(s.net.some((n) => n.iface === "lo"));
      assert.ok(s.process.rssBytes > 0);
      assert.equal(s.skipped, undefined);
    }
    // The agent's loop has ended (its timer cleared), reporting what it sent.
    const [run] = runs;
    const result = (await run) as { samples: number };
    assert.ok(result.samples >= 3);
  });

  it("stops when the caller breaks out of the loop", async () => {
    const before = runs.length;
    for await (const _ of watchTelemetry(session, { intervalMs: 100 })) break;
    assert.equal(runs.length, before + 1);
    assert.ok(((await runs[before]) as { samples: number }).samples >= 1);
  });

  it("refuses an interval out of range with INVALID_OPTION", async () => {
    const watching = watchTelemetry(session, { intervalMs: 50 });
    await assert.rejects(watching.next(), (err: unknown) => {
      assert.ok(isGuestlinkError(err, "INVALID_OPTION"));
      assert.match(err.message, /intervalMs must be from 100 to 3600000/);
      return true;
    });
  });

  it("parses /proc/net/dev", () => {
    const text = [
      "Inter-|   Receive                                                |  Transmit",
      " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed",
      "    lo: 1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0",
      "  eth0: 99 1 0 0 0 0 0 0 77 1 0 0 0 0 0 0",
      "",
    ].join("\n");
    assert.deepEqual(parseNetDev(text), [
      { iface: "lo", rxBytes: 1234, txBytes: 1234 },
      { iface: "eth0", rxBytes: 99, txBytes: 77 },
    ]);
  });
});

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentInfo, availableMemoryBytes, infoService } from "../../src/agent/info.ts";
import type { Service } from "../../src/agent/service.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { openSession, type SessionServer, serveSessions } from "../../src/platform/session.ts";
import type { Session } from "../../src/session/session.ts";
import { VERSION } from "../../src/version.ts";

function attach(session: Session, service: Service): void {
  for (const [method, handler] of Object.entries(service.methods)) session.handle(method, handler);
}

describe("info over a Unix socket", () => {
  let dir: string;
  let server: SessionServer;
  let advertising: SessionServer;

  before(async () => {
    dir = await mkdtemp(join(os.tmpdir(), "guestlink-info-"));
    server = await serveSessions(`unix:${join(dir, "a.sock")}`, (s) =>
      attach(s, infoService({ services: () => ["info", "files"] })),
    );
    advertising = await serveSessions(
      `unix:${join(dir, "b.sock")}`,
      (s) => attach(s, infoService()),
      { services: ["info", "telemetry"] },
    );
  });

  after(async () => {
    await server?.close();
    await advertising?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("describes the agent, its host, OS, CPUs and memory", async () => {
    const session = await openSession(server.address);
    try {
      const info = (await session.call("info")) as AgentInfo;
      assert.deepEqual(info.agent, {
        version: VERSION,
        pid: process.pid,
        node: process.version,
        protocol: 4,
      });
      assert.equal(info.hostname, os.hostname());
      assert.deepEqual(info.os, {
        platform: os.platform(),
        type: os.type(),
        release: os.release(),
        arch: os.arch(),
      });
      assert.equal(info.kernel, os.release());
      assert.ok(info.uptimeSeconds > 0);
      assert.equal(info.cpus.count, os.cpus().length);
      assert.equal(typeof info.cpus.model, "string");
      const { totalBytes, freeBytes, availableBytes } = info.memory;
      assert.equal(totalBytes, os.totalmem());
      assert.ok(freeBytes > 0 && freeBytes <= totalBytes);
      assert.ok(availableBytes > 0 && availableBytes <= totalBytes);
      assert.deepEqual(info.services, ["info", "files"]);
    } finally {
      await session.close();
    }
  });

  it("lists the services its session advertises when not told them", async () => {
    const session = await openSession(advertising.address);
    try {
      const info = (await session.call("info", {})) as AgentInfo;
      assert.deepEqual(info.services, ["info", "telemetry"]);
      assert.deepEqual(session.peer?.services, ["info", "telemetry"]);
    } finally {
      await session.close();
    }
  });

  it("refuses parameters that are not an object with INVALID_OPTION", async () => {
    const session = await openSession(server.address);
    try {
      await assert.rejects(session.call("info", "everything"), (err: unknown) =>
        isGuestlinkError(err, "INVALID_OPTION"),
      );
    } finally {
      await session.close();
    }
  });

  it("reads available memory from /proc/meminfo on Linux", {
    skip: process.platform !== "linux" && "not Linux",
  }, async () => {
    const available = await availableMemoryBytes();
    assert.ok(available > 0 && available <= os.totalmem());
  });
});

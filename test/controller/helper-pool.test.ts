/** A pool of jsonrpc helpers, with real children (test/fixtures/helpers/rpc-helper.mjs). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { spawnHelpers } from "../../src/controller/helpers/pool.ts";
import { isGuestlinkError } from "../../src/errors.ts";

const RPC_HELPER = fileURLToPath(new URL("../fixtures/helpers/rpc-helper.mjs", import.meta.url));
const options = { command: process.execPath, args: [RPC_HELPER], protocol: "jsonrpc" } as const;

describe("a pool of helpers", () => {
  it("sends each request to the helper with the fewest outstanding: a busy one is passed over", async () => {
    const pool = spawnHelpers(3, options);
    try {
      await pool.ready();
      const pids = pool.helpers.map((h) => h.pid);
      // Three at once spread over the three.
      const held = [pool.request("hold"), pool.request("hold")];
      assert.deepEqual(
        pool.helpers.map((h) => h.outstanding),
        [1, 1, 0],
      );
      // With two busy, everything else goes to the third, one after another.
      const answered = [];
      for (let i = 0; i < 10; i++) answered.push(await pool.request("pid"));
      assert.deepEqual(new Set(answered), new Set([pids[2]]));
      // Ten at once: the free one takes the first, then they spread by what is outstanding.
      const burst = await Promise.all(Array.from({ length: 10 }, () => pool.request("pid")));
      assert.deepEqual(new Set(burst), new Set(pids));
      await Promise.all(pool.helpers.slice(0, 2).map((h) => h.request("release")));
      assert.deepEqual(await Promise.all(held), ["released", "released"]);
      assert.equal(pool.outstanding, 0);
    } finally {
      await pool.stop();
    }
  });

  it("goes on with the others while one is down, and fails HELPER_FAILED when all gave up", async () => {
    const pool = spawnHelpers(2, { ...options, restart: false });
    try {
      await pool.ready();
      const [a, b] = pool.helpers;
      assert.ok(a && b);
      await assert.rejects(a.request("exit-mid-answer", { code: 2 }), (e: unknown) =>
        isGuestlinkError(e, "HELPER_EXITED"),
      );
      while (a.state !== "gave-up") await new Promise((r) => setTimeout(r, 5));
      for (let i = 0; i < 4; i++) assert.equal(await pool.request("pid"), b.pid);
      await assert.rejects(b.request("exit-mid-answer", { code: 2 }));
      while (b.state !== "gave-up") await new Promise((r) => setTimeout(r, 5));
      await assert.rejects(pool.request("pid"), (e: unknown) =>
        isGuestlinkError(e, "HELPER_FAILED"),
      );
      // One restarted by hand serves again.
      await b.restart();
      assert.equal(await pool.request("sum", { a: 2, b: 2 }), 4);
    } finally {
      await pool.stop();
    }
  });

  it("a request made while every helper is being restarted waits for the first one back", async () => {
    const pool = spawnHelpers(1, {
      ...options,
      restart: { backoff: { baseMs: 150, ceilingMs: 150 } },
    });
    try {
      await pool.ready();
      const [only] = pool.helpers;
      const before = only?.pid as number;
      const restarting = new Promise<void>((resolve) =>
        pool.onEvent((e) => {
          if (e.type === "restarting") resolve();
        }),
      );
      process.kill(before, "SIGKILL");
      await restarting;
      assert.equal(only?.isReady, false);
      const pid = await pool.request("pid");
      assert.notEqual(pid, before);
      assert.equal(pid, only?.pid);
    } finally {
      await pool.stop();
    }
  });

  it("refuses a size out of range and helpers that do not speak jsonrpc", () => {
    for (const size of [0, 1.5, 5000]) {
      assert.throws(
        () => spawnHelpers(size, options),
        (e: unknown) => isGuestlinkError(e, "INVALID_OPTION"),
      );
    }
    assert.throws(
      () => spawnHelpers(2, { command: "cat" }),
      (e: unknown) => isGuestlinkError(e, "INVALID_OPTION") && /protocol "jsonrpc"/.test(e.message),
    );
  });
});

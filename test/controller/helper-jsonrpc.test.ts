/** Helper processes over the `jsonrpc` protocol, with a real child (test/fixtures/helpers). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  type Helper,
  type HelperEvent,
  type HelperOptions,
  spawnHelper,
} from "../../src/controller/helpers/helper.ts";
import { isGuestlinkError } from "../../src/errors.ts";

const RPC_HELPER = fileURLToPath(new URL("../fixtures/helpers/rpc-helper.mjs", import.meta.url));

function rpcHelper(options: Partial<HelperOptions> = {}): {
  helper: Helper;
  events: HelperEvent[];
} {
  const helper = spawnHelper({
    command: process.execPath,
    args: [RPC_HELPER],
    protocol: "jsonrpc",
    ...options,
  });
  const events: HelperEvent[] = [];
  helper.onEvent((e) => events.push(e));
  return { helper, events };
}

/** Resolves with the first event of `type` from now on. */
function nextEvent<T extends HelperEvent["type"]>(
  helper: Helper,
  type: T,
): Promise<Extract<HelperEvent, { type: T }>> {
  return new Promise((resolve) => {
    const off = helper.onEvent((e) => {
      if (e.type === type) {
        off();
        resolve(e as Extract<HelperEvent, { type: T }>);
      }
    });
  });
}

describe("a helper process (jsonrpc)", () => {
  it("answers requests, 64 in flight finishing out of order each matched to its own", async () => {
    const { helper } = rpcHelper();
    try {
      assert.equal(await helper.request("sum", { a: 1, b: 2 }), 3);
      const asked = Array.from({ length: 64 }, (_, i) => ({ ms: (i * 7919) % 23, value: `v${i}` }));
      const answers = await Promise.all(asked.map((p) => helper.request("sleep", p)));
      assert.deepEqual(
        answers,
        asked.map((p) => p.value),
      );
      assert.equal(helper.outstanding, 0);
    } finally {
      await helper.stop();
    }
  });

  it("reports a stray print as an event, and the answers around it are not disturbed", async () => {
    const { helper, events } = rpcHelper();
    try {
      const [a, b, c] = await Promise.all([
        helper.request("echo", { n: 1 }),
        helper.request("print", { text: "debug: hello {not json" }),
        helper.request("echo", { n: 3 }),
      ]);
      assert.deepEqual([a, b, c], [{ n: 1 }, "printed", { n: 3 }]);
      assert.deepEqual(
        events.filter((e) => e.type === "stray"),
        [{ type: "stray", line: "debug: hello {not json", reason: "not JSON" }],
      );
    } finally {
      await helper.stop();
    }
  });

  it("rejects with the helper's error (REMOTE_ERROR, its code and data), and with DEADLINE_EXCEEDED in time", async () => {
    const { helper, events } = rpcHelper();
    try {
      await assert.rejects(
        helper.request("fail"),
        (err: unknown) =>
          isGuestlinkError(err, "REMOTE_ERROR") &&
          (err as { remoteCode?: string }).remoteCode === "42" &&
          /the helper's fail failed: nope/.test(err.message) &&
          (err.details as { data: { why: string } }).data.why === "asked to",
      );
      await assert.rejects(
        helper.request("no-such-method"),
        (err: unknown) =>
          isGuestlinkError(err, "REMOTE_ERROR") &&
          (err as { remoteCode?: string }).remoteCode === "-32601",
      );
      const late = nextEvent(helper, "stray");
      await assert.rejects(
        helper.request("sleep", { ms: 300 }, { deadline: performance.now() + 20 }),
        (err: unknown) => isGuestlinkError(err, "DEADLINE_EXCEEDED") && /sleep/.test(err.message),
      );
      assert.equal(helper.outstanding, 0);
      // Its answer, when it comes, belongs to no request any more.
      assert.equal((await late).reason, "an answer to no request waiting for one");
      assert.equal(events.filter((e) => e.type === "stray").length, 1);
    } finally {
      await helper.stop();
    }
  });

  it("serves the helper's requests and notifications; one without a handler is an event, a request without one an error", async () => {
    const { helper } = rpcHelper();
    try {
      helper.handle("add", (params) => {
        const { a, b } = params as { a: number; b: number };
        return a + b;
      });
      helper.handle("slow-double", async (params) => {
        await new Promise((r) => setTimeout(r, 5));
        return (params as number) * 2;
      });
      assert.equal(await helper.request("ask-host", { method: "add", params: { a: 2, b: 5 } }), 7);
      assert.equal(await helper.request("ask-host", { method: "slow-double", params: 21 }), 42);
      await assert.rejects(
        helper.request("ask-host", { method: "nobody" }),
        (err: unknown) =>
          isGuestlinkError(err, "REMOTE_ERROR") &&
          (err as { remoteCode?: string }).remoteCode === "-32601" &&
          /no handler for nobody/.test(err.message),
      );
      const notified = nextEvent(helper, "notification");
      await helper.request("notify-host", { method: "progress", params: { done: 3 } });
      assert.deepEqual(await notified, {
        type: "notification",
        method: "progress",
        params: { done: 3 },
      });
      const seen: unknown[] = [];
      helper.handle("tick", (params) => {
        seen.push(params);
      });
      await helper.request("notify-host", { method: "tick", params: [1] });
      assert.deepEqual(seen, [[1]]);
      // And our notification reaches it (it says so on stderr).
      const said = nextEvent(helper, "stderr");
      await helper.notify("poke", { x: 1 });
      assert.equal((await said).line, 'notified poke {"x":1}');
    } finally {
      await helper.stop();
    }
  });

  it("a helper that exits mid-answer: the pending requests fail HELPER_EXITED with its code and stderr, then it serves again", async () => {
    const { helper, events } = rpcHelper({ restart: { backoff: { baseMs: 1, ceilingMs: 5 } } });
    try {
      const firstPid = await helper.request("pid");
      const waiting = helper.request("sleep", { ms: 10_000 });
      const dying = helper.request("exit-mid-answer", { code: 7 });
      for (const p of [waiting, dying]) {
        await assert.rejects(p, (err: unknown) => {
          assert.ok(isGuestlinkError(err, "HELPER_EXITED"), String(err));
          assert.equal(err.details?.code, 7);
          assert.ok((err.details as { stderrTail: string[] }).stderrTail.includes("about to die"));
          assert.match(
            err.message,
            /exited \(exit code 7\) before it answered; its last stderr: .*about to die/,
          );
          return true;
        });
      }
      const exited = events.find((e) => e.type === "exited");
      assert.equal((exited as { code: number }).code, 7);
      // The half-written answer is cut off by the exit: reported, never taken as an answer.
      assert.ok(
        events.some((e) => e.type === "stray" && e.line === '{"jsonrpc":"2.0","id":'),
        JSON.stringify(events.filter((e) => e.type === "stray")),
      );
      await helper.ready();
      const secondPid = await helper.request("pid");
      assert.notEqual(secondPid, firstPid);
    } finally {
      await helper.stop();
    }
  });

  it("after giving up every request fails HELPER_FAILED until restart() by hand", async () => {
    const { helper } = rpcHelper({ restart: false });
    try {
      await assert.rejects(helper.request("exit-mid-answer", { code: 1 }), /HELPER_EXITED|exited/);
      while (helper.state !== "gave-up") await nextEvent(helper, "gave-up");
      await assert.rejects(helper.request("sum", { a: 1, b: 1 }), (err: unknown) =>
        isGuestlinkError(err, "HELPER_FAILED"),
      );
      await assert.rejects(helper.ready(), (err: unknown) =>
        isGuestlinkError(err, "HELPER_FAILED"),
      );
      await helper.restart();
      await helper.ready();
      assert.equal(await helper.request("sum", { a: 1, b: 1 }), 2);
    } finally {
      await helper.stop();
    }
  });

  it("refuses what belongs to another protocol", async () => {
    const { helper } = rpcHelper();
    try {
      assert.throws(
        () => helper.send("x"),
        /send\(\) is for helpers with protocol "lines"; this one speaks "jsonrpc"/,
      );
      assert.throws(() => helper.lines(), /lines\(\) is for helpers with protocol "lines"/);
      assert.throws(() => helper.session, /session is for helpers with protocol "guestlink"/);
    } finally {
      await helper.stop();
    }
  });
});

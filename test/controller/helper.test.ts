/** Helper processes over the `lines` protocol, with real child processes. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type HelperEvent, spawnHelper } from "../../src/controller/helpers/helper.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { processesMatching } from "../helpers/processes.ts";

async function collect(lines: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const line of lines) out.push(line);
  return out;
}

describe("a helper process (lines)", () => {
  it("delivers every line once, in order, the last one without a newline too, before it reports the exit", async () => {
    const order: string[] = [];
    const helper = spawnHelper({
      command: "sh",
      args: [
        "-c",
        `printf 'one\\ntwo\\nthr'; printf 'ee\\n%s\\nfour\\nfive' "$(head -c 3000 /dev/zero | tr '\\0' x)"; echo oops >&2; exit 4`,
      ],
      restart: false,
      maxLineBytes: 1000,
    });
    const events: HelperEvent[] = [];
    helper.onEvent((e) => {
      events.push(e);
      order.push(`event:${e.type}`);
    });
    const lines: string[] = [];
    for await (const line of helper.lines()) {
      lines.push(line);
      order.push(`line:${line}`);
    }
    assert.deepEqual(lines, ["one", "two", "three", "four", "five"]);
    assert.deepEqual(
      events.find((e) => e.type === "long-line"),
      { type: "long-line", stream: "stdout", bytes: 3000 },
    );
    const exited = events.find((e) => e.type === "exited");
    assert.deepEqual(exited, { type: "exited", code: 4, signal: null, stderrTail: ["oops"] });
    assert.ok(order.indexOf("line:five") < order.indexOf("event:exited"), order.join(" "));
    assert.deepEqual(events.at(-1), { type: "gave-up", reason: "restart is off" });
  });

  it("a reader slower than the helper (its stdout paused and resumed) still gets every line once, in order", async () => {
    const helper = spawnHelper({ command: "seq", args: ["1", "200000"], restart: false });
    let expected = 1;
    for await (const line of helper.lines()) {
      assert.equal(line, String(expected));
      expected++;
      if (expected % 5000 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(expected, 200_001);
  });

  it("next() called before the last one answered: answered in order; return() ends a waiting one", async () => {
    const helper = spawnHelper({
      command: "sh",
      args: ["-c", "echo a; sleep 0.1; echo b; echo c; sleep 1000"],
      restart: false,
    });
    const lines = helper.lines();
    const [a, b, c] = await Promise.all([lines.next(), lines.next(), lines.next()]);
    assert.deepEqual([a.value, b.value, c.value], ["a", "b", "c"]);
    const waiting = lines.next();
    assert.deepEqual(await lines.return(undefined), { value: undefined, done: true });
    assert.deepEqual(await waiting, { value: undefined, done: true });
    // The reader is gone: another may begin.
    const again = helper.lines();
    await again.return(undefined);
    await helper.stop();
  });

  it("send waits for the helper to read, and everything sent comes back in order (cat)", async () => {
    const helper = spawnHelper({ command: "cat", restart: false });
    const sent = Array.from({ length: 2000 }, (_, i) => `line ${i} ${"y".repeat(i % 300)}`);
    const reading = (async () => {
      const got: string[] = [];
      for await (const line of helper.lines()) {
        got.push(line);
        if (got.length === sent.length) break;
      }
      return got;
    })();
    for (const line of sent) await helper.send(line);
    assert.deepEqual(await reading, sent);
    await helper.stop();
    assert.equal(helper.state, "stopped");
  });

  it("restarts with backoff while the budget allows, then gives up: sends fail HELPER_FAILED", async () => {
    const helper = spawnHelper({
      command: "sh",
      args: ["-c", "echo up; echo failing >&2; exit 3"],
      restart: { maxRestarts: 2, windowMs: 60_000, backoff: { baseMs: 1, ceilingMs: 5 } },
    });
    const events: HelperEvent[] = [];
    helper.onEvent((e) => events.push(e));
    assert.deepEqual(await collect(helper.lines()), ["up", "up", "up"]);
    assert.deepEqual(
      events.map((e) => e.type).filter((t) => t !== "stderr"),
      [
        ...["ready", "exited", "restarting", "spawned"],
        ...["ready", "exited", "restarting", "spawned"],
        ...["ready", "exited", "gave-up"],
      ],
    );
    assert.match(
      (events.at(-1) as { reason: string }).reason,
      /exited 3 times within 60000 ms \(restart\.maxRestarts is 2\)/,
    );
    await assert.rejects(
      helper.send("x"),
      (err: unknown) => isGuestlinkError(err, "HELPER_FAILED") && /failing/.test(err.message),
    );
  });

  it("stop() leaves nothing of the helper's group, even when it ignores SIGTERM and started others", async () => {
    const marker = `sleep 88${process.pid}`;
    const helper = spawnHelper({
      command: "sh",
      args: ["-c", `trap '' TERM; ${marker} & echo ready; while :; do ${marker}; done`],
      stop: { graceMs: 200 },
    });
    const lines = helper.lines()[Symbol.asyncIterator]();
    assert.deepEqual(await lines.next(), { value: "ready", done: false });
    assert.ok(processesMatching(marker).length >= 1);
    await helper.stop();
    assert.deepEqual(processesMatching(marker), []);
    assert.deepEqual(await lines.next(), { value: undefined, done: true });
  });

  it("a helper that never reads: send waits, then HELPER_QUEUE_FULL, and the event loop keeps its beat", async () => {
    const helper = spawnHelper({
      command: "sleep",
      args: ["1000"],
      restart: false,
      maxQueuedBytes: 256 * 1024,
    });
    let beats = 0;
    const beat = setInterval(() => beats++, 1);
    const chunk = "z".repeat(64 * 1024);
    const pending: Promise<void>[] = [];
    let refused: unknown;
    for (let i = 0; i < 100 && refused === undefined; i++) {
      const p = helper.send(chunk);
      p.catch(() => {});
      pending.push(p);
      await new Promise((r) => setTimeout(r, 2));
      try {
        await Promise.race([p, new Promise((r) => setImmediate(r))]);
      } catch (err) {
        refused = err;
      }
    }
    clearInterval(beat);
    assert.ok(isGuestlinkError(refused, "HELPER_QUEUE_FULL"), String(refused));
    assert.ok(beats > 0, "timers ran while sends waited");
    await helper.stop();
    await Promise.allSettled(pending);
  });

  it("refuses what it cannot run, before spawning anything", () => {
    assert.throws(
      () => spawnHelper({ command: "" }),
      (e: unknown) => isGuestlinkError(e, "INVALID_OPTION"),
    );
    assert.throws(
      () => spawnHelper({ command: "cat", protocol: "smoke" as "lines" }),
      (e: unknown) =>
        isGuestlinkError(e, "INVALID_OPTION") &&
        /protocol must be one of lines, jsonrpc, guestlink, got "smoke"/.test(e.message),
    );
    for (const [name, options] of [
      ["maxLineBytes", { maxLineBytes: 0 }],
      ["maxQueuedBytes", { maxQueuedBytes: 1.5 }],
      ["stop.graceMs", { stop: { graceMs: -1 } }],
      ["restart.maxRestarts", { restart: { maxRestarts: Number.NaN } }],
      ["restart.windowMs", { restart: { windowMs: 0 } }],
    ] as const) {
      assert.throws(
        () => spawnHelper({ command: "cat", ...options }),
        (e: unknown) => isGuestlinkError(e, "INVALID_OPTION") && e.message.includes(name),
        name,
      );
    }
  });
});

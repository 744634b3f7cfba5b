/**
 * Exec over a WebSocket at /v1/agents/ID/exec (Kubernetes' channel framing), through a daemon
 * holding a real agent process: streams demultiplexed, stdin closed with [255, 0], the exit code
 * in the status message, a client that goes away getting its command killed (seen in /proc),
 * backpressure reaching the command, and requests refused before the upgrade as JSON.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { WebSocket } from "ws";
import { spawnAddon } from "../../src/agent/spawn-native.ts";
import { processesMatching } from "../helpers/processes.ts";
import { eventually, type HeldFixture, startHeld } from "./held.ts";

const V5 = "v5.channel.k8s.io";
const V4 = "v4.channel.k8s.io";

interface Outcome {
  stdout: string;
  stderr: string;
  status: unknown;
  statusMessages: number;
  closeCode: number;
  protocol: string;
}

/** Query string of an exec: `command=` for each argument, then `extra`. */
function query(argv: string[], extra: Record<string, string> = {}): string {
  const q = new URLSearchParams();
  for (const a of argv) q.append("command", a);
  for (const [k, v] of Object.entries(extra)) q.append(k, v);
  return q.toString();
}

describe("exec over WebSocket", () => {
  let f: HeldFixture;
  const url = (q: string, id = "vm-1") => `ws://${f.http}/v1/agents/${id}/exec?${q}`;

  before(async () => {
    f = await startHeld("exec-ws");
  });
  after(async () => {
    await f?.stop();
  });

  /** Runs an exec to its end: sends `input` on stdin (then [255, 0] unless `closeStdin` is false). */
  function run(
    q: string,
    options: { protocol?: string; input?: string[]; closeStdin?: boolean } = {},
  ): Promise<Outcome> {
    const ws = new WebSocket(url(q), options.protocol ?? V5);
    const out: Outcome = {
      stdout: "",
      stderr: "",
      status: undefined,
      statusMessages: 0,
      closeCode: 0,
      protocol: "",
    };
    ws.on("open", () => {
      out.protocol = ws.protocol;
      for (const text of options.input ?? [])
        ws.send(Buffer.concat([Buffer.of(0), Buffer.from(text)]));
      if (options.closeStdin !== false) ws.send(Buffer.of(255, 0));
    });
    ws.on("message", (data: Buffer) => {
      const body = data.subarray(1);
      if (data[0] === 1) out.stdout += body.toString();
      else if (data[0] === 2) out.stderr += body.toString();
      else if (data[0] === 3) {
        out.statusMessages++;
        out.status = JSON.parse(body.toString());
      } else throw new Error(`a message on stream ${data[0]}`);
    });
    return new Promise((resolve, reject) => {
      ws.on("error", reject);
      ws.on("close", (code) => {
        out.closeCode = code;
        resolve(out);
      });
    });
  }

  /** An upgrade the daemon refuses: its status and JSON body. */
  function refused(
    target: string,
    protocols?: string | string[],
  ): Promise<{ status: number; body: { code: string; message: string } }> {
    const ws = new WebSocket(target, protocols);
    return new Promise((resolve, reject) => {
      ws.on("open", () => reject(new Error("the upgrade was accepted")));
      ws.on("error", () => {});
      ws.on("unexpected-response", (_req, res: IncomingMessage) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c: string) => {
          text += c;
        });
        res.on("end", () => resolve({ status: res.statusCode as number, body: JSON.parse(text) }));
      });
    });
  }

  it("demultiplexes stdout and stderr and reports success as a Kubernetes Status", async () => {
    const r = await run(
      query(["sh", "-c", 'echo out1; echo err1 >&2; echo out2; echo "$GREETING" >&2; pwd'], {
        env: "GREETING=hi there",
        cwd: "/",
      }),
    );
    assert.equal(r.protocol, V5);
    assert.equal(r.stdout, "out1\nout2\n/\n");
    assert.equal(r.stderr, "err1\nhi there\n");
    assert.deepEqual(r.status, { metadata: {}, status: "Success" });
    assert.equal(r.statusMessages, 1);
    assert.equal(r.closeCode, 1000);
  });

  it("reports a non-zero exit code the way kubectl reads it", async () => {
    const r = await run(query(["sh", "-c", "echo bye >&2; exit 3"]));
    assert.equal(r.stderr, "bye\n");
    assert.deepEqual(r.status, {
      metadata: {},
      status: "Failure",
      message: "command terminated with non-zero exit code: 3",
      reason: "NonZeroExitCode",
      details: { causes: [{ reason: "ExitCode", message: "3" }] },
    });
  });

  it("feeds stdin to the command and ends it on [255, 0]", async () => {
    const r = await run(query(["cat"]), { input: ["hello ", "over ", "the socket\n"] });
    assert.equal(r.stdout, "hello over the socket\n");
    assert.deepEqual(r.status, { metadata: {}, status: "Success" });
  });

  it("speaks v4.channel.k8s.io too, and stdin=false gives the command an empty stdin", async () => {
    const r = await run(query(["sh", "-c", "cat; echo done"], { stdin: "false" }), {
      protocol: V4,
      closeStdin: false,
    });
    assert.equal(r.protocol, V4);
    assert.equal(r.stdout, "done\n");
  });

  it("kills a command past timeout= with status 124", async () => {
    const r = await run(query(["sleep", "30"], { timeout: "0.5" }));
    const status = r.status as { reason: string; details: { causes: { message: string }[] } };
    assert.equal(status.reason, "NonZeroExitCode");
    assert.equal(status.details.causes[0]?.message, "124");
  });

  it("kills the command in the agent when the client goes away", async () => {
    const marker = `1234.${process.pid}1`;
    const ws = new WebSocket(url(query(["sleep", marker])), V5);
    await new Promise((resolve, reject) => ws.on("open", resolve).on("error", reject));
    await eventually(
      () => processesMatching(`sleep ${marker}`).length === 1,
      10_000,
      "sleep started",
    );
    ws.terminate();
    await eventually(
      () => processesMatching(`sleep ${marker}`).length === 0,
      10_000,
      "sleep killed",
    );
  });

  it("tty=true gives the command a terminal sized by the client's resize messages (stream 4)", {
    skip:
      "reason" in spawnAddon() &&
      process.env.GUESTLINK_TOOLS_REQUIRED !== "1" &&
      "needs the spawn addon (a terminal)",
  }, async () => {
    const script = "read go; stty size; [ -t 0 ] && echo on-a-terminal; exit 6";
    const ws = new WebSocket(url(query(["sh", "-c", script], { tty: "true" })), V5);
    let stdout = "";
    let status: { details?: { causes: { message: string }[] } } | undefined;
    let stderrMessages = 0;
    ws.on("message", (data: Buffer) => {
      if (data[0] === 1) stdout += data.subarray(1).toString("utf8");
      else if (data[0] === 2 && data.length > 1) stderrMessages++;
      else if (data[0] === 3) status = JSON.parse(data.subarray(1).toString("utf8"));
    });
    const closed = new Promise((resolve) => ws.on("close", resolve));
    await new Promise((resolve, reject) => ws.on("open", resolve).on("error", reject));
    // As kubectl does: the terminal's size first, then what is typed.
    ws.send(Buffer.concat([Buffer.of(4), Buffer.from(JSON.stringify({ Width: 100, Height: 30 }))]));
    ws.send(Buffer.concat([Buffer.of(0), Buffer.from("go\n")]));
    await closed;
    assert.match(stdout, /^30 100\r?$/m, stdout);
    assert.match(stdout, /^on-a-terminal\r?$/m, stdout);
    assert.equal(stderrMessages, 0, "a terminal has no stderr of its own");
    assert.equal(status?.details?.causes[0]?.message, "6");
  });

  it("refuses tty=true with stderr=true, as the kubelet does", async () => {
    const r = await refused(url(query(["true"], { tty: "true", stderr: "true" })), V5);
    assert.equal(r.status, 400);
    assert.equal(r.body.code, "INVALID_OPTION");
    assert.match(r.body.message, /tty=true joins stderr to stdout/);
  });

  it("with keep=, lets the command run on after the client left", async () => {
    // The command waits for the end of its stdin, which the daemon gives it when the client goes:
    // the mark it then leaves shows the daemon saw the client go, and the command ran on.
    const marker = `1234.${process.pid}2`;
    const mark = join(f.dir, "ran-on");
    const ws = new WebSocket(
      url(
        query(["sh", "-c", `cat >/dev/null; touch ${mark}; exec sleep ${marker}`], {
          stdin: "1",
          keep: "3600",
        }),
      ),
      V5,
    );
    await new Promise((resolve, reject) => ws.on("open", resolve).on("error", reject));
    ws.terminate();
    await eventually(() => existsSync(mark), 10_000, "the command ran on after its client left");
    assert.equal(processesMatching(`sleep ${marker}`).length, 1, "and is running still");
    // Gone only with the daemon (it stops its commands when it stops): cleaned up by pkill here.
    for (const pid of processesMatching(`sleep ${marker}`)) process.kill(pid);
  });

  it("with keep=, kills the command once keep= has passed", async () => {
    const marker = `1234.${process.pid}3`;
    const ws = new WebSocket(url(query(["sleep", marker], { keep: "1" })), V5);
    await new Promise((resolve, reject) => ws.on("open", resolve).on("error", reject));
    await eventually(
      () => processesMatching(`sleep ${marker}`).length === 1,
      10_000,
      "sleep started",
    );
    ws.terminate();
    await eventually(
      () => processesMatching(`sleep ${marker}`).length === 0,
      10_000,
      "sleep killed",
    );
  });

  it("stops the command's output while a client does not read (bounded buffering)", async (t) => {
    // The command counts the 64 KiB blocks it has written; a client that reads nothing for a
    // while must hold it at a few megabytes (the daemon's bound, socket and session windows).
    const count = join(f.dir, "blocks");
    const ws = new WebSocket(
      url(
        query([
          "sh",
          "-c",
          `i=0; while :; do head -c 65536 /dev/zero || exit; i=$((i+1)); echo $i > ${count}; done`,
        ]),
      ),
      V5,
    );
    let received = 0;
    ws.on("message", (data: Buffer) => {
      received += data.length - 1;
    });
    await new Promise((resolve, reject) => ws.on("open", resolve).on("error", reject));
    await eventually(() => received > 0, 10_000, "output arrives");
    ws.pause();
    // Buffers fill (the daemon's bound, the sockets' and the session's windows), then the
    // command blocks in write(): the count stops growing.
    let blocks = 0;
    const blocksNow = async () => {
      // The shell truncates the file before writing it: an empty read is not a count.
      blocks = Math.max(blocks, Number(await readFile(count, "utf8")) || 0);
      return blocks;
    };
    let stopped = false;
    for (let tries = 0; tries < 15 && !stopped; tries++) {
      const before = await blocksNow();
      await new Promise((r) => setTimeout(r, 1_000));
      stopped = (await blocksNow()) - before <= 1;
    }
    assert.ok(stopped, `the command kept writing while the client read nothing (${blocks} blocks)`);
    assert.ok(blocks * 65536 < 64 * 1024 * 1024, `${blocks} blocks written while not read`);
    t.diagnostic(`the command stopped after ${blocks} blocks of 64 KiB`);
    ws.resume();
    const more = received;
    await eventually(() => received > more + 4 * 1024 * 1024, 20_000, "output flows again");
    ws.terminate();
  });

  it("refuses what it cannot run before the upgrade, as JSON", async () => {
    const noCommand = await refused(url(""), V5);
    assert.equal(noCommand.status, 400);
    assert.equal(noCommand.body.code, "INVALID_OPTION");
    assert.match(noCommand.body.message, /no command/);

    const unknown = await refused(url(query(["true"]), "vm-9"), V5);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.code, "AGENT_NOT_FOUND");

    const down = await refused(url(query(["true"]), "down-1"), V5);
    assert.equal(down.status, 503);
    assert.equal(down.body.code, "AGENT_UNAVAILABLE");

    const protocol = await refused(url(query(["true"])), "channel.k8s.io");
    assert.equal(protocol.status, 400);
    assert.equal(protocol.body.code, "INVALID_OPTION");
    assert.match(protocol.body.message, /v5\.channel\.k8s\.io.*asked for channel\.k8s\.io/);

    const none = await refused(url(query(["true"])));
    assert.match(none.body.message, /asked for none/);

    const badKeep = await refused(url(query(["true"], { keep: "soon" })), V5);
    assert.equal(badKeep.status, 400);
    assert.match(badKeep.body.message, /keep=/);

    const plain = await fetch(`http://${f.http}/v1/agents/vm-1/exec?command=true`);
    assert.equal(plain.status, 400);
    assert.match(((await plain.json()) as { message: string }).message, /WebSocket endpoint/);
  });
});

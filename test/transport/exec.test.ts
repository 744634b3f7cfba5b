import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { connectExec } from "../../src/transport/exec.ts";
import { connect, formatAddress, listen } from "../../src/transport/index.ts";
import { requires } from "../helpers/requires.ts";
import { concat, pattern, readAll, rejectsWith, sendAll, sha256 } from "../helpers/transport.ts";

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const STDIO_ECHO = fileURLToPath(new URL("../helpers/stdio-echo.ts", import.meta.url));

/** True while a process with this pid exists (it is reaped once Node saw it exit). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits (bounded) until `pid` is gone or a zombie; fails if it is still running. */
async function gone(pid: number): Promise<void> {
  for (let waited = 0; waited < 30_000; waited += 20) {
    if (!alive(pid) || zombie(pid)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`process ${pid} is still running`);
}

function zombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

describe("exec transport", () => {
  it("echoes bytes byte-exact through exec:cat, and close lets cat exit", async () => {
    const transport = await connectExec(["cat"]);
    const data = pattern(3 * 1024 * 1024, 3);
    const [received] = await Promise.all([
      readAll(transport),
      sendAll(transport, data, 40_000, 3).then(() => transport.close()),
    ]);
    assert.equal(sha256(received), sha256(data));
    assert.deepEqual(await transport.exited, { code: 0, signal: null });
    assert.equal(alive(transport.pid), false);
  });

  it("connects through the address syntax", async () => {
    const transport = await connect("exec:sh -c 'tr a-z A-Z'");
    transport.send([text("shout")]);
    const closed = transport.close();
    assert.equal(str(await readAll(transport)), "SHOUT");
    await closed;
  });

  it("fails with CONNECT_FAILED when the command does not exist", async () => {
    const err = await rejectsWith(
      connect("exec:guestlink-no-such-command --stdio"),
      "CONNECT_FAILED",
      /cannot run "guestlink-no-such-command" .*\(ENOENT\): no such program; is it installed and on PATH\?/,
    );
    assert.equal((err.cause as { code?: string }).code, "ENOENT");
  });

  it("fails with CONNECT_FAILED when the command is not executable", async () => {
    await rejectsWith(connect(`exec:${STDIO_ECHO}`), "CONNECT_FAILED", /\(EACCES\).*executable/);
  });

  it("delivers what a failing child wrote, then throws TRANSPORT_FAILED naming its exit code", async () => {
    const transport = await connect("exec:sh -c 'printf partial; exit 3'");
    const chunks: Uint8Array[] = [];
    const err = await rejectsWith(
      (async () => {
        for await (const chunk of transport) chunks.push(chunk);
      })(),
      "TRANSPORT_FAILED",
      /exited with code 3/,
    );
    assert.equal(str(concat(chunks)), "partial");
    assert.equal((err as { details?: { code?: number } }).details?.code, 3);
  });

  it("throws TRANSPORT_FAILED naming the signal when the child is killed", async () => {
    const transport = await connect("exec:sh -c 'kill -KILL $$'");
    await rejectsWith(readAll(transport), "TRANSPORT_FAILED", /killed by SIGKILL/);
  });

  it("ends the iteration cleanly when the child exits with code 0", async () => {
    const transport = await connect("exec:printf done");
    assert.equal(str(await readAll(transport)), "done");
  });

  it("ends the iteration after the child exits even if a process it left behind holds stdout", async () => {
    const transport = await connectExec(["sh", "-c", "sleep 1000 & echo $!"], {
      outputGraceMs: 20,
    });
    const orphan = Number(str(await readAll(transport)).trim());
    assert.ok(alive(orphan), "the background process should still hold stdout");
    process.kill(orphan, "SIGKILL");
    assert.deepEqual(await transport.exited, { code: 0, signal: null });
  });

  it("never cuts off output held back by a reader that is slow after the child exited", {
    // python3 gives the child's stdout a large socket buffer.
    skip: requires("python3"),
  }, async () => {
    // The child writes more than the transport queues before pausing (256 KiB) plus Node's own
    // buffer, and must still be able to exit before we read: its stdout (a socketpair) gets a
    // send buffer big enough for the rest. With the kernel's default buffer, whose capacity
    // varies, a plain `head -c 400K` could not always exit and the test hung in CI.
    const size = 640 * 1024;
    const script = [
      "import socket, sys",
      "out = socket.socket(fileno=1)",
      // SO_SNDBUFFORCE (root) is not capped by net.core.wmem_max; SO_SNDBUF otherwise.
      "try: out.setsockopt(socket.SOL_SOCKET, 32, 4 << 20)",
      "except OSError: out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)",
      `out.sendall(bytes(${size}))`,
      "out.detach()",
    ].join("\n");
    const transport = await connectExec(["python3", "-c", script], { outputGraceMs: 0 });
    assert.deepEqual(await transport.exited, { code: 0, signal: null });
    let received = 0;
    for await (const chunk of transport) {
      received += chunk.length;
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(received, size);
  });

  it("rejects grace periods that are not milliseconds", async () => {
    await rejectsWith(connectExec(["cat"], { killGraceMs: -1 }), "INVALID_OPTION", /killGraceMs/);
  });

  it("terminates a child that ignores the end of its stdin with SIGTERM", async () => {
    const transport = await connectExec(["sleep", "1000"], { terminateGraceMs: 20 });
    const reading = readAll(transport);
    await transport.close();
    assert.deepEqual(await transport.exited, { code: null, signal: "SIGTERM" });
    assert.equal(alive(transport.pid), false);
    // We ended it ourselves, so its death is not reported as a failure.
    assert.equal((await reading).length, 0);
  });

  it("kills a child that ignores SIGTERM", async () => {
    const transport = await connectExec(["sh", "-c", "trap '' TERM; echo ready; exec sleep 1000"], {
      terminateGraceMs: 0,
      killGraceMs: 20,
    });
    // Only once the trap is set is SIGTERM sure to be ignored.
    const reader = transport[Symbol.asyncIterator]();
    assert.equal(str((await reader.next()).value), "ready\n");
    await transport.close();
    assert.deepEqual(await transport.exited, { code: null, signal: "SIGKILL" });
  });

  it("terminates the child at once on abort", async () => {
    const transport = await connectExec(["sleep", "1000"]);
    const reason = new Error("cancelled");
    transport.abort(reason);
    const err = await rejectsWith(readAll(transport), "TRANSPORT_CLOSED");
    assert.equal(err.cause, reason);
    assert.deepEqual(await transport.exited, { code: null, signal: "SIGTERM" });
  });

  for (const processGroup of [true, false]) {
    it(`abort and close stop what the child started too (${processGroup ? "its own process group, without a terminal" : "its descendants, as on a terminal"})`, async () => {
      for (const end of ["abort", "close"] as const) {
        // Two background sleeps and a child that ignores the end of its stdin: nothing says HELLO.
        const transport = await connectExec(
          ["sh", "-c", "sleep 1000 & echo $!; sleep 1000 & echo $!; wait"],
          {
            processGroup,
            terminateGraceMs: 0,
          },
        );
        const pids: number[] = [];
        const lines = (async () => {
          let text = "";
          for await (const chunk of transport) {
            text += str(chunk);
            pids.splice(0, pids.length, ...text.split("\n").filter(Boolean).map(Number));
          }
        })().catch(() => {});
        try {
          while (pids.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
          assert.ok(pids.every(alive));
          if (end === "abort") transport.abort();
          else await transport.close();
          await transport.exited;
          await lines;
          // Stopped: gone, or a zombie until init reaps it.
          for (const pid of pids) await gone(pid);
        } finally {
          for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
        }
      }
    });
  }

  it("talks to a child that uses the stdio transport", async () => {
    const transport = await connect(
      formatAddress({ kind: "exec", argv: [process.execPath, "--import", "tsx", STDIO_ECHO] }),
    );
    const data = pattern(2 * 1024 * 1024, 9);
    const [received] = await Promise.all([
      readAll(transport),
      sendAll(transport, data).then(() => transport.close()),
    ]);
    assert.equal(sha256(received), sha256(data));
  });

  it("cannot be listened on, and neither can stdio", async () => {
    await rejectsWith(listen("exec:cat"), "INVALID_ADDRESS", /cannot listen on exec:COMMAND/);
    await rejectsWith(listen("stdio"), "INVALID_ADDRESS", /cannot listen on stdio/);
  });
});

describe("addresses of other transports", () => {
  it("still rejects a malformed address of those kinds as INVALID_ADDRESS", async () => {
    await rejectsWith(connect("vsock:3"), "INVALID_ADDRESS", /vsock:CID:PORT/);
  });
});

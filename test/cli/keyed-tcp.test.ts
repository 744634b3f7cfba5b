/**
 * Keyed tcp: (docs/security.md) with real agent processes on loopback: the right key works, a
 * wrong or missing key fails with AUTH_FAILED in one line, an agent will not listen on a network
 * address without a key, keygen's file, and a session that resumes across a cut TLS connection.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { until } from "../helpers/until.ts";

let dir: string;
let keyFile: string;
let otherKeyFile: string;
let agent: AgentProcess;
let address: string;

/** The tcp: address the agent logged it listens on (port 0 resolved). */
function tcpAddress(a: AgentProcess): string {
  const m = /"addresses":\[[^\]]*"(tcp:[^"]+)"/.exec(a.log());
  assert.ok(m, `no tcp address in the agent's log: ${a.log()}`);
  return m[1] as string;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-keyed-"));
  keyFile = join(dir, "key");
  otherKeyFile = join(dir, "other-key");
  for (const f of [keyFile, otherKeyFile]) {
    const made = await runCli(["keygen", f]);
    assert.equal(made.code, 0, made.stderr);
  }
  agent = await startAgent(join(dir, "agent.sock"), {
    args: ["--listen", "tcp:127.0.0.1:0", "--key-file", keyFile],
  });
  address = tcpAddress(agent);
});

after(async () => {
  await agent?.kill();
  await rm(dir, { recursive: true, force: true });
});

describe("keyed tcp:", () => {
  it("exec works with the agent's key", async () => {
    const r = await runCli(["exec", "--key-file", keyFile, address, "--", "echo", "hello"]);
    assert.equal(r.stderr, "");
    assert.equal(r.stdout, "hello\n");
    assert.equal(r.code, 0);
  });

  it("a wrong key fails with AUTH_FAILED, exit 255, one line; the agent logs the peer", async () => {
    const r = await runCli(["exec", "--key-file", otherKeyFile, address, "--", "echo", "hello"]);
    assert.equal(r.code, 255);
    assert.equal(r.stdout, "");
    assert.match(
      r.stderr,
      /^guestlink: the agent at tcp:127\.0\.0\.1:\d+ refused our key .*--key-file.*\[AUTH_FAILED\]\n$/,
    );
    await until("the agent's log of the refusal", () =>
      /"code":"AUTH_FAILED".*refused tcp:127\.0\.0\.1:\d+/.test(agent.log()) ? true : undefined,
    );
  });

  it("no key fails with AUTH_FAILED at once, saying to give --key-file", async () => {
    const started = performance.now();
    const r = await runCli(["ping", "-c", "1", address]);
    assert.equal(r.code, 255);
    assert.match(
      r.stderr,
      /^guestlink: .*requires a key: connect with --key-file FILE.*\[AUTH_FAILED\]\n$/,
    );
    // Not retried until --connect-timeout: a missing key cannot heal by waiting.
    assert.ok(performance.now() - started < 15_000);
    assert.match(agent.log(), /the client has no key/);
  });

  it("a key for an agent without one fails with AUTH_FAILED", async () => {
    const plain = await startAgent(join(dir, "plain.sock"), {
      args: ["--listen", "tcp:127.0.0.1:0"],
    });
    try {
      const started = performance.now();
      const r = await runCli(["exec", "--key-file", keyFile, tcpAddress(plain), "--", "true"]);
      assert.equal(r.code, 255);
      assert.match(
        r.stderr,
        /^guestlink: the agent at tcp:127\.0\.0\.1:\d+ does not use a key .*drop --key-file.*\[AUTH_FAILED\]\n$/,
      );
      assert.ok(performance.now() - started < 15_000);
      assert.match(plain.log(), /the client has a key and this agent has none/);
    } finally {
      await plain.kill();
    }
  });

  it("the agent refuses 0.0.0.0 without a key, and listens with --insecure or a key", async () => {
    // If it wrongly listens it would run on: it is stopped after 20 s and the test fails.
    const child = startCli(["agent", "--listen", "tcp:0.0.0.0:0"]);
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const [code] = (await once(child, "close")) as [number | null];
    clearTimeout(timer);
    const r = { code, stderr };
    assert.equal(r.code, 255);
    assert.match(
      r.stderr,
      /^guestlink: refusing to listen on tcp:0\.0\.0\.0:0 without a key: .*--key-file FILE.*--insecure.*\[INVALID_OPTION\]\n$/,
    );
    for (const extra of [["--insecure"], ["--key-file", keyFile]]) {
      const a = await startAgent(join(dir, `any-${extra[0]?.slice(2)}.sock`), {
        args: ["--listen", "tcp:0.0.0.0:0", ...extra],
      });
      await a.kill();
    }
  });

  it("keygen writes a 0600 file of 64 hex digits and never overwrites one", async () => {
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
    const again = await runCli(["keygen", keyFile]);
    assert.equal(again.code, 255);
    assert.match(again.stderr, /^guestlink: .*already exists: a key is never overwritten.*\n$/);
    const out = await runCli(["keygen", "-"]);
    assert.equal(out.code, 0);
    assert.match(out.stdout, /^[0-9a-f]{64}\n$/);
  });

  it("a session resumes across a cut TLS connection: exec output complete, byte-exact", async () => {
    const target = Number(address.slice(address.lastIndexOf(":") + 1));
    const sockets = new Set<Socket>();
    let connections = 0;
    let fromAgent = 0;
    let cut = false;
    const proxy: Server = createServer((client) => {
      connections++;
      const upstream = createConnection(target, "127.0.0.1");
      sockets.add(client).add(upstream);
      client.pipe(upstream);
      upstream.on("data", (chunk: Buffer) => {
        fromAgent += chunk.length;
        client.write(chunk);
      });
      for (const s of [client, upstream]) s.on("error", () => {});
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const port = (proxy.address() as { port: number }).port;
    try {
      const lines = 200_000;
      const run = runCli([
        "exec",
        "--key-file",
        keyFile,
        `tcp:127.0.0.1:${port}`,
        "--",
        "sh",
        "-c",
        `seq 1 ${lines / 2}; sleep 1; seq ${lines / 2 + 1} ${lines}`,
      ]);
      // Mid-exec: once the first half went through, reset both sides of the connection.
      await until("the first half of the output", () => (fromAgent > 500_000 ? true : undefined));
      for (const s of sockets) s.resetAndDestroy();
      sockets.clear();
      cut = true;
      const r = await run;
      assert.equal(r.code, 0, r.stderr);
      let expected = "";
      for (let i = 1; i <= lines; i++) expected += `${i}\n`;
      assert.equal(r.stdout.length, expected.length);
      assert.ok(r.stdout === expected, "the output is not byte-exact");
      assert.ok(cut && connections >= 2, `dialled ${connections} times`);
      await until("the agent's log of the resume", () =>
        agent.log().includes("connection restored; session resumed") ? true : undefined,
      );
    } finally {
      for (const s of sockets) s.destroy();
      proxy.close();
    }
  });
});

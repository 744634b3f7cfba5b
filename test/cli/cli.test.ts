/**
 * The CLI as a user drives it: spawned, with its stdout, stderr and exit status checked. The
 * agent runs in this process on a Unix socket in a temporary folder.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createConnection, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Agent } from "../../src/agent/agent.ts";
import { type RunningAgent, runAgent } from "../../src/agent/run.ts";
import { startAgent } from "../helpers/agent-process.ts";
import { runCli, startCli } from "../helpers/cli.ts";

const silent = { info() {}, warn() {} };

describe("the guestlink command", () => {
  let dir: string;
  let agent: RunningAgent;
  let limited: RunningAgent;
  let addr: string;
  let limitedAddr: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-cli-"));
    addr = `unix:${join(dir, "agent.sock")}`;
    limitedAddr = `unix:${join(dir, "limited.sock")}`;
    agent = await runAgent({ agent: new Agent({ id: "test-agent" }), listen: [addr], log: silent });
    limited = await runAgent({
      agent: new Agent({ allow: ["info"] }),
      listen: [limitedAddr],
      log: silent,
    });
  });
  after(async () => {
    await agent.stop({ abort: true });
    await limited.stop({ abort: true });
    await rm(dir, { recursive: true, force: true });
  });

  it("has help with examples for every command, and a version", async () => {
    const top = await runCli(["--help"]);
    assert.equal(top.code, 0);
    for (const command of ["exec", "ping", "info", "get", "put", "watch", "agent", "demo"]) {
      assert.match(top.stdout, new RegExp(`\\b${command}\\b`));
      const help = await runCli([command, "--help"]);
      assert.equal(help.code, 0, command);
      assert.match(help.stdout, /Examples:/, `${command} --help has examples`);
    }
    const version = await runCli(["--version"]);
    assert.match(version.stdout.trim(), /^\d+\.\d+\.\d+$/);
  });

  it("fails on its own with 255 and one line on stderr", async () => {
    const unknown = await runCli(["frobnicate"]);
    assert.equal(unknown.code, 255);
    assert.match(unknown.stderr, /unknown command/);
    const badAddress = await runCli(["info", "bogus:thing"]);
    assert.equal(badAddress.code, 255);
    assert.equal(badAddress.stderr.trim().split("\n").length, 1, badAddress.stderr);
    assert.match(badAddress.stderr, /^guestlink: .*\[INVALID_ADDRESS\]$/m);
    const nobody = await runCli([
      "exec",
      `unix:${join(dir, "nobody.sock")}`,
      "--connect-timeout",
      "0.3",
      "--",
      "true",
    ]);
    assert.equal(nobody.code, 255);
    assert.match(nobody.stderr, /\[CONNECT_FAILED\]/);
    assert.equal(nobody.stderr.trim().split("\n").length, 1);
    const verbose = await runCli(["--verbose", "info", "bogus:thing"]);
    assert.ok(verbose.stderr.trim().split("\n").length > 1, "--verbose adds detail");
  });

  it("over tcp, dials again while a forwarded port drops connections before the agent's HELLO (a VM still booting)", async () => {
    // As QEMU's hostfwd does while the guest boots: take the connection, then drop it.
    let connections = 0;
    let dropFirst = 3;
    const forward: Server = createServer((client) => {
      connections++;
      if (connections <= dropFirst) {
        client.destroy();
        return;
      }
      const upstream = createConnection(join(dir, "agent.sock"));
      client.pipe(upstream).pipe(client);
      for (const s of [client, upstream]) s.on("error", () => {});
    });
    forward.listen(0, "127.0.0.1");
    await once(forward, "listening");
    const { port } = forward.address() as { port: number };
    try {
      const r = await runCli(["info", `tcp:127.0.0.1:${port}`, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).session.peer, "test-agent");
      assert.ok(connections > 3, `dialled ${connections} times`);
      // A port that never gets an agent behind it: one line once --connect-timeout is over.
      dropFirst = Number.POSITIVE_INFINITY;
      const never = await runCli(["info", `tcp:127.0.0.1:${port}`, "--connect-timeout", "0.5"]);
      assert.equal(never.code, 255);
      assert.equal(never.stderr.trim().split("\n").length, 1, never.stderr);
      // Reset or closed, as the kernel has it: either way the CLI kept dialling, then said so.
      assert.match(
        never.stderr,
        /gave up connecting after \d+ ms and \d+ attempts; the last error: /,
      );
      assert.match(never.stderr, /\[CONNECT_FAILED\]$/m);
    } finally {
      forward.close();
    }
  });

  it("exec streams stdout and stderr apart and exits with the command's status", async () => {
    const r = await runCli(["exec", addr, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
  });

  it("exec: signal N gives 128+N; not found 127; not executable 126, each with one line saying why", async () => {
    assert.equal((await runCli(["exec", addr, "--", "sh", "-c", "kill -9 $$"])).code, 137);
    const missing = await runCli(["exec", addr, "--", "no-such-command-here"]);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /^guestlink: .*no-such-command-here/);
    const file = join(dir, "not-executable.sh");
    await writeFile(file, "echo hi\n", { mode: 0o644 });
    const notExec = await runCli(["exec", addr, "--", file]);
    assert.equal(notExec.code, 126);
  });

  it("exec forwards stdin to its end, and honours --env, --cwd and --shell", async () => {
    const upper = await runCli(["exec", addr, "--", "tr", "a-z", "A-Z"], {
      stdin: "hello, guest\n",
    });
    assert.equal(upper.code, 0);
    assert.equal(upper.stdout, "HELLO, GUEST\n");
    const env = await runCli([
      "exec",
      addr,
      "--env",
      "GREETING=hi there",
      "--cwd",
      dir,
      "--shell",
      "--",
      'echo "$GREETING" in "$(pwd)"',
    ]);
    assert.equal(env.stdout, `hi there in ${dir}\n`);
  });

  it("exec --timeout stops the command with 124, --max-output with 141 and exactly that much output", async () => {
    const slow = await runCli(["exec", addr, "--timeout", "0.5", "--", "sleep", "30"]);
    assert.equal(slow.code, 124);
    assert.match(slow.stderr, /--timeout/);
    const loud = await runCli(["exec", addr, "--max-output", "1000", "--", "yes"]);
    assert.equal(loud.code, 141);
    assert.equal(loud.stdout.length, 1000);
    assert.match(loud.stderr, /output truncated/);
  });

  it("exec: Ctrl-C cancels the command in the agent, kills its process group, and exits 130", async () => {
    const child = startCli([
      "exec",
      addr,
      "--",
      "sh",
      "-c",
      "echo $$; sleep 300 & sleep 300 & wait",
    ]);
    let stdout = "";
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const firstLine = new Promise<string>((resolve) =>
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        stdout += d;
        if (stdout.includes("\n")) resolve(stdout.trim());
      }),
    );
    const pgid = Number(await firstLine);
    const exited = once(child, "exit");
    child.kill("SIGINT");
    const [code] = await exited;
    assert.equal(code, 130);
    assert.match(stderr, /cancelled/);
    // The agent confirmed only after the group was gone.
    assert.throws(
      () => process.kill(-pgid, 0),
      (e: NodeJS.ErrnoException) => e.code === "ESRCH",
    );
  });

  it("info and ping print tables for people and JSON for machines", async () => {
    const info = await runCli(["info", addr]);
    assert.equal(info.code, 0);
    assert.match(info.stdout, /^agent\s+test-agent/m);
    const json = JSON.parse((await runCli(["info", addr, "--json"])).stdout);
    assert.equal(json.session.peer, "test-agent");
    assert.ok(json.services.includes("exec"));
    const ping = JSON.parse((await runCli(["ping", addr, "-c", "5", "-i", "0", "--json"])).stdout);
    assert.equal(ping.answered, 5);
    assert.ok(ping.minMs <= ping.p50Ms && ping.p50Ms <= ping.maxMs);
  });

  it("put and get copy a file both ways, byte-exact, with its mode", async () => {
    const original = join(dir, "original.bin");
    const content = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < content.length; i++) content[i] = (i * 31) % 251;
    await writeFile(original, content, { mode: 0o600 });
    const put = await runCli(["put", addr, original, join(dir, "remote.bin"), "--json"]);
    assert.equal(put.code, 0, put.stderr);
    assert.equal(JSON.parse(put.stdout).size, content.length);
    const got = await runCli(["get", addr, join(dir, "remote.bin"), join(dir, "back.bin")]);
    assert.equal(got.code, 0, got.stderr);
    assert.deepEqual(await readFile(join(dir, "back.bin")), content);
    assert.equal((await stat(join(dir, "back.bin"))).mode & 0o777, 0o600);
    const missing = await runCli(["get", addr, join(dir, "missing"), join(dir, "x")]);
    assert.equal(missing.code, 255);
    assert.match(missing.stderr, /\[FILE_NOT_FOUND\]/);
  });

  it("watch --json prints samples and stops after --count", async () => {
    const r = await runCli(["watch", addr, "--interval", "0.1", "-n", "2", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    assert.ok(lines[0].cpu.usage >= 0 && lines[0].cpu.usage <= 1);
  });

  it("an agent with an allow-list refuses the rest with POLICY_DENIED", async () => {
    const r = await runCli(["exec", limitedAddr, "--", "true"]);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /does not allow the "exec" service \[POLICY_DENIED\]/);
    assert.equal((await runCli(["info", limitedAddr])).code, 0);
  });

  it("an agent started with --allow naming methods serves those and refuses the rest of their service", async () => {
    const path = join(dir, "methods.sock");
    const agent = await startAgent(path, { args: ["--allow", "info,files.get,files.put"] });
    try {
      const addr = `unix:${path}`;
      const source = join(dir, "allowed-source.txt");
      await writeFile(source, "both ways\n");
      const put = await runCli(["put", addr, source, join(dir, "allowed-put.txt")]);
      assert.equal(put.code, 0, put.stderr);
      const got = await runCli(["get", addr, join(dir, "allowed-put.txt"), "-"]);
      assert.equal(got.code, 0, got.stderr);
      assert.equal(got.stdout, "both ways\n");
      const list = await runCli(["get", "-r", addr, dir, join(dir, "copy-of-dir")]);
      assert.equal(list.code, 255);
      assert.match(list.stderr, /does not allow "files\.list" \[POLICY_DENIED\]/);
      const exec = await runCli(["exec", addr, "--", "true"]);
      assert.equal(exec.code, 255);
      assert.match(exec.stderr, /does not allow the "exec" service \[POLICY_DENIED\]/);
      const info = await runCli(["info", addr, "--json"]);
      assert.deepEqual(JSON.parse(info.stdout).services.sort(), ["files", "info", "ping"]);
      const bad = await runCli([
        "agent",
        "--listen",
        `unix:${join(dir, "x.sock")}`,
        "--allow",
        "files.chmod",
      ]);
      assert.equal(bad.code, 255);
      assert.match(bad.stderr, /unknown service or method "files\.chmod".*\[INVALID_OPTION\]/);
    } finally {
      await agent.kill();
    }
  });

  it("bin/guestlink runs the built CLI", () => {
    const bin = fileURLToPath(new URL("../../bin/guestlink", import.meta.url));
    const out = execFileSync(process.execPath, [bin, "--help"], { encoding: "utf8" });
    assert.match(out, /^Usage: guestlink/);
    // --version alone bin/guestlink answers itself, with the same version as the program's.
    const alone = execFileSync(process.execPath, [bin, "--version"], { encoding: "utf8" });
    const program = execFileSync(process.execPath, [bin, "--version", "--verbose"], {
      encoding: "utf8",
    });
    assert.match(alone, /^\d+\.\d+\.\d+\n$/);
    assert.equal(alone, program);
  });
});

/**
 * Reading the command line as ssh and kubectl users expect, and machine output: the CLI spawned
 * as a user runs it, against an agent on a Unix socket in a temporary folder.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Agent } from "../../src/agent/agent.ts";
import { type RunningAgent, runAgent } from "../../src/agent/run.ts";
import { runCli } from "../helpers/cli.ts";

const silent = { info() {}, warn() {} };
/** Prints each of its arguments as [arg] on a line of its own. */
const SHOW_ARGS = ["sh", "-c", 'for a; do echo "[$a]"; done', "sh"];

const oneLine = (stderr: string) => stderr.trim().split("\n");

describe("the command line", () => {
  let dir: string;
  let agent: RunningAgent;
  let addr: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-args-"));
    addr = `unix:${join(dir, "agent.sock")}`;
    agent = await runAgent({ agent: new Agent({ id: "args-agent" }), listen: [addr], log: silent });
  });
  after(async () => {
    await agent.stop({ abort: true });
    await rm(dir, { recursive: true, force: true });
  });

  it("exec: everything after the remote command is the command's, our options included", async () => {
    const r = await runCli([
      "exec",
      addr,
      ...SHOW_ARGS,
      "--timeout",
      "1",
      "-h",
      "--verbose",
      "--json",
      "--",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "[--timeout]\n[1]\n[-h]\n[--verbose]\n[--json]\n[--]\n");
    assert.equal(r.stderr, "");
    // -- before the command is still accepted, and then everything after it is the command's.
    const dashed = await runCli(["exec", addr, "--", ...SHOW_ARGS, "-v"]);
    assert.equal(dashed.stdout, "[-v]\n");
  });

  it("exec: our options between the address and the command are ours", async () => {
    const r = await runCli([
      "exec",
      addr,
      "--cwd",
      dir,
      "--env",
      "X=1",
      "sh",
      "-c",
      'echo "$X $(pwd)"',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `1 ${dir}\n`);
  });

  it("global options work after the command word and before it, anywhere before the address", async () => {
    for (const args of [
      ["exec", "--verbose", addr, "--", "true"],
      ["--verbose", "exec", addr, "true"],
      ["exec", "--json", "--connect-timeout", "5", addr, "true"],
      ["--connect-timeout", "5", "--reconnect-timeout", "5", "exec", addr, "true"],
    ]) {
      const r = await runCli(args);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    }
    const info = await runCli(["--json", "info", addr]);
    assert.equal(info.code, 0, info.stderr);
    assert.equal(JSON.parse(info.stdout).session.peer, "args-agent");
    // Given before the command word, --connect-timeout is the one used: the wait ends long
    // before the 30 s default would.
    const missing = `unix:${join(dir, "never.sock")}`;
    const waited = await runCli(["--connect-timeout", "0.3", "--json", "info", missing]);
    assert.equal(waited.code, 255);
    const failure = JSON.parse(waited.stderr).error;
    assert.equal(failure.details.reason, "gave-up");
    assert.ok(failure.details.triedForMs < 30_000, waited.stderr);
  });

  it("argument errors are one line ending in [INVALID_OPTION], exit 255", async () => {
    const cases: [string[], RegExp][] = [
      [["exec", addr, "--bogus", "true"], /unknown option '--bogus'.*guestlink exec --help/],
      [["frobnicate"], /unknown command 'frobnicate'/],
      [["exec", addr], /missing required argument 'command'/],
      [["info"], /missing required argument 'address'/],
      [
        ["info", addr, "--connect-timeout", "soon"],
        /--connect-timeout takes a positive number of seconds, got "soon"/,
      ],
      [["exec", addr, "--timeout"], /argument missing/],
      [["ping", addr, "-c", "0"], /--count takes a positive whole number/],
      [["demo", "--output-bytes", "lots"], /--output-bytes takes a positive whole number/],
      [["watch", addr, "--interval", "0.05"], /--interval takes 0.1 to 3600 seconds, got "0.05"/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 255, args.join(" "));
      assert.equal(r.stdout, "", args.join(" "));
      assert.equal(oneLine(r.stderr).length, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^guestlink: .* \[INVALID_OPTION\]\n$/, args.join(" "));
      assert.match(r.stderr, message, args.join(" "));
    }
  });

  it("with --json every failure is one JSON object on stderr, with the same exit status", async () => {
    const cases: [string[], string][] = [
      [["exec", "--json", addr, "--bogus", "true"], "INVALID_OPTION"],
      [["info", "--json", "bogus:thing"], "INVALID_ADDRESS"],
      [["get", addr, join(dir, "missing"), join(dir, "x"), "--json"], "FILE_NOT_FOUND"],
      [["--json", "info", `unix:${join(dir, "no-folder", "a.sock")}`], "CONNECT_FAILED"],
    ];
    for (const [args, code] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 255, args.join(" "));
      assert.equal(r.stdout, "");
      assert.equal(oneLine(r.stderr).length, 1, r.stderr);
      const parsed = JSON.parse(r.stderr);
      assert.equal(parsed.schemaVersion, 1);
      assert.equal(parsed.error.code, code, r.stderr);
      assert.equal(typeof parsed.error.message, "string");
      assert.equal(typeof parsed.error.details, "object");
    }
  });

  it("every command's --json output parses and carries schemaVersion 1", async () => {
    const file = join(dir, "payload.txt");
    await writeFile(file, "payload\n");
    const outputs: Record<string, string[]> = {
      info: ["info", addr, "--json"],
      ping: ["ping", addr, "-c", "2", "-i", "0", "--json"],
      watch: ["watch", addr, "--interval", "0.1", "-n", "2", "--json"],
      put: ["put", addr, file, join(dir, "remote.txt"), "--json"],
      get: ["get", addr, join(dir, "remote.txt"), join(dir, "back.txt"), "--json"],
      demo: [
        "demo",
        "--output-bytes",
        "1M",
        "--damaged-bytes",
        "1M",
        "--file-bytes",
        "1M",
        "--telemetry-seconds",
        "1",
        "--json",
      ],
    };
    for (const [name, args] of Object.entries(outputs)) {
      const r = await runCli(args);
      assert.equal(r.code, 0, `${name}: ${r.stderr}${r.stdout}`);
      const lines = r.stdout.trim().split("\n");
      for (const line of lines) {
        const value = JSON.parse(line);
        assert.equal(value.schemaVersion, 1, `${name}: ${line}`);
      }
      if (name === "watch") assert.equal(lines.length, 2);
    }
  });
});

/**
 * Small things a user meets: how numbers print, sizes with units, an exec: agent's logs, the
 * README's library example run as written. The CLI is spawned as a user runs it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Agent } from "../../src/agent/agent.ts";
import { type RunningAgent, runAgent } from "../../src/agent/run.ts";
import { formatBytes } from "../../src/cli/common.ts";
import { GUESTLINK_BIN } from "../helpers/bin.ts";
import { runCli } from "../helpers/cli.ts";

const silent = { info() {}, warn() {} };
const INDEX = fileURLToPath(new URL("../../src/index.ts", import.meta.url));
const README = fileURLToPath(new URL("../../README.md", import.meta.url));
/** An agent the CLI starts itself, as exec:ssh vm guestlink agent --stdio would. */
const EXEC_AGENT = `exec:${process.execPath} ${GUESTLINK_BIN} agent --stdio`;

describe("the smaller things", () => {
  let dir: string;
  let agent: RunningAgent;
  let addr: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-small-"));
    addr = `unix:${join(dir, "agent.sock")}`;
    agent = await runAgent({
      agent: new Agent({ id: "small-agent" }),
      listen: [addr],
      log: silent,
    });
  });
  after(async () => {
    await agent.stop({ abort: true });
    await rm(dir, { recursive: true, force: true });
  });

  it("bytes and rates print rounded: whole bytes, or one decimal of a larger unit", async () => {
    assert.equal(formatBytes(783.8832045380567), "784 B");
    assert.equal(formatBytes(1536), "1.5 KiB");
    const file = join(dir, "small.txt");
    await writeFile(file, "abc");
    const put = await runCli(["put", addr, file, join(dir, "small-remote.txt")]);
    assert.equal(put.code, 0, put.stderr);
    const rate = /\(([^)]*)\/s\)/.exec(put.stdout)?.[1];
    assert.match(rate ?? "", /^(\d+ B|\d+\.\d (KiB|MiB|GiB|TiB))$/, put.stdout);
  });

  it("ping with every call failed says so, with no NaN", async () => {
    // A deadline no call can meet: every call fails.
    const text = await runCli(["ping", addr, "-c", "2", "-i", "0", "--timeout", "0.000001"]);
    assert.equal(text.code, 1);
    assert.doesNotMatch(text.stdout, /NaN/);
    assert.match(text.stdout, /2 calls, 0 answered, 2 failed\nround trip: no call was answered\n$/);
    const json = await runCli([
      "ping",
      addr,
      "-c",
      "2",
      "-i",
      "0",
      "--timeout",
      "0.000001",
      "--json",
    ]);
    const stats = JSON.parse(json.stdout);
    assert.equal(stats.answered, 0);
    for (const field of ["minMs", "avgMs", "p50Ms", "p99Ms", "maxMs"])
      assert.equal(stats[field], null, field);
  });

  it("demo takes sizes with units (10M) and refuses what is not a size", async () => {
    const r = await runCli([
      "demo",
      "--output-bytes",
      "10M",
      "--damaged-bytes",
      "1M",
      "--file-bytes",
      "512K",
      "--telemetry-seconds",
      "1",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /NaN/);
    assert.match(r.stdout, /10\.0 MiB of command output/);
    const bad = await runCli(["demo", "--output-bytes", "10 megs"]);
    assert.equal(bad.code, 255);
    assert.match(
      bad.stderr,
      /^guestlink: --output-bytes takes a positive whole number \(K, M, G allowed\), got "10 megs" \[INVALID_OPTION\]\n$/,
    );
  });

  it("an exec: agent's JSON logs stay off the user's stderr unless --verbose; its other lines pass", async () => {
    const quiet = await runCli(["info", EXEC_AGENT]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, "");
    const verbose = await runCli(["info", EXEC_AGENT, "--verbose"]);
    assert.equal(verbose.code, 0, verbose.stderr);
    assert.match(verbose.stderr, /^guestlink: agent info: agent started \(/m);
    assert.doesNotMatch(verbose.stderr, /^\{"level"/m);
    // What is not the agent's log (a shell, ssh) says why things fail: it is shown as it is.
    const said = await runCli(["info", `exec:sh -c 'echo "no such host" >&2; exit 255'`]);
    assert.equal(said.code, 255);
    assert.match(said.stderr, /^no such host\n/);
  });

  it("the README's library example runs as written and exits", async () => {
    const readme = await readFile(README, "utf8");
    const example = /## Using the library\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(example, "the README has the example");
    const socket = join(dir, "readme.sock");
    const program = example
      .replaceAll("/run/guestlink.sock", socket)
      .replace('from "guestlink"', `from ${JSON.stringify(INDEX)}`);
    const file = join(dir, "example.mts");
    await writeFile(file, program);
    // Exits by itself (nothing left listening or dialling) and prints the answer.
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", file], {
      timeout: 120_000,
    });
    assert.equal(stdout, "hello, guest\n");
  });
});

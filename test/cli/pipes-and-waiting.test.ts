/**
 * The CLI in a pipe whose reader leaves, and while it waits for an agent: spawned as a user runs
 * it, agents on Unix sockets in a temporary folder; what a person sees on a terminal is checked
 * on a real pseudo-terminal.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, openSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Agent } from "../../src/agent/agent.ts";
import { type RunningAgent, runAgent } from "../../src/agent/run.ts";
import { spawnAddon } from "../../src/agent/spawn-native.ts";
import { startAgent } from "../helpers/agent-process.ts";
import { guestlinkArgs } from "../helpers/bin.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { noTerminal, runOnTerminal } from "../helpers/terminal.ts";

const silent = { info() {}, warn() {} };

/** Starts `guestlink ARGS…` with nobody reading its stdout, and collects its stderr and status. */
async function withReaderGone(args: string[], afterFirstLine = false) {
  const child = startCli(args);
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  if (afterFirstLine) {
    let out = "";
    await new Promise<void>((resolve) => {
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        out += d;
        if (out.includes("\n")) resolve();
      });
      child.once("close", () => resolve());
    });
  }
  // As `| head -1` does once it has its line: our end of the pipe is gone.
  child.stdout.destroy();
  const [code] = (await once(child, "close")) as [number | null];
  return { code, stderr };
}

describe("in pipes and while waiting", () => {
  let dir: string;
  let agent: RunningAgent;
  let addr: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-pipes-"));
    addr = `unix:${join(dir, "agent.sock")}`;
    agent = await runAgent({ agent: new Agent({ id: "pipe-agent" }), listen: [addr], log: silent });
  });
  after(async () => {
    await agent.stop({ abort: true });
    await rm(dir, { recursive: true, force: true });
  });

  it("watch, ping and help end quietly with status 0 when the reader goes away", async () => {
    for (const [args, afterFirstLine] of [
      [["watch", addr, "--interval", "0.1"], true],
      [["watch", addr, "--interval", "0.1"], false],
      [["ping", addr, "-c", "100000", "-i", "0"], true],
      [["help", "exec"], false],
      [["exec", "--help"], false],
      [["info", addr], false],
    ] as [string[], boolean][]) {
      const r = await withReaderGone(args, afterFirstLine);
      assert.equal(r.stderr, "", `${args.join(" ")} printed: ${r.stderr}`);
      assert.equal(r.code, 0, args.join(" "));
    }
  });

  it("stdout that cannot be written (a full disk) is a failure: one line, exit 255", async () => {
    const full = openSync("/dev/full", "w");
    try {
      const child = spawn(process.execPath, guestlinkArgs(["info", addr]), {
        stdio: ["ignore", full, "pipe"],
      });
      let stderr = "";
      child.stderr?.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
      });
      const [code] = (await once(child, "close")) as [number | null];
      assert.equal(code, 255);
      assert.equal(
        stderr,
        "guestlink: cannot write to stdout (ENOSPC): the output is incomplete\n",
      );
    } finally {
      closeSync(full);
    }
  });

  it("exec: a reader that goes away closes the command's stdout; its stderr and status still arrive", async () => {
    const r = await withReaderGone(
      [
        "exec",
        addr,
        "--",
        "sh",
        "-c",
        'echo first; yes >/dev/stdout; echo "yes ended" >&2; exit 3',
      ],
      true,
    );
    assert.equal(r.code, 3);
    // yes saw its output closed (EPIPE or a reset, as the socket has it) and ended.
    assert.match(r.stderr, /yes ended\n$/);
    assert.doesNotMatch(r.stderr, /guestlink|EPIPE|at /);
  });

  it("exec < /dev/null: the command's stdin ends at once, and it is not read (no thread pool started)", async () => {
    // stdin as a script or a service has it, against an empty regular file (read as ever).
    const empty = join(dir, "empty");
    await writeFile(empty, "");
    const withStdin = async (path: string) => {
      const threads = join(dir, `threads-${path === empty ? "file" : "null"}`);
      const recorder = join(dir, "count-threads.cjs");
      await writeFile(
        recorder,
        'process.on("exit", () => require("node:fs").writeFileSync(process.env.THREADS_TO, String(require("node:fs").readdirSync("/proc/self/task").length)));',
      );
      const fd = openSync(path, "r");
      try {
        const child = spawn(
          process.execPath,
          [
            "--require",
            recorder,
            ...guestlinkArgs(["exec", addr, "--", "sh", "-c", "cat; echo end"]),
          ],
          { stdio: [fd, "pipe", "pipe"], env: { ...process.env, THREADS_TO: threads } },
        );
        let stdout = "";
        child.stdout?.setEncoding("utf8").on("data", (d: string) => {
          stdout += d;
        });
        child.stderr?.resume();
        const [code] = (await once(child, "close")) as [number | null];
        return { code, stdout, threads: Number(await readFile(threads, "utf8")) };
      } finally {
        closeSync(fd);
      }
    };
    const devNull = await withStdin("/dev/null");
    const file = await withStdin(empty);
    assert.deepEqual([devNull.code, devNull.stdout], [0, "end\n"]);
    assert.deepEqual([file.code, file.stdout], [0, "end\n"]);
    // libuv starts its pool (4 threads by default) for the file's first read.
    assert.ok(
      devNull.threads < file.threads,
      `threads at exit: ${devNull.threads} with /dev/null, ${file.threads} with a file`,
    );
  });

  it("exec: a command whose reader goes away dies of SIGPIPE (141), as in a shell", {
    skip:
      "reason" in spawnAddon() &&
      process.env.GUESTLINK_TOOLS_REQUIRED !== "1" &&
      "needs the spawn addon (real pipes)",
  }, async () => {
    // guestlink exec ADDR -- sh -c 'yes; echo $? >&2' | head -1
    const r = await withReaderGone(
      ["exec", addr, "--", "sh", "-c", 'yes; echo "yes: $?" >&2'],
      true,
    );
    assert.equal(r.stderr, "yes: 141\n");
    assert.equal(r.code, 0);
  });

  it("fails at once, with the reason, on what waiting cannot heal", async () => {
    const file = join(dir, "regular-file");
    await writeFile(file, "not a socket");
    const cases: [string, RegExp][] = [
      [join(dir, "no-such-folder", "agent.sock"), /its folder .*no-such-folder does not exist/],
      [file, /is a file, not a socket/],
      [dir, /is a folder, not a socket/],
      [join(file, "agent.sock"), /not a folder \(ENOTDIR\)/],
    ];
    // Default options: the old behaviour was to retry these for the whole 30 s and then give up.
    for (const [path, reason] of cases) {
      const r = await runCli(["info", `unix:${path}`, "--json"]);
      assert.equal(r.code, 255, path);
      const { error } = JSON.parse(r.stderr);
      assert.equal(error.code, "CONNECT_FAILED");
      assert.match(error.message, reason);
      assert.equal(error.details.dialAgain, false, r.stderr);
      assert.notEqual(error.details.reason, "gave-up");
    }
  });

  it("a socket this user may not open fails at once with EACCES", async () => {
    const folder = join(dir, "guarded");
    await mkdir(folder, { mode: 0o755 });
    await chmod(dir, 0o755);
    const path = join(folder, "agent.sock");
    const guarded = await runAgent({ agent: new Agent(), listen: [`unix:${path}`], log: silent });
    try {
      // Root opens any socket: then the CLI runs as nobody; anyone else is refused a mode 000.
      const root = process.getuid?.() === 0;
      await chmod(path, root ? 0o600 : 0o000);
      const child = spawn(process.execPath, guestlinkArgs(["info", `unix:${path}`, "--json"]), {
        stdio: ["ignore", "pipe", "pipe"],
        ...(root ? { uid: 65534, gid: 65534 } : {}),
      });
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
      });
      child.stdout.resume();
      const [code] = (await once(child, "close")) as [number | null];
      assert.equal(code, 255, stderr);
      const { error } = JSON.parse(stderr);
      assert.equal(error.code, "CONNECT_FAILED");
      assert.match(error.message, /permission denied connecting to .* \(EACCES\)/);
      assert.equal(error.details.dialAgain, false);
    } finally {
      await guarded.stop({ abort: true });
    }
  });

  it("a listener that never says HELLO: the failure says so once --connect-timeout is over", async () => {
    const silentPath = join(dir, "silent.sock");
    const held: import("node:net").Socket[] = [];
    const server = createServer((s) => held.push(s));
    server.listen(silentPath);
    await once(server, "listening");
    try {
      const r = await runCli(["info", `unix:${silentPath}`, "--connect-timeout", "1"]);
      assert.equal(r.code, 255);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(
        r.stderr,
        /did not answer as a guestlink agent \(no HELLO\).*\[CONNECT_FAILED\]$/m,
      );
    } finally {
      for (const s of held) s.destroy();
      server.close();
    }
  });

  it("on a terminal: says it is waiting for an agent not up yet, and finds it once it is", {
    skip: noTerminal,
  }, async () => {
    const folder = join(dir, "later");
    await mkdir(folder);
    const path = join(folder, "agent.sock");
    const run = runOnTerminal(["info", `unix:${path}`]);
    await run.shows(/waiting for the agent at unix:\S+ …/);
    const late = await runAgent({
      agent: new Agent({ id: "late-agent" }),
      listen: [`unix:${path}`],
      log: silent,
    });
    try {
      assert.equal(await run.exited, 0, run.output());
      assert.match(run.output(), /agent\s+late-agent/);
      assert.equal(run.output().match(/waiting for the agent/g)?.length, 1, run.output());
    } finally {
      await late.stop({ abort: true });
    }
  });

  it("on a terminal: an agent that dies mid-command is reported at once with the resume wait", {
    skip: noTerminal,
  }, async () => {
    const dying = await startAgent(join(dir, "dying.sock"));
    const run = runOnTerminal([
      "exec",
      dying.address,
      "--reconnect-timeout",
      "1",
      "--",
      "sh",
      "-c",
      "echo started $$; exec sleep 60",
    ]);
    const pgid = Number((await run.shows(/started \d+/)).split(" ")[1]);
    try {
      await dying.kill();
      await run.shows(/guestlink: connection lost; waiting up to 1 s for the session to resume/);
      assert.equal(await run.exited, 255);
      assert.match(run.output(), /\[RESUME_FAILED\]/);
    } finally {
      // The agent was killed with SIGKILL: its command is the test's to clean up.
      try {
        process.kill(-pgid, "SIGKILL");
      } catch {}
    }
  });

  it("stdio on a terminal is refused with one line, and no binary frames are shown", {
    skip: noTerminal,
  }, async () => {
    for (const args of [
      ["info", "stdio"],
      ["agent", "--stdio"],
    ]) {
      const run = runOnTerminal(args);
      assert.equal(await run.exited, 255, run.output());
      const shown = run.output().trim();
      assert.match(
        shown,
        /^guestlink: cannot use stdio here: stdin and stdout are a terminal; .* \[INVALID_ADDRESS\]$/,
      );
      assert.equal(shown.split("\n").length, 1, shown);
    }
  });
});

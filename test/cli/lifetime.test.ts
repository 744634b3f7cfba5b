/**
 * Commands never outlive their reason to run: the agent dying (SIGKILL), the agent stopping
 * (SIGTERM, with its drain deadline), the session that started them ending, the user's Ctrl-C,
 * SIGTERM or SIGHUP to the CLI, and an `exec:` agent that never answers. A real agent process
 * and the CLI as a child; the commands are found in /proc by a marker only they carry (a sleep
 * of a unique length), and every test kills what is left in `finally`.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { access, mkdtemp, rm } from "node:fs/promises";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { runCli, startCli } from "../helpers/cli.ts";

/** How long a process may take to be gone before the test fails (a bound, not a measurement). */
const GONE_WITHIN_MS = 30_000;
const POLL_MS = 50;

let markers = 0;
/** A sleep length no other process has: `sleep MARKER` is findable in /proc. */
function marker(): string {
  markers++;
  return `4321.${process.pid}${markers}`;
}

/** Pids of the processes whose arguments include `marker`, the CLI itself left out. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
    } catch {
      continue;
    }
    const argv = cmdline.split("\0");
    if (argv.includes(marker) && !argv.some((arg) => arg.endsWith("bin/guestlink"))) {
      found.push(Number(entry));
    }
  }
  return found;
}

async function until<T>(what: string, probe: () => T | undefined): Promise<T> {
  for (let waited = 0; ; waited += POLL_MS) {
    const value = probe();
    if (value !== undefined) return value;
    if (waited >= GONE_WITHIN_MS) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Waits until `count` processes carry `marker`. */
function running(marker: string, count: number): Promise<number[]> {
  return until(`${count} processes running sleep ${marker}`, () => {
    const pids = processesWith(marker);
    return pids.length >= count ? pids : undefined;
  });
}

/** Waits until no process carries `marker`; fails naming those left. */
async function assertAllGone(marker: string): Promise<void> {
  try {
    await until(`sleep ${marker} to be gone`, () =>
      processesWith(marker).length === 0 ? true : undefined,
    );
  } catch {
    assert.deepEqual(processesWith(marker), [], `processes running sleep ${marker} were left`);
  }
}

/** The process group of process `pid`, from /proc/PID/stat (the 5th field). */
function groupOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
}

function killAll(marker: string): void {
  for (const pid of processesWith(marker)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

/** Collects a child's output and resolves with how it ended. */
function watchCli(child: ChildProcess) {
  const out = { stdout: "", stderr: "" };
  child.stdout?.setEncoding("utf8").on("data", (d: string) => {
    out.stdout += d;
  });
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    out.stderr += d;
  });
  const exited = once(child, "exit").then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
    ...out,
  }));
  return { out, exited };
}

describe("commands never outlive their reason to run", () => {
  let dir: string;
  let n = 0;
  const socketPath = () => join(dir, `agent-${++n}.sock`);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-life-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("guestlink agent refuses a --drain-timeout that is not seconds with one line, exit 255, and listens nowhere", async () => {
    for (const value of ["abc", "-1", ""]) {
      const path = socketPath();
      const result = await runCli(["agent", "--listen", `unix:${path}`, "--drain-timeout", value]);
      assert.equal(result.code, 255);
      assert.equal(
        result.stderr,
        `guestlink: --drain-timeout takes a number of seconds (0 or more), got "${value}" [INVALID_OPTION]\n`,
      );
      await assert.rejects(access(path), { code: "ENOENT" });
    }
  });

  it("SIGKILL of the agent kills the command and what it started in the background", async () => {
    const m = marker();
    const agent = await startAgent(socketPath(), { args: ["--log-level", "debug"] });
    const cli = startCli(["exec", agent.address, "--", "sh", "-c", `sleep ${m} & sleep ${m}`]);
    const { exited } = watchCli(cli);
    try {
      await running(m, 2);
      // Between spawning a command and telling its keeper of the group lies an instant that a
      // SIGKILL can hit (keeper.ts says so); under load the command has started its children
      // by then. The agent logs (debug) once the keeper knows: the test is of what follows.
      const [pgid] = await running(m, 1).then((pids) => pids.map(groupOf));
      await until("the keeper to watch the command's group", () =>
        agent.log().includes(`the keeper watches process group ${pgid}`) ? true : undefined,
      );
      await agent.kill();
      await assertAllGone(m);
    } finally {
      cli.kill("SIGKILL");
      await exited;
      killAll(m);
      await agent.kill();
    }
  });

  it("SIGTERM to the agent lets running work finish within the drain deadline, then kills the rest and exits", async () => {
    const quick = marker();
    const slow = marker();
    const agent = await startAgent(socketPath());
    // The marker is the shell's $0: findable in /proc, and no part of what runs.
    const finishing = startCli([
      "exec",
      agent.address,
      "--",
      "sh",
      "-c",
      "sleep 1; echo finished",
      quick,
    ]);
    const lingering = startCli(["exec", agent.address, "--", "sh", "-c", `sleep ${slow} & wait`]);
    const a = watchCli(finishing);
    const b = watchCli(lingering);
    try {
      await running(slow, 1);
      await running(quick, 1);
      const agentExit = once(agent.child, "exit");
      agent.child.kill("SIGTERM");
      const done = await a.exited;
      assert.equal(done.code, 0, done.stderr);
      assert.equal(done.stdout, "finished\n");
      const [code] = await agentExit;
      assert.equal(code, 0);
      // The agent exits only once the command's group is gone.
      assert.deepEqual(processesWith(slow), []);
      const cut = await b.exited;
      assert.notEqual(cut.code, 0);
    } finally {
      finishing.kill("SIGKILL");
      lingering.kill("SIGKILL");
      killAll(quick);
      killAll(slow);
      await agent.kill();
    }
  });

  it("a second SIGTERM to the agent kills its commands at once, whatever the drain deadline", async () => {
    const m = marker();
    const agent = await startAgent(socketPath(), { args: ["--drain-timeout", "600"] });
    const cli = startCli(["exec", agent.address, "--", "sh", "-c", `sleep ${m} & sleep ${m}`]);
    const { exited } = watchCli(cli);
    try {
      await running(m, 2);
      const agentExit = once(agent.child, "exit");
      logOf(agent);
      agent.child.kill("SIGTERM");
      // The first signal was heard (logged) before the second is sent.
      await until("the agent to log that it is stopping", () =>
        /stopping: sessions finish/.test(logOf(agent)) ? true : undefined,
      );
      agent.child.kill("SIGTERM");
      await agentExit;
      assert.deepEqual(processesWith(m), []);
    } finally {
      cli.kill("SIGKILL");
      await exited;
      killAll(m);
      await agent.kill();
    }
  });

  it("when its session ends, the agent stops what a finished command left running in its group", async () => {
    const m = marker();
    const agent = await startAgent(socketPath());
    try {
      const cli = startCli([
        "exec",
        agent.address,
        "--",
        "sh",
        "-c",
        `sleep ${m} >/dev/null 2>&1 &`,
      ]);
      const result = await watchCli(cli).exited;
      assert.equal(result.code, 0, result.stderr);
      await assertAllGone(m);
    } finally {
      killAll(m);
      await agent.kill();
    }
  });

  for (const signal of ["SIGTERM", "SIGHUP"] as const) {
    it(`${signal} to the CLI does what Ctrl-C does: the command's group is stopped in the agent, exit 130`, async () => {
      const m = marker();
      const agent = await startAgent(socketPath());
      const cli = startCli([
        "exec",
        agent.address,
        "--",
        "sh",
        "-c",
        `echo $$; sleep ${m} & sleep ${m} & wait`,
      ]);
      const { out, exited } = watchCli(cli);
      try {
        const pgid = Number(await until("the command's pid", () => /^\d+\n/.exec(out.stdout)?.[0]));
        await running(m, 2);
        cli.kill(signal);
        const result = await exited;
        assert.equal(result.code, 130, result.stderr);
        assert.equal(result.stderr, "guestlink: cancelled; the command was stopped in the agent\n");
        // The agent confirmed only once the group was gone.
        assert.throws(
          () => process.kill(-pgid, 0),
          (e: NodeJS.ErrnoException) => e.code === "ESRCH",
        );
      } finally {
        cli.kill("SIGKILL");
        killAll(m);
        await agent.kill();
      }
    });
  }

  it("Ctrl-C while the agent is unreachable exits 130 at once saying the command may still run; the agent stops it when the session's resume window ends", async () => {
    const m = marker();
    const agent = await startAgent(socketPath(), { args: ["--resume-window", "2"] });
    const agentPath = agent.address.slice("unix:".length);
    // A link the test can cut: a Unix socket forwarding to the agent's.
    const linkPath = socketPath();
    const sockets = new Set<Socket>();
    const link = createServer((client) => {
      const upstream = createConnection(agentPath);
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
    });
    link.listen(linkPath);
    await once(link, "listening");
    const cli = startCli(["--verbose", "exec", `unix:${linkPath}`, "--", "sleep", m]);
    const { out, exited } = watchCli(cli);
    try {
      await running(m, 1);
      // The link goes down and stays down: no more connections, the open ones cut.
      link.close();
      for (const socket of sockets) socket.destroy();
      await until(`the CLI to see the connection lost (it said: ${out.stderr})`, () =>
        /connection lost/.test(out.stderr) ? true : undefined,
      );
      cli.kill("SIGINT");
      const result = await exited;
      assert.equal(result.code, 130);
      const lines = result.stderr.split("\n").filter((l) => l.startsWith("guestlink:"));
      assert.deepEqual(lines, [
        "guestlink: cancelled; the command may still be running in the agent until it is reached or its resume window ends",
      ]);
      // The agent's session ends when its resume window does, and with it the command.
      await assertAllGone(m);
    } finally {
      cli.kill("SIGKILL");
      link.close();
      killAll(m);
      await agent.kill();
    }
  });

  it("an exec: agent that never says HELLO is given up on with everything it started", async () => {
    const m = marker();
    const cli = startCli([
      "ping",
      `exec:sh -c 'sleep ${m} & sleep ${m}'`,
      "--connect-timeout",
      "1",
      "--count",
      "1",
    ]);
    const { exited } = watchCli(cli);
    try {
      await running(m, 2);
      const result = await exited;
      assert.equal(result.code, 255, result.stderr);
      await assertAllGone(m);
    } finally {
      cli.kill("SIGKILL");
      killAll(m);
    }
  });
});

const logs = new WeakMap<AgentProcess, { text: string }>();
/** What the agent has logged so far (from when this is first asked). */
function logOf(agent: AgentProcess): string {
  let log = logs.get(agent);
  if (log === undefined) {
    const kept = { text: "" };
    agent.child.stderr?.on("data", (chunk: string) => {
      kept.text += chunk;
    });
    logs.set(agent, kept);
    log = kept;
  }
  return log.text;
}

/**
 * `exec -t` through a real terminal, as a person uses it: tmux runs a shell on a terminal of a
 * known size, the test types into it (send-keys) and reads the screen (capture-pane). Checked:
 * the remote command has a terminal of the local size, follows a resize, gets Ctrl-C and Ctrl-Z
 * as bytes (its terminal makes them signals), its exit status becomes guestlink's, and the local
 * terminal is exactly as it was afterwards, also when guestlink is stopped by a signal.
 * `--signal-forward` delivers signals to the remote group instead of cancelling.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Agent } from "../../src/agent/agent.ts";
import { type RunningAgent, runAgent } from "../../src/agent/run.ts";
import { spawnAddon } from "../../src/agent/spawn-native.ts";
import { readServeConfig } from "../../src/daemon/config.ts";
import { Daemon } from "../../src/daemon/daemon.ts";
import { guestlinkArgs } from "../helpers/bin.ts";
import { until } from "../helpers/until.ts";

const silent = { info() {}, warn() {} };

/** Why these tests cannot run here (no tmux, no spawn addon), or false. */
function skipReason(): false | string {
  const missing: string[] = [];
  if (spawnSync("tmux", ["-V"], { stdio: "ignore" }).status !== 0) missing.push("tmux");
  const addon = spawnAddon();
  if ("reason" in addon) missing.push(`the spawn addon (${addon.reason})`);
  if (missing.length === 0) return false;
  const reason = `needs ${missing.join(" and ")}`;
  if (process.env.GUESTLINK_TOOLS_REQUIRED === "1" && process.platform === "linux") {
    throw new Error(`${reason}, and GUESTLINK_TOOLS_REQUIRED=1 says it must run here`);
  }
  return reason;
}

/** Whether process `pid` still runs (a zombie nobody has reaped yet does not). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

describe("exec -t on a real terminal (tmux)", { skip: skipReason() }, () => {
  let dir: string;
  let agent: RunningAgent;
  let addr: string;
  /** The tmux server of this test alone (-L). */
  const server = `guestlink-tty-${process.pid}`;
  const tmux = (...args: string[]) =>
    execFileSync("tmux", ["-L", server, "-f", "/dev/null", ...args], { encoding: "utf8" });
  const screen = () => tmux("capture-pane", "-p", "-J", "-t", "t");
  const type = (...keys: string[]) => tmux("send-keys", "-t", "t", ...keys);
  /** Types a line of shell into the terminal. */
  const line = (text: string) => {
    type("-l", text);
    type("Enter");
  };
  /** Resolves once the screen (without trailing blanks) matches `pattern` (15 s at most). */
  async function shows(pattern: RegExp): Promise<RegExpExecArray> {
    const deadline = performance.now() + 15_000;
    for (;;) {
      const m = pattern.exec(screen().trimEnd());
      if (m) return m;
      if (performance.now() > deadline) {
        assert.fail(`the terminal never showed ${pattern}; it shows:\n${screen()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  /** The pid of what the shell in tmux runs now: the guestlink CLI. */
  const foreground = () => {
    const shell = tmux("display-message", "-p", "-t", "t", "#{pane_pid}").trim();
    const children = execFileSync("pgrep", ["-P", shell], { encoding: "utf8" }).trim().split("\n");
    assert.equal(children.length, 1, `the shell runs ${children.join(", ")}`);
    return Number(children[0]);
  };
  const cli = (args: string[]) => [process.execPath, ...guestlinkArgs(args)].map(quote).join(" ");
  /** The local terminal's settings, written to a file by the shell in tmux. */
  async function localModes(name: string): Promise<string> {
    const file = join(dir, name);
    line(`stty -g > ${file}; echo saved-${name}`);
    await shows(new RegExp(`^saved-${name}$`, "m"));
    return readFile(file, "utf8");
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-tty-"));
    addr = `unix:${join(dir, "agent.sock")}`;
    agent = await runAgent({ agent: new Agent({ id: "tty-agent" }), listen: [addr], log: silent });
    tmux(
      "new-session",
      "-d",
      "-s",
      "t",
      "-x",
      "100",
      "-y",
      "30",
      "env",
      "-i",
      `PATH=${process.env.PATH}`,
      `HOME=${dir}`,
      "TERM=xterm-256color",
      "PS1=local$ ",
      // No history file: bash writes one into HOME when the server hangs it up, racing the rm below.
      "HISTFILE=",
      "bash",
      "--norc",
      "--noprofile",
    );
    await shows(/local\$$/m);
  });

  after(async () => {
    let shell: number | undefined;
    try {
      shell = Number(tmux("display-message", "-p", "-t", "t", "#{pane_pid}").trim());
      tmux("kill-server");
    } catch {
      // gone already
    }
    // The shell may still be writing into `dir` (it is its HOME) as it exits.
    if (shell) await until("the terminal's shell to exit", () => (alive(shell) ? undefined : true));
    await agent?.stop({ abort: true });
    await rm(dir, { recursive: true, force: true, maxRetries: 5 });
  });

  it("gives the command a terminal of the local size that follows it, keys as bytes, its status, and the local terminal back", async () => {
    tmux("send-keys", "-t", "t", "clear", "Enter");
    const before = await localModes("before");
    line(`${cli(["exec", "-it", addr, "--", "sh"])}; echo "local status=$?"`);
    line("PS1='remote# '; tty; stty size; echo TERM=$TERM");
    await shows(/^\/dev\/pts\/\d+\r?$/m);
    await shows(/^30 100$/m);
    await shows(/^TERM=xterm-256color$/m);
    // A resize of the local terminal reaches the remote one.
    tmux("resize-window", "-t", "t", "-x", "120", "-y", "40");
    await new Promise((resolve) => setTimeout(resolve, 300));
    line("stty size");
    await shows(/^40 120$/m);
    // Ctrl-C is a byte: the remote terminal makes it SIGINT for cat, and the shell goes on.
    line("cat");
    await new Promise((resolve) => setTimeout(resolve, 300));
    type("C-c");
    // The terminal discards typed-ahead input with the signal: wait for the prompt first.
    await shows(/\^C\s*\nremote#$/);
    line("echo cat=$?");
    await shows(/^cat=130$/m);
    // Ctrl-Z too: the remote shell stops sleep as a job of its own.
    line("sleep 60");
    await new Promise((resolve) => setTimeout(resolve, 300));
    type("C-z");
    await shows(/Stopped/);
    line("kill -9 %1; sleep 0.2; exit 5");
    await shows(/^local status=5$/m);
    const after = await localModes("after");
    assert.equal(after, before, "the local terminal is as it was");
  });

  it("restores the local terminal when guestlink is stopped by a signal (exit 130)", async () => {
    const before = await localModes("before-signal");
    line(
      `${cli(["exec", "-t", addr, "--", "sh", "-c", "echo signal-ready; exec sleep 60"])}; echo "local status=$?"`,
    );
    await shows(/^signal-ready\r?$/m);
    process.kill(foreground(), "SIGTERM");
    await shows(/^local status=130$/m);
    assert.equal(await localModes("after-signal"), before);
  });

  it("--signal-forward delivers SIGINT to the command instead of cancelling it", async () => {
    line(
      `${cli(["exec", "--signal-forward", addr, "--", "sh", "-c", 'trap "echo got INT; exit 9" INT; echo forward-ready; while :; do sleep 0.1; done'])}; echo "local status=$?"`,
    );
    await shows(/^forward-ready$/m);
    process.kill(foreground(), "SIGINT");
    await shows(/^got INT$/m);
    await shows(/^local status=9$/m);
  });

  it("works the same through the daemon: exec -t @ID gets a terminal of the local size and gives its status", async () => {
    const socket = join(dir, "serve.sock");
    const daemon = await Daemon.start(
      readServeConfig({ agents: [{ id: "tty-vm", address: addr }], socket, http: "127.0.0.1:0" }),
    );
    try {
      await until("the daemon to hold tty-vm", () =>
        daemon.agents.get("tty-vm")?.state === "up" ? true : undefined,
      );
      type("clear", "Enter");
      await shows(/^local\$$/);
      const size = tmux("display-message", "-p", "-t", "t", "#{window_height} #{window_width}");
      line(
        `GUESTLINK_SOCKET=${quote(socket)} ${cli(["exec", "-t", "@tty-vm", "--", "sh", "-c", "tty; stty size; exit 4"])}; echo "local status=$?"`,
      );
      await shows(/^\/dev\/pts\/\d+\r?$/m);
      await shows(new RegExp(`^${size.trim()}\\r?$`, "m"));
      await shows(/^local status=4$/m);
    } finally {
      await daemon.close();
    }
  });
});

/**
 * `guestlink serve` with real agent processes: agents found by a socket pattern as they appear
 * and vanish, an agent that dials in, one killed (down) and started again (up), and the CLI
 * through the daemon: `ls`, `exec @ID` with its exit status and stdin, `get`/`put @ID`, the
 * events stream, and the refusals (unknown agent, a non-loopback --http, a daemon not running).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { guestlinkArgs } from "../helpers/bin.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { until } from "../helpers/until.ts";

/** GET on the daemon's Unix socket: status and parsed JSON. */
function api(
  socketPath: string,
  path: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (d: string) => {
        text += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on("error", reject);
    req.end();
  });
}

interface Snapshot {
  id: string;
  state: string;
  source: string;
  reconnects: number;
}

describe("guestlink serve (real agents, the CLI through the daemon)", () => {
  let dir = "";
  let socket = "";
  let serve: ReturnType<typeof startCli> | undefined;
  let serveErr = "";
  const agents: AgentProcess[] = [];
  let dialler: ChildProcess | undefined;
  const env = () => ({ GUESTLINK_SOCKET: socket });
  const states = async () => {
    const { body } = await api(socket, "/v1/agents");
    return new Map((body.agents as Snapshot[]).map((a) => [a.id, a]));
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-serve-"));
    socket = join(dir, "api", "serve.sock");
    mkdirSync(join(dir, "vms", "vm-1"), { recursive: true });
    mkdirSync(join(dir, "vms", "vm-2"), { recursive: true });
    agents.push(
      await startAgent(join(dir, "vms", "vm-1", "agent.sock"), { args: ["--id", "vm-1"] }),
    );
    serve = startCli([
      "serve",
      "--discover",
      `${join(dir, "vms")}/*/agent.sock`,
      "--listen",
      `unix:${join(dir, "dial-in.sock")}`,
      "--socket",
      socket,
      "--http",
      "127.0.0.1:0",
    ]);
    serve.stderr.setEncoding("utf8").on("data", (d: string) => {
      serveErr += d;
    });
    await until("the daemon", () => (serveErr.includes("daemon running") ? true : undefined));
  });

  after(async () => {
    dialler?.kill("SIGKILL");
    for (const a of agents) await a.kill();
    if (serve !== undefined && serve.exitCode === null) {
      serve.kill("SIGKILL");
      await once(serve, "close");
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("holds an agent found by the pattern, and one whose socket appears later; ls lists them", async () => {
    await until("vm-1 up", async () =>
      (await states()).get("vm-1")?.state === "up" ? true : undefined,
    );
    agents.push(
      await startAgent(join(dir, "vms", "vm-2", "agent.sock"), { args: ["--id", "vm-2"] }),
    );
    await until("vm-2 up", async () =>
      (await states()).get("vm-2")?.state === "up" ? true : undefined,
    );
    const ls = await runCli(["ls"], { env: env() });
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^ID\s+STATE/m);
    assert.match(ls.stdout, /^vm-1\s+up\s/m);
    assert.match(ls.stdout, /^vm-2\s+up\s/m);
    const json = await runCli(["ls", "--json"], { env: env() });
    const listed = JSON.parse(json.stdout) as { schemaVersion: number; agents: Snapshot[] };
    assert.equal(listed.schemaVersion, 1);
    assert.deepEqual(listed.agents.map((a) => [a.id, a.source]).sort(), [
      ["vm-1", "discovered"],
      ["vm-2", "discovered"],
    ]);
  });

  it("runs commands and copies files through @ID with the same exit status, stdin and errors as a direct address", async () => {
    const r = await runCli(["exec", "@vm-1", "--", "sh", "-c", "cat; echo err >&2; exit 3"], {
      env: env(),
      stdin: "through the daemon\n",
    });
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, "through the daemon\n");
    assert.equal(r.stderr, "err\n");
    const src = join(dir, "src.bin");
    writeFileSync(src, Buffer.alloc(300_000, 7));
    const put = await runCli(["put", "@vm-2", src, join(dir, "vms", "vm-2", "copy.bin")], {
      env: env(),
    });
    assert.equal(put.code, 0, put.stderr);
    const get = await runCli(
      ["get", "@vm-2", join(dir, "vms", "vm-2", "copy.bin"), join(dir, "back.bin")],
      {
        env: env(),
      },
    );
    assert.equal(get.code, 0, get.stderr);
    assert.deepEqual(readFileSync(join(dir, "back.bin")), readFileSync(src));
    const unknown = await runCli(["exec", "@vm-9", "--", "true"], { env: env() });
    assert.equal(unknown.code, 255);
    assert.match(unknown.stderr, /no agent vm-9.*\[AGENT_NOT_FOUND\]/);
    const noDaemon = await runCli(["exec", "@vm-1", "--", "true"], {
      env: { GUESTLINK_SOCKET: join(dir, "nothing.sock") },
    });
    assert.equal(noDaemon.code, 255);
    assert.match(
      noDaemon.stderr,
      /no guestlink daemon answers on .*nothing\.sock.*\[DAEMON_UNREACHABLE\]/,
    );
  });

  it("an agent killed goes down, started again comes back up; its socket vanishing drops it", async () => {
    const events: string[] = [];
    const stream = request({ socketPath: socket, path: "/v1/events" }, (res) => {
      res.setEncoding("utf8").on("data", (d: string) => {
        for (const m of d.matchAll(/^data: (.*)$/gm)) {
          const e = JSON.parse(m[1] as string) as { type: string; id?: string; state?: string };
          if (e.type === "state") events.push(`${e.id}:${e.state}`);
          else if (e.type === "removed" || e.type === "added") events.push(`${e.id}:${e.type}`);
        }
      });
    });
    stream.end();
    try {
      const vm2 = agents.find((a) => a.address.includes("vm-2")) as AgentProcess;
      await vm2.kill();
      await until("vm-2 down", async () =>
        (await states()).get("vm-2")?.state === "down" ? true : undefined,
      );
      // Same socket path, a new process: the daemon reconnects (a new session: it restarted).
      agents.push(
        await startAgent(join(dir, "vms", "vm-2", "agent.sock"), { args: ["--id", "vm-2"] }),
      );
      await until("vm-2 up again", async () =>
        (await states()).get("vm-2")?.state === "up" ? true : undefined,
      );
      assert.ok(((await states()).get("vm-2")?.reconnects ?? 0) >= 1);
      // The agent stops for good and its socket goes: the daemon lets go of it.
      const again = agents.at(-1) as AgentProcess;
      await again.kill();
      rmSync(join(dir, "vms", "vm-2", "agent.sock"), { force: true });
      await until("vm-2 removed", async () => ((await states()).has("vm-2") ? undefined : true));
      const gone = await api(socket, "/v1/agents/vm-2");
      assert.equal(gone.status, 404);
      assert.equal(gone.body.code, "AGENT_NOT_FOUND");
      await until("the events", () => (events.includes("vm-2:removed") ? true : undefined));
      assert.ok(events.includes("vm-2:down"), events.join(" "));
      assert.ok(events.indexOf("vm-2:down") < events.lastIndexOf("vm-2:up"), events.join(" "));
    } finally {
      stream.destroy();
    }
  });

  it("holds an agent that dials in, known by the id in its HELLO", async () => {
    dialler = spawn(
      process.execPath,
      guestlinkArgs(["agent", "--connect", `unix:${join(dir, "dial-in.sock")}`, "--id", "edge-1"]),
      { stdio: "ignore" },
    );
    await until("edge-1 up", async () =>
      (await states()).get("edge-1")?.state === "up" ? true : undefined,
    );
    assert.equal((await states()).get("edge-1")?.source, "dialled-in");
    const r = await runCli(["exec", "@edge-1", "--", "echo", "dialled"], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "dialled\n");
  });

  it("answers unknown paths with a JSON error, and stops on SIGTERM with exit 0", async () => {
    const r = await api(socket, "/v2/whatever");
    assert.equal(r.status, 404);
    assert.equal(r.body.code, "NOT_FOUND");
    assert.ok(serve);
    serve.kill("SIGTERM");
    const [code] = await once(serve, "close");
    assert.equal(code, 0, serveErr);
    serve = undefined;
  });

  it("refuses a non-loopback --http and a bad --agent before starting anything (exit 5)", async () => {
    const wide = await runCli(["serve", "--http", "0.0.0.0:7780", "--socket", join(dir, "x.sock")]);
    assert.equal(wide.code, 5, wide.stderr);
    assert.match(wide.stderr, /0\.0\.0\.0 is not a loopback address.*\[CONFIG_INVALID\]/);
    const bad = await runCli(["serve", "--agent", "vm-1", "--socket", join(dir, "x.sock")]);
    assert.equal(bad.code, 5, bad.stderr);
    assert.match(bad.stderr, /write ID=ADDRESS/);
  });
});

/**
 * The daemon's `GET /metrics` with real agent processes: the per-agent series and their values,
 * calls forwarded through `@ID` counted by method and outcome, the text accepted by
 * `promtool check metrics`, an agent killed going down in the series, and an agent whose socket
 * vanished gone from them.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { get, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import { remoteExec } from "../../src/controller/exec.ts";
import { openDaemonSession } from "../../src/daemon/client.ts";
import { readServeConfig } from "../../src/daemon/config.ts";
import { Daemon } from "../../src/daemon/daemon.ts";
import { isGuestlinkError } from "../../src/errors.ts";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { textSink } from "../helpers/output-check.ts";
import { requires } from "../helpers/requires.ts";
import { until } from "../helpers/until.ts";

interface Scrape {
  status: number;
  contentType: string;
  text: string;
}

function scrape(hostPort: string): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    get(`http://${hostPort}/metrics`, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (d: string) => {
        text += d;
      });
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          contentType: String(res.headers["content-type"]),
          text,
        }),
      );
    }).on("error", reject);
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = l[2] as string;
    }
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The samples named `name` whose labels include `labels`. */
function find(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}

/** The one sample named `name` with `labels`; fails when there is none or more than one. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = find(samples, name, labels);
  assert.equal(found.length, 1, `${name}${JSON.stringify(labels)}: ${found.length} samples`);
  return (found[0] as Sample).value;
}

/** `promtool check metrics` on `text`: its exit status and what it said. */
function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("promtool", ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

describe("the daemon's /metrics (real agents, calls through @ID)", () => {
  let dir = "";
  let daemon: Daemon | undefined;
  const agents = new Map<string, AgentProcess>();
  let http = "";
  let socket = "";
  const samples = async () => parse((await scrape(http)).text);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-metrics-"));
    socket = join(dir, "api", "serve.sock");
    for (const id of ["vm-a", "vm-b"]) {
      mkdirSync(join(dir, "vms", id), { recursive: true });
      agents.set(id, await startAgent(join(dir, "vms", id, "agent.sock"), { args: ["--id", id] }));
    }
    daemon = await Daemon.start(
      readServeConfig({
        discover: [`${join(dir, "vms")}/*/agent.sock`],
        socket,
        http: "127.0.0.1:0",
      }),
      { discoverPollMs: 100 },
    );
    http = daemon.httpAddress as string;
    await until("both agents up", () =>
      [...(daemon as Daemon).agents.values()].filter((a) => a.state === "up").length === 2
        ? true
        : undefined,
    );
  });

  after(async () => {
    await daemon?.close();
    for (const a of agents.values()) await a.kill();
    await rm(dir, { recursive: true, force: true });
  });

  it("has every agent's figures and the calls forwarded, by method and outcome", async () => {
    const session = await openDaemonSession("vm-a", { socketPath: socket });
    try {
      await session.call("info");
      const stdout = textSink();
      const result = await remoteExec(
        session,
        { argv: ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x"] },
        { stdout, stderr: new PassThrough() },
      );
      assert.equal(result.status, 0);
      assert.equal(stdout.text().length, 5000);
      await assert.rejects(session.call("no.such.method"), (err) =>
        isGuestlinkError(err, "METHOD_NOT_FOUND"),
      );
    } finally {
      await session.close();
    }

    const r = await scrape(http);
    assert.equal(r.status, 200);
    assert.match(r.contentType, /^text\/plain; version=0\.0\.4/);
    // The round trip is measured by the sessions' keepalive: wait for vm-b's first.
    const s = await until("both round trips", async () => {
      const s = await samples();
      return find(s, "guestlink_agent_round_trip_seconds").length === 2 ? s : undefined;
    });

    for (const agent of ["vm-a", "vm-b"]) {
      assert.equal(value(s, "guestlink_agent_up", { agent }), 1);
      for (const state of ["connecting", "up", "stalled", "down"]) {
        assert.equal(
          value(s, "guestlink_agent_state", { agent, state }),
          state === "up" ? 1 : 0,
          `${agent} ${state}`,
        );
      }
      const rtt = value(s, "guestlink_agent_round_trip_seconds", { agent });
      assert.ok(rtt > 0 && rtt < 5, `round trip ${rtt} s: seconds, not milliseconds`);
      const offset = value(s, "guestlink_agent_clock_offset_seconds", { agent });
      assert.ok(Math.abs(offset) < 5, `clock offset ${offset} s: the same host's clock`);
      for (const counter of ["reconnects", "resumes", "restarts", "frames_skipped_bytes"]) {
        assert.equal(value(s, `guestlink_agent_${counter}_total`, { agent }), 0, counter);
      }
      for (const reason of ["header", "payload"]) {
        assert.equal(value(s, "guestlink_agent_bad_frames_total", { agent, reason }), 0);
      }
    }
    // The exec's 5000 bytes of stdout came from vm-a over the daemon's session to it.
    const received = value(s, "guestlink_agent_stream_bytes_total", {
      agent: "vm-a",
      direction: "received",
    });
    assert.ok(received >= 5000, `vm-a received ${received}`);
    assert.equal(
      value(s, "guestlink_agent_stream_bytes_total", { agent: "vm-b", direction: "received" }),
      0,
    );
    assert.equal(find(s, "guestlink_agent_stream_bytes_total", { direction: "sent" }).length, 2);

    assert.equal(value(s, "guestlink_daemon_agents", { source: "discovered" }), 2);
    assert.equal(value(s, "guestlink_daemon_agents", { source: "config" }), 0);
    assert.equal(value(s, "guestlink_daemon_agents", { source: "dialled-in" }), 0);

    // Only the calls made through the daemon: its own `info` to each agent is not one of them.
    assert.deepEqual(
      find(s, "guestlink_daemon_calls_total")
        .map((c) => `${c.labels.method} ${c.labels.code} ${c.value}`)
        .sort(),
      ["exec OK 1", "info OK 1", "other METHOD_NOT_FOUND 1"],
    );
    for (const method of ["info", "exec", "other"]) {
      assert.equal(value(s, "guestlink_daemon_call_duration_seconds_count", { method }), 1);
      const sum = value(s, "guestlink_daemon_call_duration_seconds_sum", { method });
      assert.ok(sum > 0 && sum < 30, `${method} took ${sum} s`);
      assert.equal(
        value(s, "guestlink_daemon_call_duration_seconds_bucket", { method, le: "+Inf" }),
        1,
      );
    }

    // The daemon's own process, under the names every Prometheus client gives them.
    assert.ok(value(s, "process_resident_memory_bytes") > 0);
    assert.ok(value(s, "process_start_time_seconds") > 1e9);
    assert.equal(find(s, "nodejs_version_info").length, 1);
    assert.equal(find(s, "guestlink_daemon_build_info").length, 1);
  });

  it("passes promtool check metrics", { skip: requires("promtool") }, async () => {
    const { text } = await scrape(http);
    const lint = await promtool(text);
    assert.equal(lint.code, 0, `promtool check metrics:\n${lint.output}`);
    assert.equal(lint.output.trim(), "");
  });

  it("shows an agent killed as down, and drops its series once its socket vanishes", async () => {
    await (agents.get("vm-b") as AgentProcess).kill();
    const down = await until("vm-b down", async () => {
      const s = await samples();
      return value(s, "guestlink_agent_state", { agent: "vm-b", state: "down" }) === 1
        ? s
        : undefined;
    });
    assert.equal(value(down, "guestlink_agent_up", { agent: "vm-b" }), 0);
    assert.equal(value(down, "guestlink_agent_reconnects_total", { agent: "vm-b" }), 1);
    assert.equal(find(down, "guestlink_agent_round_trip_seconds", { agent: "vm-b" }).length, 0);
    assert.equal(find(down, "guestlink_agent_clock_offset_seconds", { agent: "vm-b" }).length, 0);

    rmSync(join(dir, "vms", "vm-b", "agent.sock"), { force: true });
    const gone = await until("vm-b's series gone", async () => {
      const r = await scrape(http);
      return r.text.includes('agent="vm-b"') ? undefined : r;
    });
    const s = parse(gone.text);
    assert.equal(value(s, "guestlink_agent_up", { agent: "vm-a" }), 1);
    assert.equal(value(s, "guestlink_daemon_agents", { source: "discovered" }), 1);
    // What was counted of calls stays: it is the daemon's, not the agent's.
    assert.equal(value(s, "guestlink_daemon_calls_total", { method: "exec", code: "OK" }), 1);
    if (!requires("promtool")) {
      const lint = await promtool(gone.text);
      assert.equal(lint.code, 0, lint.output);
    }
  });

  it("answers HEAD with the headers alone, and only GET and HEAD", async () => {
    const head = await new Promise<{ status: number; length: string; body: string }>(
      (resolve, reject) => {
        const req = get(`http://${http}/metrics`, { method: "HEAD" }, (res) => {
          let body = "";
          res.setEncoding("utf8").on("data", (d: string) => {
            body += d;
          });
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              length: String(res.headers["content-length"]),
              body,
            }),
          );
        });
        req.on("error", reject);
      },
    );
    assert.equal(head.status, 200);
    assert.ok(Number(head.length) > 0);
    assert.equal(head.body, "");
    const post = await new Promise<number>((resolve, reject) => {
      const req = request(`http://${http}/metrics`, { method: "POST" }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
    assert.equal(post, 404);
  });
});

/**
 * Finding agents on NATS (the NATS service protocol, src/transport/nats-service.ts) with real
 * nats-servers: `guestlink ls --nats` lists the agents of a cluster whichever server they are on,
 * `guestlink serve --discover nats://…` holds them live (one that starts later is picked up, one
 * that stops is dropped), and the bundled agent does the same with its NATS client beside it.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentProcess, startAgentAt } from "../helpers/agent-process.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { type NatsServer, startNatsServers } from "../helpers/nats-server.ts";
import { requires } from "../helpers/requires.ts";
import { until } from "../helpers/until.ts";

const skip = requires("nats-server");

describe("nats discovery", { skip }, () => {
  let servers: NatsServer[] & { stop(): Promise<void> };
  const agents: AgentProcess[] = [];
  let dir: string;
  const url = (i: number) => (servers[i] as NatsServer).url;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "guestlink-nats-discovery-"));
    servers = await startNatsServers(3);
    agents.push(await startAgentAt(`${url(0)}/io-1`));
    agents.push(await startAgentAt(`${url(1)}/io-2`));
    agents.push(await startAgentAt(`${url(1)}/db-1`));
  });

  after(async () => {
    for (const a of agents) await a.kill();
    await servers?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("ls --nats lists every agent of the cluster, from any server; --match narrows it", async () => {
    const all = await runCli(["ls", "--nats", url(2)]);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /^ID\s+ADDRESS\s+HOST\s+VERSION\s+SESSIONS\s+SERVICES$/m);
    for (const id of ["io-1", "io-2", "db-1"]) {
      assert.match(all.stdout, new RegExp(`^${id}\\s+nats://127\\.0\\.0\\.1:\\d+/${id}\\s`, "m"));
    }
    const some = await runCli(["ls", "--json", "--nats", url(2), "--match", "io-*"]);
    assert.equal(some.code, 0, some.stderr);
    const listed = JSON.parse(some.stdout) as { agents: { id: string; address: string }[] };
    assert.deepEqual(
      listed.agents.map((a) => a.id),
      ["io-1", "io-2"],
    );
    // What ls prints is an address that works.
    const r = await runCli([
      "exec",
      (listed.agents[1] as { address: string }).address,
      "--",
      "echo",
      "ok",
    ]);
    assert.equal(r.stdout, "ok\n", r.stderr);
  });

  it("ls --nats with a bad query or an unreachable server says so in one line", async () => {
    const bad = await runCli(["ls", "--nats", "nats://127.0.0.1:1/io.*"]);
    assert.equal(bad.code, 255);
    assert.match(bad.stderr, /^guestlink: --nats .*not an agent-id pattern.*\[INVALID_OPTION\]\n$/);
    const none = await runCli(["ls", "--nats", "nats://127.0.0.1:1"]);
    assert.equal(none.code, 255);
    assert.match(
      none.stderr,
      /^guestlink: cannot reach the NATS server at .*\[CONNECT_FAILED\]\n$/,
    );
  });

  it("the agents answer the NATS service protocol's PING, INFO and STATS", async () => {
    // Through the library's own client: what `nats micro ls` would send.
    const { connect } = (await import(
      "@nats-io/transport-node"
    )) as typeof import("@nats-io/transport-node");
    const nc = await connect({ servers: url(0) });
    try {
      const ping = JSON.parse((await nc.request("$SRV.PING.guestlink.io-2", "")).string());
      assert.equal(ping.type, "io.nats.micro.v1.ping_response");
      assert.equal(ping.id, "io-2");
      const info = JSON.parse((await nc.request("$SRV.INFO.guestlink.io-1", "")).string());
      assert.equal(info.endpoints[0].subject, "guestlink.agent.io-1.open");
      const stats = JSON.parse((await nc.request("$SRV.STATS.guestlink.io-1", "")).string());
      assert.equal(stats.type, "io.nats.micro.v1.stats_response");
      assert.ok(stats.endpoints[0].num_requests >= 0);
    } finally {
      await nc.close();
    }
  });

  it("serve --discover nats://… holds the agents found, live", async () => {
    const socket = join(dir, "serve.sock");
    const env = { GUESTLINK_SOCKET: socket };
    const serve = startCli([
      "serve",
      "--discover",
      `${url(2)}/io-*`,
      "--socket",
      socket,
      "--http",
      "off",
    ]);
    let serveErr = "";
    serve.stderr.setEncoding("utf8").on("data", (d: string) => {
      serveErr += d;
    });
    try {
      await until(`the daemon (${serveErr})`, () =>
        serveErr.includes("daemon running") ? true : undefined,
      );
      const upIds = async () => {
        const ls = await runCli(["ls", "--json"], { env });
        const { agents: held } = JSON.parse(ls.stdout) as {
          agents: { id: string; state: string }[];
        };
        return held
          .filter((a) => a.state === "up")
          .map((a) => a.id)
          .sort()
          .join(",");
      };
      await until("io-1 and io-2 held", async () =>
        (await upIds()) === "io-1,io-2" ? true : undefined,
      );
      const late = await startAgentAt(`${url(0)}/io-3`);
      agents.push(late);
      await until("io-3 picked up", async () =>
        (await upIds()) === "io-1,io-2,io-3" ? true : undefined,
      );
      const r = await runCli(["exec", "@io-3", "--", "echo", "through the daemon"], { env });
      assert.equal(r.stdout, "through the daemon\n", r.stderr);
      await late.kill();
      await until("io-3 dropped", async () => ((await upIds()) === "io-1,io-2" ? true : undefined));
    } finally {
      serve.kill("SIGKILL");
      await once(serve, "close");
    }
  });

  it("a fleet run's plan names its agents by a NATS query, across the cluster", async () => {
    const plan = join(dir, "nats-plan.yaml");
    await writeFile(
      plan,
      `name: over-nats\nagents: { nats: "${url(2)}", match: "io-*" }\nstart_delay: 300ms\nstages:\n  - name: main\n    duration: 1s\n    workload: { io: { dir: ${dir}/data, files: 4, size: 4KiB, concurrency: 2, mix: { write: 1, stat: 1 } } }\n`,
    );
    const results = join(dir, "nats-results");
    const r = await runCli(["run", plan, "--results", results]);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(await readFile(join(results, "summary.json"), "utf8"));
    assert.equal(summary.outcome, "completed");
    assert.deepEqual(
      summary.agents.map((a: { id: string; state: string }) => [a.id, a.state]).sort(),
      [
        ["io-1", "COMPLETED"],
        ["io-2", "COMPLETED"],
      ],
    );
    // A query nothing matches is a plan that cannot run: PLAN_INVALID, exit 5, one line.
    const none = join(dir, "none-plan.yaml");
    await writeFile(
      none,
      `name: none\nagents: { nats: "${url(2)}/web-*" }\nstages:\n  - name: s\n    workload: { io: { dir: ${dir}/n, files: 1, size: 1, op: write } }\n`,
    );
    const bad = await runCli(["run", none]);
    assert.equal(bad.code, 5, bad.stderr);
    assert.match(
      bad.stderr,
      /^guestlink: .*agents: no agent on nats:\/\/127\.0\.0\.1:\d+ matching web-\* answered.*\[PLAN_INVALID\]\n$/,
    );
  });

  it("the bundled agent without its NATS client file says what is missing, in one line", async () => {
    const alone = join(dir, "alone");
    await mkdir(alone);
    await copyFile("dist/guestlink-agent.cjs", join(alone, "guestlink-agent.cjs"));
    const child = spawn(
      process.execPath,
      [join(alone, "guestlink-agent.cjs"), "--listen", `${url(1)}/alone`],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const [code] = await once(child, "close");
    assert.equal(code, 255);
    assert.match(
      stderr,
      /^guestlink: nats: addresses need the NATS client, .*guestlink-agent-nats\.cjs next to the bundled agent \[TRANSPORT_UNSUPPORTED\]\n$/,
    );
  });

  it("the bundled agent loads its NATS client from the file beside it, and only for nats:", async () => {
    const bundle = await readFile("dist/guestlink-agent.cjs", "utf8");
    assert.doesNotMatch(bundle, /NatsConnectionImpl/);
    const child = spawn(
      process.execPath,
      ["dist/guestlink-agent.cjs", "--listen", `${url(1)}/bundled`],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let log = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      log += d;
    });
    try {
      await until(`the bundled agent (${log})`, () =>
        log.includes("agent started") ? true : undefined,
      );
      const r = await runCli(["exec", `${url(2)}/bundled`, "--", "echo", "bundled"]);
      assert.equal(r.stdout, "bundled\n", r.stderr);
    } finally {
      child.kill("SIGKILL");
      await once(child, "close");
    }
  });
});

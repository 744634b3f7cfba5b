/**
 * A fleet run whose connection to an agent is cut mid-stage: the session resumes, the agent is
 * neither failed nor stalled, and every stats record it sent arrives (late, not lost).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { Agent } from "../../src/agent/agent.ts";
import { type RunningAgent, runAgent } from "../../src/agent/run.ts";
import { FleetRun, type RunEvent } from "../../src/controller/run/fleet.ts";
import { parsePlan } from "../../src/controller/run/plan.ts";
import { nodeKeepAliveClock } from "../../src/platform/node.ts";
import { openSession } from "../../src/platform/session.ts";

const silent = { info() {}, warn() {}, error() {}, debug() {} };
let dir: string;
let agent: RunningAgent;
let relay: net.Server;
const open = new Set<net.Socket>();

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-fleet-resume-"));
  const target = join(dir, "agent.sock");
  agent = await runAgent({
    agent: new Agent({ id: "far" }),
    listen: [`unix:${target}`],
    log: silent,
  });
  // A link the test can cut: a Unix socket forwarding to the agent's.
  relay = net.createServer((client) => {
    const upstream = net.connect(target);
    for (const s of [client, upstream]) {
      open.add(s);
      s.on("close", () => open.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => relay.listen(join(dir, "relay.sock"), resolve));
});
after(async () => {
  relay.close();
  await agent.stop();
  await rm(dir, { recursive: true, force: true });
});

it("rides out a cut connection: resumed, not failed or stalled, and every record arrives", async () => {
  const plan = parsePlan(
    `name: r\nagents:\n  - { id: far, address: "unix:${join(dir, "relay.sock")}" }\nstart_delay: 200ms\ntimeouts: { silence: 30s }\nstages:\n  - name: s\n    duration: 2500ms\n    workload: { io: { dir: ${join(dir, "d")}, files: 4, size: 1KiB, concurrency: 2, mix: { write: 1, stat: 1 } } }\n`,
    "r.yaml",
  );
  const events: RunEvent[] = [];
  let cut = false;
  const run = new FleetRun({
    plan,
    clock: nodeKeepAliveClock,
    intervalMs: 200,
    connect: (a, signal) => openSession(a.address, { signal }),
    onEvent(e) {
      events.push(e);
      if (!cut && e.type === "interval" && e.interval.stage === "s") {
        cut = true;
        for (const s of open) s.destroy();
      }
    },
  });
  const result = await run.run();
  assert.equal(result.outcome, "completed", result.reason);
  const links = events.flatMap((e) => (e.type === "link" ? [e.up] : []));
  assert.deepEqual(links.slice(0, 2), [false, true], "the connection dropped and resumed");
  assert.equal(events.filter((e) => e.type === "stalled").length, 0);
  const records = events.filter((e) => e.type === "interval").length;
  const machine = result.agents[0]?.stages.get("s");
  assert.equal(machine?.state, "COMPLETED");
  assert.ok(records >= 10, `${records} records over 2.5 s at 200 ms`);
  const totals = result.stats.agents.get("far")?.get("s");
  const counted = [...(totals?.ops.values() ?? [])].reduce((sum, op) => sum + op.count, 0);
  assert.ok(counted > 0);
});

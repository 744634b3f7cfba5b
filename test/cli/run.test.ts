/**
 * `guestlink run PLAN` as users run it: the CLI and three agents, each a process of its own, on
 * Unix sockets; the run's exit status, its NDJSON, and its results folder.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type AgentProcess, startAgent } from "../helpers/agent-process.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { processesMatching } from "../helpers/processes.ts";

let dir: string;
const agents: AgentProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "guestlink-run-"));
});
after(async () => {
  await Promise.all(agents.map((a) => a.kill()));
  await rm(dir, { recursive: true, force: true });
});

async function startAgents(n: number, tag: string): Promise<AgentProcess[]> {
  const started = await Promise.all(
    Array.from({ length: n }, (_, i) => startAgent(join(dir, `${tag}${i + 1}.sock`))),
  );
  agents.push(...started);
  return started;
}

const agentList = (list: { id: string; address: string }[]) =>
  `agents:\n${list.map((a) => `  - { id: ${a.id}, address: "${a.address}" }`).join("\n")}\n`;

interface Event {
  schemaVersion: number;
  type: string;
  [key: string]: unknown;
}

/** Runs `guestlink run` with --json; `onEvent` may act on each event as it comes. */
function runWithEvents(
  args: string[],
  onEvent: (e: Event) => void,
): Promise<{ code: number | null; events: Event[]; stderr: string }> {
  const child = startCli(["run", ...args, "--json"]);
  const events: Event[] = [];
  let pending = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    pending += chunk;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const e = JSON.parse(pending.slice(0, nl)) as Event;
      pending = pending.slice(nl + 1);
      events.push(e);
      onEvent(e);
    }
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  child.stdin.end();
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, events, stderr })));
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => `vm-${i + 1}`);

describe("guestlink run", () => {
  it("goes on without an agent killed mid-stage: exit 2, the others' results complete", async () => {
    const procs = await startAgents(3, "k");
    const list = procs.map((p, i) => ({ id: ids(3)[i] as string, address: p.address }));
    const plan = join(dir, "killed.yaml");
    await writeFile(
      plan,
      `name: killed\n${agentList(list)}start_delay: 300ms\ntimeouts: { lost: 1s }\nstages:\n  - name: main\n    duration: 3s\n    barrier: { min: 2 }\n    workload: { io: { dir: ${dir}/data, files: 8, size: 4KiB, concurrency: 2, mix: { write: 1, stat: 1 } } }\n`,
    );
    const results = join(dir, "killed-results");
    let killed = false;
    const { code, events, stderr } = await runWithEvents([plan, "--results", results], (e) => {
      if (!killed && e.type === "interval" && (e.agent as string) === "vm-3") {
        killed = true;
        void procs[2]?.kill();
      }
    });
    assert.equal(code, 2, stderr);
    assert.ok(events.every((e) => e.schemaVersion === 1 && typeof e.type === "string"));
    const summary = JSON.parse(await readFile(join(results, "summary.json"), "utf8"));
    assert.equal(summary.outcome, "partial");
    assert.deepEqual(
      summary.agents.map((a: { id: string; state: string }) => [a.id, a.state]),
      [
        ["vm-1", "COMPLETED"],
        ["vm-2", "COMPLETED"],
        ["vm-3", "FAILED"],
      ],
    );
    assert.equal(summary.agents[2].stages[0].cause, "lost");
    for (const a of summary.agents.slice(0, 2)) {
      assert.ok(a.stages[0].operations.write.count > 0, `${a.id} wrote`);
      assert.equal(a.stages[0].operations.write.errors, 0);
    }
    const last = events.at(-1) as Event;
    assert.equal(last.type, "summary");
    const tsv = await readFile(join(results, "results.tsv"), "utf8");
    assert.match(
      tsv,
      /^stage\toperation\tcount\terrors\tops_per_sec\tmib_per_sec\tmean_us\tp50_us\tp90_us\tp95_us\tp99_us\tp999_us\tmax_us\nmain\t/,
    );
    for (const f of [
      "plan.yaml",
      "perf_log.tsv",
      "report.html",
      "histograms/merged.hlog",
      "histograms/vm-1.hlog",
      "agents/vm-2/results.tsv",
    ]) {
      assert.ok((await readFile(join(results, f), "utf8")).length > 0, f);
    }
  });

  it("ends with exit 4 when an agent cannot be reached and the barrier needs it", async () => {
    const [p] = await startAgents(1, "u");
    const plan = join(dir, "unreachable.yaml");
    await writeFile(
      plan,
      `name: unreachable\n${agentList([
        { id: "up", address: (p as AgentProcess).address },
        { id: "down", address: `unix:${dir}/nobody.sock` },
      ])}timeouts: { connect: 1s }\nstages:\n  - name: s\n    workload: { io: { dir: ${dir}/u, files: 1, size: 1, op: write } }\n`,
    );
    const r = await runCli(["run", plan, "--results", join(dir, "u-results")]);
    assert.equal(r.code, 4, r.stderr + r.stdout);
    assert.match(
      r.stdout,
      /run unreachable: unreachable \(exit 4\): stage s: the barrier \(all\) needs 2 of 2 agents, and 1 can go on/,
    );
    assert.match(r.stdout, /down: FAILED: not reached within 1000 ms/);
  });

  it("aborts on Ctrl-C: exit 3, every agent confirms, no workload process left", async () => {
    const procs = await startAgents(2, "c");
    const marker = `sleep 77${process.pid}`;
    const plan = join(dir, "abort.yaml");
    await writeFile(
      plan,
      `name: abort\n${agentList(procs.map((p, i) => ({ id: ids(2)[i] as string, address: p.address })))}start_delay: 200ms\nstages:\n  - name: long\n    duration: 600s\n    workload: { command: { argv: ["sh", "-c", "${marker}; true"], concurrency: 2 } }\n`,
    );
    const child = startCli(["run", plan, "--results", join(dir, "abort-results")]);
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    const running = () => processesMatching(marker).length;
    for (let i = 0; i < 400 && running() < 8; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(running(), 8, "two agents, two runs each of sh and sleep");
    child.kill("SIGINT");
    const code = await new Promise((resolve) => child.on("close", resolve));
    assert.equal(code, 3, out);
    assert.equal(running(), 0, "no workload process is left");
    assert.match(out, /run abort: aborted \(exit 3\)/);
    const summary = JSON.parse(await readFile(join(dir, "abort-results", "summary.json"), "utf8"));
    assert.deepEqual(
      summary.agents.map((a: { state: string }) => a.state),
      ["ABORTED", "ABORTED"],
    );
  });

  it("refuses an invalid plan with exit 5 and one line naming the key, before connecting", async () => {
    const plan = join(dir, "bad.yaml");
    await writeFile(
      plan,
      `name: bad\n${agentList([{ id: "a", address: "unix:/nonexistent.sock" }])}stages:\n  - name: s\n    workload: { io: { dir: /x, size: 12 parsecs, op: write } }\n`,
    );
    const r = await runCli(["run", plan]);
    assert.equal(r.code, 5);
    assert.equal(
      r.stderr,
      `guestlink: ${plan}: stages[0].workload.io.size: "12 parsecs" is not a size: write bytes, or a number with KiB, MiB, GiB (1024s) or KB, MB, GB (1000s), e.g. "64KiB" [PLAN_INVALID]\n`,
    );
    assert.equal(r.stdout, "");
  });

  it("--dry-run reaches every agent and runs nothing", async () => {
    const [p] = await startAgents(1, "d");
    const plan = join(dir, "dry.yaml");
    await writeFile(
      plan,
      `name: dry\n${agentList([{ id: "a", address: (p as AgentProcess).address }])}stages:\n  - name: s\n    workload: { io: { dir: ${dir}/never, files: 1, size: 1, op: write } }\n`,
    );
    const r = await runCli(["run", plan, "--dry-run"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^a unix:.*: reachable clock [+-]\d+\.\d ms ± \d+\.\d\d\nplan is valid and every agent is reachable\n$/,
    );
    await assert.rejects(readFile(join(dir, "never", "guestlink-0.dat")), { code: "ENOENT" });
  });
});

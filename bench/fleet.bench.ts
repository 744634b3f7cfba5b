/**
 * Fleet runs (`guestlink run`):
 *
 * 1. Start spread: 8 agent processes, each under faketime with its wall clock seconds to a
 *    minute off ours (the monotonic clock left alone), run a one-operation stage together;
 *    the spread is the latest minus the earliest actual start, each converted to our clock
 *    through its measured offset (what summary.json reports). Median and max over runs.
 * 2. The controller's cost: N simulated agents in this process (in-memory session pairs), each
 *    sending one stats record a second with a realistic histogram per operation type; the
 *    process's CPU time per interval and its memory, for N = 100, 300, 1000. Alongside, the
 *    merge alone (decode, add, summarize: what the controller does per record), without sessions.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { FleetRun } from "../src/controller/run/fleet.ts";
import { RunStats } from "../src/controller/run/merge.ts";
import { parsePlan } from "../src/controller/run/plan.ts";
import { runPlan } from "../src/controller/run/run-plan.ts";
import { encodeHistogram, newHistogram, recordMicros } from "../src/fleet/histogram.ts";
import type { StatsRecord } from "../src/fleet/protocol.ts";
import { nodeKeepAliveClock, nodeRuntime } from "../src/platform/node.ts";
import { Session } from "../src/session/session.ts";
import { memoryPair } from "../src/transport/memory.ts";
import { type BenchOptions, type BenchReport, formatNumber, median, round, table } from "./lib.ts";

const BIN = fileURLToPath(new URL("../bin/guestlink", import.meta.url));
const SKEWS_S = [-45, -12, -3, -0.5, 0, 0.25, 7, 30];
const AIM_SPREAD_MS = 1;

async function startSkewedAgent(path: string, skewS: number): Promise<ChildProcess> {
  const child = spawn(
    "faketime",
    [
      "-f",
      `${skewS >= 0 ? "+" : ""}${skewS}s`,
      process.execPath,
      BIN,
      "agent",
      "--listen",
      `unix:${path}`,
      "--log-level",
      "info",
    ],
    {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, FAKETIME_DONT_FAKE_MONOTONIC: "1" },
    },
  );
  await new Promise<void>((resolve, reject) => {
    let log = "";
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      log += d;
      if (log.includes("agent started")) resolve();
    });
    child.once("exit", (code) =>
      reject(new Error(`agent under faketime exited (${code}): ${log}`)),
    );
  });
  return child;
}

async function startSpread(
  skews: readonly number[],
  runs: number,
): Promise<{ spreads: number[]; offsets: number[] }> {
  const dir = await mkdtemp(join(tmpdir(), "guestlink-bench-fleet-"));
  const agents: ChildProcess[] = [];
  try {
    for (const [i, skew] of SKEWS_S.entries())
      agents.push(await startSkewedAgent(join(dir, `a${i}.sock`), skew));
    const plan = join(dir, "plan.yaml");
    await writeFile(
      plan,
      `name: spread\nagents:\n${skews.map((_, i) => `  - { id: a${i}, address: "unix:${join(dir, `a${i}.sock`)}" }`).join("\n")}\nclock: { max_skew: 60s }\nstart_delay: 500ms\nstages:\n  - name: s\n    workload: { io: { dir: ${join(dir, "d")}, files: 1, size: 1, op: write } }\n`,
    );
    const spreads: number[] = [];
    let offsets: number[] = [];
    for (let run = 0; run < runs; run++) {
      const { summary } = await runPlan({
        planPath: plan,
        resultsDir: join(dir, `r${run}`),
        output: () => ({ event() {}, tick() {}, summary() {} }),
      });
      if (summary.outcome !== "completed")
        throw new Error(`spread run ${run}: ${summary.outcome} ${summary.reason ?? ""}`);
      spreads.push(summary.stages[0]?.startSpreadMs as number);
      offsets = summary.agents.map((a) => a.clock?.offsetMs ?? Number.NaN);
    }
    return { spreads, offsets };
  } finally {
    for (const a of agents) a.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
}

/** One realistic interval record: ~800 reads and ~300 writes of 64 KiB, latencies 0.2-20 ms. */
function sampleRecord(): StatsRecord {
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const op = (count: number) => {
    const h = newHistogram();
    for (let i = 0; i < count; i++) recordMicros(h, 200 + 20_000 * random() ** 4);
    return { count, errors: 0, bytes: count * 65536, histogram: encodeHistogram(h) };
  };
  return { stage: "main", seq: 0, startMs: 0, endMs: 1000, ops: { read: op(800), write: op(300) } };
}

async function controllerCost(agents: number, seconds: number, line: string) {
  const ids = Array.from({ length: agents }, (_, i) => `sim-${i}`);
  const plan = parsePlan(
    `name: cost\nagents:\n${ids.map((id) => `  - { id: ${id}, address: "unix:/sim/${id}.sock" }`).join("\n")}\nstart_delay: 1s\ntimeouts: { connect: 120s, ready: 120s }\nstages:\n  - name: main\n    duration: ${seconds}s\n    workload: { io: { dir: /sim, files: 1, size: 1, op: read } }\n`,
    "cost.yaml",
  );
  const runtime = nodeRuntime();
  let records = 0;
  const run = new FleetRun({
    plan,
    clock: nodeKeepAliveClock,
    clockSamples: 2,
    onEvent(e) {
      if (e.type === "interval") records++;
    },
    async connect(agent) {
      const [a, b] = memoryPair({ highWaterMark: 1 << 20 });
      const client = new Session(a, {
        role: "client",
        runtime,
        keepalive: false,
        peer: { id: "c", hostname: "c", version: "b" },
      });
      const server = new Session(b, {
        role: "server",
        runtime,
        keepalive: false,
        peer: { id: agent.id, hostname: agent.id, version: "b" },
      });
      server.handle("workload.time", () => ({ wallMs: Date.now() }));
      server.handle("workload.configure", () => ({ state: "READY" }));
      server.handle("workload.run", async (params, ctx) => {
        const { startAtMs } = params as { startAtMs: number };
        await new Promise((r) => setTimeout(r, Math.max(0, startAtMs - Date.now())));
        const started = Date.now();
        const stats = ctx.streams.stats;
        for (let i = 0; i < seconds; i++) {
          await new Promise((r) => setTimeout(r, 1000));
          stats?.write(Buffer.from(line.replace('"seq":0', `"seq":${i}`)));
        }
        stats?.end();
        return {
          state: "COMPLETED",
          startedAtMs: started,
          endedAtMs: Date.now(),
          records: seconds,
        };
      });
      await client.ready;
      return client;
    },
  });
  const cpu0 = process.cpuUsage();
  const result = await run.run();
  const cpu = process.cpuUsage(cpu0);
  if (result.outcome !== "completed")
    throw new Error(`cost run with ${agents}: ${result.outcome} ${result.reason ?? ""}`);
  if (records !== agents * seconds)
    throw new Error(`expected ${agents * seconds} records, got ${records}`);
  globalThis.gc?.();
  const mem = process.memoryUsage();
  return {
    agents,
    cpuMsPerInterval: (cpu.user + cpu.system) / 1000 / (seconds + 2),
    rssMiB: mem.rss / 2 ** 20,
    heapMiB: mem.heapUsed / 2 ** 20,
  };
}

function mergeOnly(agents: number, record: StatsRecord): number {
  const stats = new RunStats();
  const start = process.cpuUsage();
  for (let i = 0; i < agents; i++) stats.add(`a${i}`, record, 0);
  stats.takeTick();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

export async function run(opts: BenchOptions): Promise<BenchReport> {
  const runs = opts.quick ? 2 : 7;
  const { spreads, offsets } = await startSpread(SKEWS_S, runs);
  // As many agents as CPUs: what the start itself costs, without agents queueing for a CPU.
  const few = SKEWS_S.filter((_, i) => i % 4 === 1).slice(0, Math.max(2, cpus().length));
  const small = await startSpread(few, runs);
  const record = sampleRecord();
  const line = `${JSON.stringify(record)}\n`;
  const sizes = opts.quick ? [100, 300] : [100, 300, 1000];
  const seconds = opts.quick ? 3 : 5;
  const costs = [];
  for (const n of sizes)
    costs.push({
      ...(await controllerCost(n, seconds, line)),
      mergeMs: median([1, 2, 3].map(() => mergeOnly(n, record))),
    });
  const spreadMedian = median(spreads);
  const spreadMax = Math.max(...spreads);
  const text = [
    `start spread: ${SKEWS_S.length} agent processes under faketime, wall clocks ${SKEWS_S.join(", ")} s off ours; ${spreads.length} runs`,
    table(
      ["", "value", "aim", "verdict"],
      [
        [
          "spread, median (ms)",
          formatNumber(spreadMedian, 3),
          `<= ${AIM_SPREAD_MS}`,
          spreadMedian <= AIM_SPREAD_MS ? "PASS" : "MISS",
        ],
        ["spread, max (ms)", formatNumber(spreadMax, 3), "", ""],
      ],
    ),
    `runs (ms): ${spreads.map((s) => s.toFixed(3)).join(" ")}`,
    `${few.length} agents (as many as CPUs), wall clocks ${few.join(", ")} s off: spread median ${formatNumber(median(small.spreads), 3)} ms, max ${formatNumber(Math.max(...small.spreads), 3)} ms (runs: ${small.spreads.map((s) => s.toFixed(3)).join(" ")})`,
    `offsets measured in the last run (ms; true offsets ${SKEWS_S.map((s) => s * 1000).join(", ")} plus each agent's start-up): ${offsets.map((o) => o.toFixed(1)).join(" ")}`,
    "",
    `controller cost: simulated agents in this process, one stats record a second each (${(line.length / 1024).toFixed(1)} KiB, histograms of 800 reads and 300 writes), ${seconds} s`,
    table(
      [
        "agents",
        "CPU ms / interval (process)",
        "merge alone, ms / interval",
        "RSS MiB",
        "heap MiB",
      ],
      costs.map((c) => [
        String(c.agents),
        formatNumber(c.cpuMsPerInterval, 1),
        formatNumber(c.mergeMs, 1),
        formatNumber(c.rssMiB, 0),
        formatNumber(c.heapMiB, 0),
      ]),
    ),
    "The process figure includes both ends of every in-memory session (framing, checksums, JSON);",
    '"merge alone" is RunStats.add for each agent\'s record (JSON already parsed): decode, add three ways, summarize.',
  ].join("\n");
  return {
    text,
    figures: {
      spread: {
        agents: SKEWS_S.length,
        runs: spreads.map((s) => round(s, 3)),
        medianMs: round(spreadMedian, 3),
        maxMs: round(spreadMax, 3),
        aimMs: AIM_SPREAD_MS,
        fewAgents: {
          agents: few.length,
          runs: small.spreads.map((s) => round(s, 3)),
          medianMs: round(median(small.spreads), 3),
        },
      },
      cost: costs.map((c) => ({
        agents: c.agents,
        cpuMsPerInterval: round(c.cpuMsPerInterval, 1),
        mergeMsPerInterval: round(c.mergeMs, 1),
        rssMiB: round(c.rssMiB),
        heapMiB: round(c.heapMiB),
      })),
    },
  };
}

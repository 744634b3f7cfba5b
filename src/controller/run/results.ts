/**
 * A fleet run's results folder (docs/fleet.md, "Results"): `plan.yaml` as run, `summary.json`,
 * `results.tsv` (merged: a row per stage and operation type), `agents/ID/results.tsv`,
 * `perf_log.tsv` (a row per agent, interval and operation type, written as they arrive),
 * `histograms/` (HdrHistogram logs: each agent's intervals as they arrive, and the merged total
 * of each stage and operation), `report.html`, and a command workload's output under
 * `agents/ID/output/STAGE/`.
 */
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Writable } from "node:stream";
import * as hdr from "hdr-histogram-js";
import { InvalidOptionError } from "../../errors.ts";
import type { Histogram } from "../../fleet/histogram.ts";
import { encodeHistogram } from "../../fleet/histogram.ts";
import type { StatsRecord } from "../../fleet/protocol.ts";
import type { AgentInterval, OpReport, RunStats } from "./merge.ts";
import { renderReport, type TickPoint } from "./report.ts";
import type { RunSummary } from "./summary.ts";

export const RESULT_COLUMNS = [
  "stage",
  "operation",
  "count",
  "errors",
  "ops_per_sec",
  "mib_per_sec",
  "mean_us",
  "p50_us",
  "p90_us",
  "p95_us",
  "p99_us",
  "p999_us",
  "max_us",
] as const;

const PERF_COLUMNS = [
  "time",
  "elapsed_s",
  "agent",
  "stage",
  "operation",
  "count",
  "errors",
  "ops_per_sec",
  "mib_per_sec",
  "p50_us",
  "p99_us",
  "p999_us",
  "max_us",
];

const fixed = (n: number, digits: number) => (Number.isFinite(n) ? n.toFixed(digits) : "0");

function resultRow(stage: string, op: string, r: OpReport): string {
  const l = r.latencyUs;
  return [
    stage,
    op,
    r.count,
    r.errors,
    fixed(r.opsPerSec, 2),
    fixed(r.mibPerSec, 3),
    fixed(l.mean, 1),
    l.p50,
    l.p90,
    l.p95,
    l.p99,
    l.p999,
    l.max,
  ].join("\t");
}

/** The default results folder: `results/NAME-YYYYMMDD-HHMMSS` (local time). */
export function defaultResultsDir(name: string, now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  const stamp = `${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}-${p(now.getHours())}${p(now.getMinutes())}${p(now.getSeconds())}`;
  return join("results", `${name}-${stamp}`);
}

export class ResultsWriter {
  readonly dir: string;
  readonly ticks: TickPoint[] = [];
  readonly #startedAtMs: number;
  readonly #perf: WriteStream;
  readonly #logs = new Map<string, WriteStream>();
  readonly #folders = new Set<string>();

  private constructor(dir: string, startedAtMs: number) {
    this.dir = dir;
    this.#startedAtMs = startedAtMs;
    this.#perf = createWriteStream(join(dir, "perf_log.tsv"));
    this.#perf.write(`${PERF_COLUMNS.join("\t")}\n`);
  }

  /** Makes `dir` (refusing one that holds files already) and writes `plan.yaml` into it. */
  static async create(dir: string, planText: string, startedAtMs: number): Promise<ResultsWriter> {
    const existing = await readdir(dir).catch(() => [] as string[]);
    if (existing.length > 0) {
      throw new InvalidOptionError(
        `the results folder ${dir} is not empty; choose another with --results, or remove it`,
        { details: { option: "results", value: dir } },
      );
    }
    await mkdir(join(dir, "histograms"), { recursive: true });
    await writeFile(join(dir, "plan.yaml"), planText);
    return new ResultsWriter(dir, startedAtMs);
  }

  /** An agent's interval: its perf-log rows and its histogram log lines. */
  interval(interval: AgentInterval, record: StatsRecord): void {
    const time = new Date(interval.atMs).toISOString();
    const elapsed = fixed((interval.atMs - this.#startedAtMs) / 1000, 3);
    let log = this.#logs.get(interval.agent);
    if (log === undefined) {
      log = createWriteStream(join(this.dir, "histograms", `${interval.agent}.hlog`));
      log.write(
        logHeader(this.#startedAtMs, `agent ${interval.agent}: each interval as it sent it`),
      );
      this.#logs.set(interval.agent, log);
    }
    for (const [op, r] of Object.entries(interval.ops)) {
      const l = r.latencyUs;
      this.#perf.write(
        `${[time, elapsed, interval.agent, interval.stage, op, r.count, r.errors, fixed(r.opsPerSec, 2), fixed(r.mibPerSec, 3), l.p50, l.p99, l.p999, l.max].join("\t")}\n`,
      );
      const encoded = record.ops[op as keyof StatsRecord["ops"]]?.histogram;
      if (encoded !== undefined) {
        const start = (interval.atMs - interval.seconds * 1000 - this.#startedAtMs) / 1000;
        log.write(
          `Tag=${interval.stage}.${op},${fixed(start, 3)},${fixed(interval.seconds, 3)},${fixed(l.max / 1000, 3)},${encoded}\n`,
        );
      }
    }
  }

  /** A command run's output stream, `agents/ID/output/STAGE/run-NNNNNN.stdout` (or stderr). */
  output(agent: string, stage: string, run: number, stream: "stdout" | "stderr"): Writable {
    const folder = join(this.dir, "agents", agent, "output", stage);
    if (!this.#folders.has(folder)) {
      mkdirSync(folder, { recursive: true });
      this.#folders.add(folder);
    }
    return createWriteStream(join(folder, `run-${String(run).padStart(6, "0")}.${stream}`));
  }

  /** Writes the summary, the tables, the merged histograms and the report; closes every file. */
  async finish(summary: RunSummary, stats: RunStats): Promise<void> {
    await Promise.all([this.#perf, ...this.#logs.values()].map(closeStream));
    await writeFile(join(this.dir, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
    const header = `${RESULT_COLUMNS.join("\t")}\n`;
    const merged = summary.stages.flatMap((s) =>
      Object.entries(s.operations).map(([op, r]) => resultRow(s.name, op, r)),
    );
    await writeFile(join(this.dir, "results.tsv"), header + merged.map((r) => `${r}\n`).join(""));
    for (const agent of summary.agents) {
      const folder = join(this.dir, "agents", agent.id);
      await mkdir(folder, { recursive: true });
      const rows = agent.stages.flatMap((s) =>
        Object.entries(s.operations).map(([op, r]) => resultRow(s.name, op, r)),
      );
      await writeFile(join(folder, "results.tsv"), header + rows.map((r) => `${r}\n`).join(""));
    }
    const histograms = new Map<string, Histogram>();
    let log = logHeader(
      this.#startedAtMs,
      "every agent merged: one histogram per stage and operation",
    );
    for (const [stage, totals] of stats.stages) {
      for (const [op, totalsOp] of totals.ops) {
        const h = totalsOp.histogram;
        histograms.set(`${stage} ${op}`, h);
        const start = (totals.startMs - this.#startedAtMs) / 1000;
        log += `Tag=${stage}.${op},${fixed(start, 3)},${fixed(totals.seconds, 3)},${fixed(h.maxValue / 1000, 3)},${encodeHistogram(h)}\n`;
      }
    }
    await writeFile(join(this.dir, "histograms", "merged.hlog"), log);
    await writeFile(join(this.dir, "report.html"), renderReport(summary, this.ticks, histograms));
  }
}

/** The header of an HdrHistogram log (format 1.3), as its own tools write it. */
function logHeader(startedAtMs: number, comment: string): string {
  let out = "";
  const writer = new hdr.HistogramLogWriter((s) => {
    out += s;
  });
  writer.outputComment(`guestlink fleet run: ${comment}; values in microseconds`);
  writer.outputLogFormatVersion();
  writer.outputStartTime(startedAtMs);
  writer.outputLegend();
  return out;
}

function closeStream(stream: WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.once("error", reject);
    stream.end(() => resolve());
  });
}

/**
 * Helper processes (`spawnHelper`), each figure beside a plain-Node baseline measured in the same
 * run, the cases taking turns so that both see the same machine load:
 *
 * 1. lines/s: `seq 1 N` (N = 1M) read through `helper.lines()`, against `node:readline` over
 *    `child_process.spawn("seq", …).stdout` (its "line" event; and, for information, its async
 *    iterator). Every run checks the count, the characters and the last line on both sides.
 * 2. jsonrpc: `helper.request("echo")` one at a time (round trip, median over N) and with 64 in
 *    flight (requests/s), against a hand-written NDJSON loop (JSON.stringify + "\n" to stdin,
 *    readline on stdout, answers matched by id in a Map). Both speak to the same program,
 *    bench/rpc-echo.mjs, a plain-Node echo server; every answer is checked against its request.
 *
 * guestlink is measured as shipped: `src/` compiled by tsc (`buildLibrary`), not as tsx runs it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Helper, HelperOptions } from "../src/controller/helpers/helper.ts";
import {
  type BenchOptions,
  type BenchReport,
  buildLibrary,
  formatNumber,
  measureRates,
  median,
  now,
  type Rate,
  round,
  type Summary,
  sampleDurations,
  summarize,
  table,
  verdict,
} from "./lib.ts";

const ECHO_SCRIPT = fileURLToPath(new URL("./rpc-echo.mjs", import.meta.url));
const IN_FLIGHT = 64;
/** Round trips in a row before the other side takes its turn. */
const LATENCY_BLOCK = 100;

/** Aims (informational: a miss does not fail the run). */
const AIM_LINES_RATIO = 0.9;

interface Config {
  lines: number;
  lineRuns: number;
  lineWarmups: number;
  latencySamples: number;
  latencyWarmup: number;
  /** Requests per timed batch of the 64-deep pipeline. */
  pipelineBatch: number;
  pipelineRuns: number;
  pipelineMinMs: number;
}

const FULL: Config = {
  lines: 1_000_000,
  lineRuns: 7,
  lineWarmups: 1,
  latencySamples: 10_000,
  latencyWarmup: 1_000,
  pipelineBatch: 20_000,
  pipelineRuns: 5,
  pipelineMinMs: 400,
};

const QUICK: Config = {
  lines: 100_000,
  lineRuns: 3,
  lineWarmups: 1,
  latencySamples: 1_000,
  latencyWarmup: 200,
  pipelineBatch: 2_000,
  pipelineRuns: 3,
  pipelineMinMs: 40,
};

class CorrectnessError extends Error {
  override name = "CorrectnessError";
}

type SpawnHelper = (options: HelperOptions) => Helper;

async function loadSpawnHelper(dir: string): Promise<SpawnHelper> {
  const url = pathToFileURL(join(dir, "controller", "helpers", "helper.js")).href;
  const module = (await import(url)) as typeof import("../src/controller/helpers/helper.ts");
  return module.spawnHelper;
}

// ---- 1: lines ------------------------------------------------------------------------------

interface LinesRun {
  count: number;
  chars: number;
  last: string;
  ms: number;
}

type LinesCase = "guestlink" | "readline" | "readlineIter";
const LINES_CASES: readonly LinesCase[] = ["guestlink", "readline", "readlineIter"];

/** What `seq 1 n` writes: n lines, the digits of 1..n, the last one n. */
function expectedLines(n: number): { count: number; chars: number; last: string } {
  let chars = 0;
  for (let digits = 1, from = 1; from <= n; digits++, from *= 10) {
    chars += (Math.min(n, from * 10 - 1) - from + 1) * digits;
  }
  return { count: n, chars, last: String(n) };
}

function checkLines(label: string, n: number, got: LinesRun): void {
  const want = expectedLines(n);
  if (got.count !== want.count || got.chars !== want.chars || got.last !== want.last) {
    throw new CorrectnessError(
      `${label}: seq 1 ${n} gave ${got.count} lines, ${got.chars} characters, the last ${JSON.stringify(got.last)};` +
        ` expected ${want.count}, ${want.chars}, ${JSON.stringify(want.last)}`,
    );
  }
}

async function linesViaHelper(spawnHelper: SpawnHelper, n: number): Promise<LinesRun> {
  const start = now();
  const helper = spawnHelper({ command: "seq", args: ["1", String(n)], restart: false });
  let count = 0;
  let chars = 0;
  let last = "";
  for await (const line of helper.lines()) {
    count++;
    chars += line.length;
    last = line;
  }
  const ms = now() - start;
  await helper.stop();
  return { count, chars, last, ms };
}

/** `node:readline` over the child's stdout; done once the child closed (as the helper's end). */
async function linesViaReadline(n: number, iterate: boolean): Promise<LinesRun> {
  const start = now();
  const child = spawn("seq", ["1", String(n)], { stdio: ["pipe", "pipe", "pipe"] });
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  const rl = createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY });
  let count = 0;
  let chars = 0;
  let last = "";
  if (iterate) {
    for await (const line of rl) {
      count++;
      chars += line.length;
      last = line;
    }
  } else {
    rl.on("line", (line) => {
      count++;
      chars += line.length;
      last = line;
    });
    await new Promise<void>((resolve) => rl.once("close", () => resolve()));
  }
  await closed;
  return { count, chars, last, ms: now() - start };
}

async function measureLines(
  spawnHelper: SpawnHelper,
  cfg: Config,
): Promise<Record<LinesCase, number[]>> {
  const out: Record<LinesCase, number[]> = { guestlink: [], readline: [], readlineIter: [] };
  const runs: Record<LinesCase, () => Promise<LinesRun>> = {
    guestlink: () => linesViaHelper(spawnHelper, cfg.lines),
    readline: () => linesViaReadline(cfg.lines, false),
    readlineIter: () => linesViaReadline(cfg.lines, true),
  };
  for (let run = 0; run < cfg.lineWarmups + cfg.lineRuns; run++) {
    // The cases take turns, starting with a different one each run.
    for (let k = 0; k < LINES_CASES.length; k++) {
      const name = LINES_CASES[(run + k) % LINES_CASES.length] as LinesCase;
      const got = await runs[name]();
      checkLines(name, cfg.lines, got);
      if (run >= cfg.lineWarmups) out[name].push(cfg.lines / (got.ms / 1000));
    }
  }
  return out;
}

// ---- 2: jsonrpc ----------------------------------------------------------------------------

type Request = (method: string, params: unknown) => Promise<unknown>;

/** The baseline: NDJSON JSON-RPC by hand over a plain spawn. */
class NdjsonClient {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  #nextId = 1;
  #stray = 0;

  constructor(command: string, args: readonly string[]) {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] });
    this.#child = child;
    const rl = createInterface({
      input: child.stdout as NonNullable<ChildProcess["stdout"]>,
      crlfDelay: Number.POSITIVE_INFINITY,
    });
    rl.on("line", (line) => {
      const m = JSON.parse(line) as { id: number; result?: unknown; error?: { message: string } };
      const pending = this.#pending.get(m.id);
      if (pending === undefined) {
        this.#stray++;
        return;
      }
      this.#pending.delete(m.id);
      if (m.error !== undefined) pending.reject(new Error(m.error.message));
      else pending.resolve(m.result);
    });
    child.once("exit", (code, signal) => {
      const err = new Error(`the NDJSON baseline's child exited (${signal ?? code})`);
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    });
  }

  get stray(): number {
    return this.#stray;
  }

  request: Request = (method, params) => {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#child.stdin?.write(`${JSON.stringify({ jsonrpc: "2.0", id, method, params })}\n`);
    });
  };

  async stop(): Promise<void> {
    const child = this.#child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.stdin?.end();
    const timer = setTimeout(() => child.kill("SIGKILL"), 2_000);
    await gone;
    clearTimeout(timer);
  }
}

const PARAMS_TEXT = "the quick brown fox";

/** One echo request, its answer checked. */
function echoOnce(request: Request, label: string): (seq: number) => Promise<void> {
  return async (seq) => {
    const result = (await request("echo", { seq, text: PARAMS_TEXT })) as {
      seq?: unknown;
      text?: unknown;
    } | null;
    if (result?.seq !== seq || result.text !== PARAMS_TEXT) {
      throw new CorrectnessError(`${label}: echo ${seq} came back as ${JSON.stringify(result)}`);
    }
  };
}

/** `total` echoes with `IN_FLIGHT` outstanding all along; resolves with `total`. */
async function pipeline(echo: (seq: number) => Promise<void>, total: number): Promise<number> {
  let next = 0;
  const lane = async () => {
    while (next < total) await echo(next++);
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  return total;
}

/** Round-trip times of each case, the cases taking turns in blocks; milliseconds each. */
async function interleavedLatency<K extends string>(
  cases: Record<K, (seq: number) => Promise<void>>,
  samples: number,
  warmup: number,
): Promise<Record<K, number[]>> {
  const names = Object.keys(cases) as K[];
  const out = new Map<K, number[]>(names.map((name) => [name, []]));
  const seqs = new Map<K, number>(names.map((name) => [name, 0]));
  const op = (name: K) => () => {
    const seq = seqs.get(name) ?? 0;
    seqs.set(name, seq + 1);
    return cases[name](seq);
  };
  for (const name of names) await sampleDurations(0, op(name), warmup);
  for (let done = 0; done < samples; done += LATENCY_BLOCK) {
    const block = Math.min(LATENCY_BLOCK, samples - done);
    for (const name of names) out.get(name)?.push(...(await sampleDurations(block, op(name), 1)));
  }
  return Object.fromEntries(names.map((name) => [name, out.get(name) ?? []])) as Record<
    K,
    number[]
  >;
}

interface Rpc {
  latency: Record<"guestlink" | "ndjson", Summary>;
  rates: Record<"guestlink" | "ndjson", Rate>;
}

async function measureRpc(spawnHelper: SpawnHelper, cfg: Config): Promise<Rpc> {
  const helper = spawnHelper({
    command: process.execPath,
    args: [ECHO_SCRIPT],
    protocol: "jsonrpc",
    restart: false,
  });
  const stray: string[] = [];
  helper.onEvent((e) => {
    if (e.type === "stray") stray.push(e.reason);
    if (e.type === "stderr") process.stderr.write(`rpc-echo (helper): ${e.line}\n`);
  });
  const ndjson = new NdjsonClient(process.execPath, [ECHO_SCRIPT]);
  try {
    await helper.ready();
    const echo = {
      guestlink: echoOnce((m, p) => helper.request(m, p), "guestlink"),
      ndjson: echoOnce(ndjson.request, "ndjson"),
    };
    const samples = await interleavedLatency(echo, cfg.latencySamples, cfg.latencyWarmup);
    const rates = await measureRates(
      {
        guestlink: () => pipeline(echo.guestlink, cfg.pipelineBatch),
        ndjson: () => pipeline(echo.ndjson, cfg.pipelineBatch),
      },
      { runs: cfg.pipelineRuns, warmupRuns: 1, minMs: cfg.pipelineMinMs },
    );
    if (stray.length > 0 || ndjson.stray > 0 || helper.outstanding > 0) {
      throw new CorrectnessError(
        `stray answers: guestlink ${stray.length} (${stray[0] ?? ""}), ndjson ${ndjson.stray}; outstanding ${helper.outstanding}`,
      );
    }
    return {
      latency: { guestlink: summarize(samples.guestlink), ndjson: summarize(samples.ndjson) },
      rates,
    };
  } finally {
    await helper.stop();
    await ndjson.stop();
  }
}

// ---- the run and the report ----------------------------------------------------------------

export async function run(opts: BenchOptions): Promise<BenchReport> {
  const cfg = opts.quick ? QUICK : FULL;
  const dir = await mkdtemp(join(os.tmpdir(), "guestlink-bench-helpers-"));
  try {
    const build = await buildLibrary(dir);
    const spawnHelper = await loadSpawnHelper(build.dir);
    const lines = await measureLines(spawnHelper, cfg);
    const rpc = await measureRpc(spawnHelper, cfg);
    return report(opts, cfg, lines, rpc, build.warnings);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const us = (ms: number): number => ms * 1000;
const f2 = (n: number): string => formatNumber(n, 2);

function report(
  opts: BenchOptions,
  cfg: Config,
  lines: Record<LinesCase, number[]>,
  rpc: Rpc,
  buildWarnings: string,
): BenchReport {
  const rate = Object.fromEntries(LINES_CASES.map((k) => [k, median(lines[k])])) as Record<
    LinesCase,
    number
  >;
  // Each run's ratio, from the same turn of the cases: the two sides of a turn run back to back,
  // so a change of the machine's load between turns cancels out. The aim is judged on their
  // median; the ratio of the two medians is shown beside it.
  const runRatios = lines.guestlink.map((g, i) => g / (lines.readline[i] as number));
  const linesRatio = median(runRatios);
  const mediansRatio = rate.guestlink / rate.readline;
  const linesVerdict = verdict(linesRatio, AIM_LINES_RATIO);
  const { latency, rates } = rpc;
  const rttRatio = latency.guestlink.median / latency.ndjson.median;
  const rateRatio = rates.guestlink.median / rates.ndjson.median;
  const linesLabel = `${formatNumber(cfg.lines)} lines (seq)`;

  const rows: string[][] = [
    [
      `${linesLabel} via lines()  vs readline "line"`,
      formatNumber(rate.guestlink),
      formatNumber(rate.readline),
      "lines/s",
      f2(linesRatio),
      `>= ${AIM_LINES_RATIO}x`,
      linesVerdict,
    ],
    [
      "  same, vs readline for-await",
      formatNumber(rate.guestlink),
      formatNumber(rate.readlineIter),
      "lines/s",
      f2(rate.guestlink / rate.readlineIter),
      "",
      "(info)",
    ],
  ];
  for (const stat of ["median", "p99"] as const) {
    rows.push([
      `jsonrpc round trip, ${stat}  vs NDJSON by hand`,
      formatNumber(us(latency.guestlink[stat]), 1),
      formatNumber(us(latency.ndjson[stat]), 1),
      "us",
      f2(latency.guestlink[stat] / latency.ndjson[stat]),
      "",
      "(info)",
    ]);
  }
  rows.push([
    `jsonrpc ${IN_FLIGHT} in flight  vs NDJSON by hand`,
    formatNumber(rates.guestlink.median),
    formatNumber(rates.ndjson.median),
    "req/s",
    f2(rateRatio),
    "",
    "(info)",
  ]);

  const runs = (values: readonly number[]) => values.map((v) => formatNumber(v)).join(" ");
  const text = [
    `helpers: spawnHelper (tsc build of src/, node ${process.version}) against plain-Node baselines in the same run${opts.quick ? "; QUICK: rough figures" : ""}`,
    "",
    table(["figure", "guestlink", "baseline", "unit", "ratio", "aim", "verdict"], rows),
    "",
    `lines: median of ${cfg.lineRuns} runs per case (after ${cfg.lineWarmups} untimed), the cases taking turns; each run from spawn`,
    `  to the child's close, counting lines and characters and keeping the last (checked on every run).`,
    `  lines/s guestlink ${runs(lines.guestlink)}; readline ${runs(lines.readline)}; readline for-await ${runs(lines.readlineIter)}`,
    `  ratio: the median of each turn's ratio (${runRatios.map(f2).join(" ")}); the ratio of the medians is ${f2(mediansRatio)}.`,
    `jsonrpc: one helper of each kind running bench/rpc-echo.mjs (node, readline, one write per answer); echo of {seq, text}.`,
    `  round trip: ${formatNumber(cfg.latencySamples)} per side, taking turns in blocks of ${LATENCY_BLOCK} (min guestlink ${formatNumber(us(latency.guestlink.min), 1)} us, NDJSON ${formatNumber(us(latency.ndjson.min), 1)} us).`,
    `  ${IN_FLIGHT} in flight: median of ${cfg.pipelineRuns} runs of >= ${cfg.pipelineMinMs} ms, batches of ${formatNumber(cfg.pipelineBatch)} requests` +
      ` (req/s guestlink ${runs(rates.guestlink.samples)}; NDJSON ${runs(rates.ndjson.samples)}).`,
    ...(buildWarnings
      ? [
          `note: tsc reported errors building src/ (figures are from what it emitted):\n${buildWarnings}`,
        ]
      : []),
    `load average (1 min) at the end: ${formatNumber(os.loadavg()[0] ?? 0, 2)} on ${os.cpus().length} CPUs.`,
  ].join("\n");

  const figures: Record<string, unknown> = {
    build: buildWarnings ? "tsc reported errors" : "clean",
    lines: {
      lines: cfg.lines,
      perSecond: round(rate.guestlink),
      readlinePerSecond: round(rate.readline),
      readlineForAwaitPerSecond: round(rate.readlineIter),
      ratio: round(linesRatio, 3),
      ratioOfMedians: round(mediansRatio, 3),
      runRatios: runRatios.map((r) => round(r, 3)),
      runs: lines.guestlink.map((v) => round(v)),
      readlineRuns: lines.readline.map((v) => round(v)),
      aimRatio: AIM_LINES_RATIO,
      pass: linesVerdict === "PASS",
    },
    jsonrpc: {
      roundTrip: {
        n: latency.guestlink.n,
        medianUs: round(us(latency.guestlink.median), 1),
        p99Us: round(us(latency.guestlink.p99), 1),
        ndjsonMedianUs: round(us(latency.ndjson.median), 1),
        ndjsonP99Us: round(us(latency.ndjson.p99), 1),
        ratioMedian: round(rttRatio, 3),
      },
      pipelined: {
        inFlight: IN_FLIGHT,
        perSecond: round(rates.guestlink.median),
        ndjsonPerSecond: round(rates.ndjson.median),
        ratio: round(rateRatio, 3),
        runs: rates.guestlink.samples.map((v) => round(v)),
        ndjsonRuns: rates.ndjson.samples.map((v) => round(v)),
      },
    },
  };
  return { text, figures };
}

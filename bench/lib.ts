/**
 * Helpers shared by the benchmarks: timing, statistics, repeated measurement, a fixed-width table
 * and the report. A benchmark prints nothing itself; `run.ts` prints its text, then the figures as
 * ONE line of JSON, always the last line of stdout, so scripts can read `tail -n 1`.
 */
import { execFile, spawn } from "node:child_process";
import { access, mkdir, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export interface BenchOptions {
  /** A much shorter run, for smoke tests: the figures are rough. */
  quick: boolean;
}

export interface BenchReport {
  /** What a person reads (tables, notes), printed before the JSON line. */
  text: string;
  /** The figures, printed as the JSON line. */
  figures: Record<string, unknown>;
}

/** What every `bench/NAME.bench.ts` exports. */
export type Bench = (opts: BenchOptions) => Promise<BenchReport>;

/** Monotonic milliseconds. */
export const now = (): number => performance.now();

/** The `p`th percentile (0..100) of `values`, interpolating between the closest ranks. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new RangeError("percentile of no values");
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be from 0 to 100, got ${p}`);
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo] as number;
  return a + ((sorted[hi] as number) - a) * (rank - lo);
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

export interface Summary {
  n: number;
  min: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
}

/** For latency samples (one value per operation). */
export function summarize(values: readonly number[]): Summary {
  return {
    n: values.length,
    min: Math.min(...values),
    median: median(values),
    p90: percentile(values, 90),
    p99: percentile(values, 99),
    max: Math.max(...values),
  };
}

export interface RunOptions {
  /** Timed runs; the median is reported. */
  runs: number;
  /** Untimed runs first, so the JIT and the heap settle. */
  warmupRuns: number;
  /** Each run repeats its batch until at least this long has passed. */
  minMs: number;
}

export const FULL_RUNS: RunOptions = { runs: 7, warmupRuns: 2, minMs: 400 };
export const QUICK_RUNS: RunOptions = { runs: 3, warmupRuns: 1, minMs: 40 };

export function runOptions(opts: BenchOptions): RunOptions {
  return opts.quick ? QUICK_RUNS : FULL_RUNS;
}

/**
 * Some work that returns how many units (bytes, frames, calls) it did. Make one batch long
 * enough (~0.1–1 ms) that reading the clock between batches costs nothing measurable.
 */
export type Batch = () => number | Promise<number>;

/** Times `count` calls of `op` one by one (after `warmup` untimed calls); milliseconds each. */
export async function sampleDurations(
  count: number,
  op: () => unknown,
  warmup = Math.min(count, 10),
): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await op();
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = now();
    await op();
    out.push(now() - start);
  }
  return out;
}

/** Repeats `batch` for at least `minMs`; returns units per second. */
export async function timeRun(batch: Batch, minMs: number): Promise<number> {
  let units = 0;
  const start = now();
  const end = start + minMs;
  let t: number;
  do {
    const done = batch();
    units += typeof done === "number" ? done : await done;
    t = now();
  } while (t < end);
  return units / ((t - start) / 1000);
}

export interface Rate {
  /** Units per second, the median of the runs. */
  median: number;
  min: number;
  max: number;
  /** (max - min) / median: how far to trust the median. */
  spread: number;
  samples: number[];
}

function toRate(samples: number[]): Rate {
  const min = Math.min(...samples);
  const max = Math.max(...samples);
  const mid = median(samples);
  return { median: mid, min, max, spread: mid > 0 ? (max - min) / mid : 0, samples };
}

/**
 * Measures each case's rate as the median of `runs` timed runs. Cases are interleaved run by run,
 * so a baseline and the figures compared with it see the same machine load.
 */
export async function measureRates<K extends string>(
  cases: Record<K, Batch>,
  options: RunOptions,
): Promise<Record<K, Rate>> {
  const names = Object.keys(cases) as K[];
  const samples = new Map<K, number[]>(names.map((name) => [name, []]));
  for (let run = 0; run < options.warmupRuns + options.runs; run++) {
    for (const name of names) {
      const rate = await timeRun(cases[name], options.minMs);
      if (run >= options.warmupRuns) samples.get(name)?.push(rate);
    }
  }
  return Object.fromEntries(names.map((name) => [name, toRate(samples.get(name) ?? [])])) as Record<
    K,
    Rate
  >;
}

/** "PASS" or "MISS" against an aim (informational). */
export function verdict(value: number, aim: number, higherIsBetter = true): "PASS" | "MISS" {
  return (higherIsBetter ? value >= aim : value <= aim) ? "PASS" : "MISS";
}

/** A number with thousands separators and `digits` decimals. */
export function formatNumber(value: number, digits = 0): string {
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** Rounds for the JSON line, so it stays readable. */
export function round(value: number, digits = 0): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** A fixed-width table: the first column left-aligned, the others right-aligned. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, col) =>
    Math.max(title.length, ...rows.map((row) => (row[col] ?? "").length)),
  );
  const line = (cells: readonly string[]): string =>
    widths
      .map((width, col) => {
        const cell = cells[col] ?? "";
        return col === 0 ? cell.padEnd(width) : cell.padStart(width);
      })
      .join("  ")
      .trimEnd();
  const rule = widths.map((width) => "-".repeat(width)).join("  ");
  return [line(header), rule, ...rows.map(line)].join("\n");
}

export interface Environment {
  node: string;
  platform: string;
  cpu: string;
  cpus: number;
  /** The 1-minute load average when the benchmark started. */
  loadAverage: number;
}

/** Where the figures come from; take it before running, so the load is other processes'. */
export function environment(): Environment {
  const cpus = os.cpus();
  return {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpus[0]?.model.trim() ?? "unknown",
    cpus: cpus.length,
    loadAverage: round(os.loadavg()[0] ?? 0, 2),
  };
}

/** Load above this at the start gets a warning: other work depresses JIT- and GC-heavy figures. */
const BUSY_LOAD_AVERAGE = 0.5;

/** Prints the report: its text, then the figures as the last line of stdout. */
export function printReport(
  name: string,
  opts: BenchOptions,
  env: Environment,
  report: BenchReport,
): void {
  const lines = [report.text.trimEnd()];
  if (env.loadAverage >= BUSY_LOAD_AVERAGE) {
    lines.push(
      `note: load average was ${env.loadAverage} on ${env.cpus} CPUs at the start; other work may depress these figures`,
    );
  }
  lines.push(JSON.stringify({ bench: name, quick: opts.quick, ...env, ...report.figures }));
  process.stdout.write(`${lines.join("\n")}\n`);
}

/** A helper process started by `startHelper`. */
export interface Helper {
  readonly pid: number;
  /** Closes its stdin (a helper exits when it ends), then kills it if it lingers; idempotent. */
  stop(): Promise<void>;
}

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const HELPER_READY_TIMEOUT_MS = 30_000;
const HELPER_STOP_GRACE_MS = 2_000;

/**
 * Runs `node --import tsx SCRIPT ARGS…` (a path relative to the repository root) as a separate
 * process, for a benchmark's far end: two ends in one process share one thread. Resolves once
 * the helper prints the line "ready" on stdout; rejects with its stderr if it exits first.
 */
export function startHelper(script: string, args: readonly string[]): Promise<Helper> {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], {
    cwd: REPO_ROOT,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (text: string) => {
    // Shown as it comes once the helper is up (a crash mid-run), kept for the message before.
    if (stderr.length < 16_384) stderr += text;
  });
  const helper: Helper = {
    pid: child.pid ?? -1,
    async stop() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), HELPER_STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    },
  };
  return new Promise<Helper>((resolve, reject) => {
    let out = "";
    let settled = false;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void helper.stop();
      reject(new Error(`helper ${script} ${args.join(" ")} ${why}${stderr ? `:\n${stderr}` : ""}`));
    };
    const onExit = (code: number | null, signal: string | null) =>
      fail(`exited (${signal ?? code}) before it was ready`);
    const timer = setTimeout(() => fail("did not print ready in time"), HELPER_READY_TIMEOUT_MS);
    child.once("error", (err) => fail(`could not start (${err.message})`));
    child.once("exit", onExit);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", function onData(text: string) {
      out += text;
      if (settled || !out.split("\n").includes("ready")) return;
      settled = true;
      clearTimeout(timer);
      child.off("exit", onExit);
      child.stdout.off("data", onData);
      child.stdout.resume();
      child.stderr.on("data", (more: string) => process.stderr.write(more));
      resolve(helper);
    });
  });
}

export interface BuiltLibrary {
  /** The compiled `src/`, laid out as `dist/` is (e.g. `DIR/platform/session.js`). */
  dir: string;
  /** What tsc printed when it reported errors (it still emits); empty when it was clean. */
  warnings: string;
}

/**
 * Compiles `src/` with tsc as `npm run build` does (tsconfig.build.json), into
 * `PARENT/node_modules/guestlink`, so that benchmarks measure the code as shipped. tsx, which
 * runs the benchmarks, transforms every module it loads outside node_modules, and its esbuild
 * `keepNames` wraps each named closure in a `__name()` (an Object.defineProperty) call: that
 * taxes closure-heavy code such as a call path by tens of percent. Inside node_modules the build
 * is loaded as it is; its dependencies resolve through a link to the repository's node_modules.
 */
export async function buildLibrary(parent: string): Promise<BuiltLibrary> {
  const dir = join(parent, "node_modules", "guestlink");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "package.json"), '{ "type": "module" }\n');
  await symlink(join(REPO_ROOT, "node_modules"), join(dir, "node_modules"), "dir");
  // The native addons, found as in the package (platform/native-addon.ts looks above dist/).
  await symlink(join(REPO_ROOT, "native"), join(dir, "native"), "dir");
  const tsc = join(REPO_ROOT, "node_modules", "typescript", "bin", "tsc");
  const args = [tsc, "-p", "tsconfig.build.json", "--outDir", dir, "--declaration", "false"];
  const child = spawn(process.execPath, [...args, "--sourceMap", "false"], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (text: string) => (output += text));
  child.stderr.setEncoding("utf8").on("data", (text: string) => (output += text));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", resolve);
  });
  const entry = join(dir, "platform", "session.js");
  const built = await access(entry).then(
    () => true,
    () => false,
  );
  if (!built) throw new Error(`tsc did not build ${entry} (exit ${code}):\n${output}`);
  return { dir, warnings: code === 0 ? "" : output.trim() };
}

/** Runs `taskset` (Linux, util-linux); resolves with its stdout, or undefined when it fails. */
function taskset(args: readonly string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile("taskset", args, { timeout: 5_000 }, (err, stdout) =>
      resolve(err ? undefined : String(stdout)),
    );
  });
}

/** The CPUs process `pid` may run on, as a list ("0-3,6"), or undefined without taskset. */
export async function getAffinity(pid: number): Promise<string | undefined> {
  const out = await taskset(["-c", "-p", String(pid)]);
  return out?.split(":").pop()?.trim() || undefined;
}

/** Restricts every thread of process `pid` to `cpus` (a list such as "0" or "0-3"); false if it could not. */
export async function setAffinity(pid: number, cpus: string): Promise<boolean> {
  return (await taskset(["-a", "-c", "-p", cpus, String(pid)])) !== undefined;
}

/** The CPU numbers in a list such as "0-2,5". */
export function parseCpuList(list: string): number[] {
  const cpus: number[] = [];
  for (const part of list.split(",")) {
    const [from, to] = part.split("-").map((n) => Number.parseInt(n, 10));
    if (from === undefined || Number.isNaN(from)) continue;
    const last = to === undefined || Number.isNaN(to) ? from : to;
    for (let cpu = from; cpu <= last; cpu++) cpus.push(cpu);
  }
  return cpus;
}

/**
 * Helpers shared by the benchmarks: timing, statistics, repeated measurement, a fixed-width table
 * and the report. A benchmark prints nothing itself; `run.ts` prints its text, then the figures as
 * ONE line of JSON, always the last line of stdout, so scripts can read `tail -n 1`.
 */
import os from "node:os";

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

/**
 * A fleet run's statistics, merged exactly as the agents' records arrive: per agent and stage,
 * per stage over every agent, and per tick of the live display — counts, errors and bytes added,
 * HDR histograms added bucket by bucket (fleet/histogram.ts). Nothing is sampled or averaged, so
 * the totals are the sums of what every agent counted, however late a record arrives.
 */
import {
  addInto,
  decodeHistogram,
  type Histogram,
  HistogramRefused,
  type LatencySummary,
  newHistogram,
  summarize,
} from "../../fleet/histogram.ts";
import type { OperationType, StatsRecord } from "../../fleet/protocol.ts";

/** Counts of one operation type. */
export class OpTotals {
  count = 0;
  errors = 0;
  bytes = 0;
  readonly histogram: Histogram;

  constructor(wide: boolean) {
    this.histogram = newHistogram(wide);
  }

  add(count: number, errors: number, bytes: number, histogram: Histogram): void {
    this.count += count;
    this.errors += errors;
    this.bytes += bytes;
    addInto(this.histogram, histogram);
  }
}

/** Per operation type, with the span of time the numbers cover (for rates). */
export class StageTotals {
  readonly ops = new Map<OperationType, OpTotals>();
  readonly #wide: boolean;
  /** The span covered, in the controller's wall clock. */
  startMs = Infinity;
  endMs = -Infinity;

  constructor(wide: boolean) {
    this.#wide = wide;
  }

  op(type: OperationType): OpTotals {
    let totals = this.ops.get(type);
    if (totals === undefined) {
      totals = new OpTotals(this.#wide);
      this.ops.set(type, totals);
    }
    return totals;
  }

  cover(startMs: number, endMs: number): void {
    this.startMs = Math.min(this.startMs, startMs);
    this.endMs = Math.max(this.endMs, endMs);
  }

  get seconds(): number {
    return this.endMs > this.startMs ? (this.endMs - this.startMs) / 1000 : 0;
  }
}

/** What a report shows of one operation type over a span. */
export interface OpReport {
  count: number;
  errors: number;
  bytes: number;
  opsPerSec: number;
  mibPerSec: number;
  latencyUs: LatencySummary;
}

/** What `totals` (counts and a histogram) amount to over `seconds`. */
export function reportOp(
  totals: { count: number; errors: number; bytes: number; histogram: Histogram },
  seconds: number,
): OpReport {
  return {
    count: totals.count,
    errors: totals.errors,
    bytes: totals.bytes,
    opsPerSec: seconds > 0 ? totals.count / seconds : 0,
    mibPerSec: seconds > 0 ? totals.bytes / 1048576 / seconds : 0,
    latencyUs: summarize(totals.histogram),
  };
}

/** One agent's record, as the live display and the perf log see it. */
export interface AgentInterval {
  agent: string;
  stage: string;
  /** The interval's end, in the controller's wall clock. */
  atMs: number;
  seconds: number;
  ops: Partial<Record<OperationType, OpReport>>;
}

export class RunStats {
  /** agent → stage → totals. */
  readonly agents = new Map<string, Map<string, StageTotals>>();
  /** stage → totals over every agent. */
  readonly stages = new Map<string, StageTotals>();
  /** What arrived since the last `takeTick`, over every agent. */
  #tick = new StageTotals(true);
  #tickStage: string | undefined;

  /**
   * Adds `record` from `agent`; `offsetMs` is the agent's clock minus ours. Returns the interval
   * as the agent saw it. Throws HistogramRefused for a histogram no agent should send.
   */
  add(agent: string, record: StatsRecord, offsetMs: number): AgentInterval {
    const startMs = record.startMs - offsetMs;
    const endMs = record.endMs - offsetMs;
    const decoded = Object.entries(record.ops).map(([type, stats]) => {
      if (stats.errors > stats.count) {
        throw new HistogramRefused(
          `${type}: more errors (${stats.errors}) than operations (${stats.count})`,
        );
      }
      const histogram = decodeHistogram(stats.histogram);
      if (histogram.totalCount !== stats.count) {
        throw new HistogramRefused(
          `${type}: ${stats.count} operations but ${histogram.totalCount} latencies`,
        );
      }
      return { type: type as OperationType, stats, histogram };
    });
    let stages = this.agents.get(agent);
    if (stages === undefined) {
      stages = new Map();
      this.agents.set(agent, stages);
    }
    const own = getOrMake(stages, record.stage, false);
    const merged = getOrMake(this.stages, record.stage, true);
    if (this.#tickStage !== record.stage) {
      this.#tick = new StageTotals(true);
      this.#tickStage = record.stage;
    }
    const seconds = Math.max(0, (record.endMs - record.startMs) / 1000);
    const interval: AgentInterval = { agent, stage: record.stage, atMs: endMs, seconds, ops: {} };
    for (const totals of [own, merged, this.#tick]) totals.cover(startMs, endMs);
    for (const { type, stats, histogram } of decoded) {
      for (const totals of [own, merged, this.#tick]) {
        totals.op(type).add(stats.count, stats.errors, stats.bytes, histogram);
      }
      interval.ops[type] = reportOp({ ...stats, histogram }, seconds);
    }
    return interval;
  }

  /** What arrived since the last call, over every agent, and a fresh tick begins. */
  takeTick(): { stage: string | undefined; totals: StageTotals } {
    const taken = { stage: this.#tickStage, totals: this.#tick };
    this.#tick = new StageTotals(true);
    return taken;
  }
}

function getOrMake(map: Map<string, StageTotals>, stage: string, wide: boolean): StageTotals {
  let totals = map.get(stage);
  if (totals === undefined) {
    totals = new StageTotals(wide);
    map.set(stage, totals);
  }
  return totals;
}

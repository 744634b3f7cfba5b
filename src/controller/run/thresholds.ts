/**
 * Checking a plan's thresholds on the merged result: each threshold holds for every stage and
 * operation type of the run (`p99: "< 20ms"` is the p99 of each stage's reads, writes, …).
 */
import type { OperationType } from "../../fleet/protocol.ts";
import type { OpReport, RunStats } from "./merge.ts";
import { reportOp } from "./merge.ts";
import type { Comparator, Threshold, ThresholdMetric } from "./plan.ts";

export interface ThresholdCheck {
  threshold: string;
  stage: string;
  operation: OperationType;
  /** The measured value (µs for latencies). */
  value: number;
  ok: boolean;
}

function measure(report: OpReport, metric: ThresholdMetric): number {
  switch (metric) {
    case "errors":
      return report.errors;
    case "ops_per_sec":
      return report.opsPerSec;
    case "mib_per_sec":
      return report.mibPerSec;
    default:
      return report.latencyUs[metric];
  }
}

function holds(value: number, comparator: Comparator, limit: number): boolean {
  switch (comparator) {
    case "<":
      return value < limit;
    case "<=":
      return value <= limit;
    case ">":
      return value > limit;
    case ">=":
      return value >= limit;
    case "==":
      return value === limit;
  }
}

export function checkThresholds(
  thresholds: readonly Threshold[],
  stats: RunStats,
): ThresholdCheck[] {
  const checks: ThresholdCheck[] = [];
  for (const [stage, totals] of stats.stages) {
    for (const [operation, op] of totals.ops) {
      const report = reportOp(op, totals.seconds);
      for (const t of thresholds) {
        const value = measure(report, t.metric);
        checks.push({
          threshold: t.text,
          stage,
          operation,
          value,
          ok: holds(value, t.comparator, t.value),
        });
      }
    }
  }
  return checks;
}

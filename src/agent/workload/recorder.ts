/**
 * What an agent counts while a workload runs: per operation type, operations, errors, bytes and
 * an HDR histogram of latencies, for the current interval. `take` hands the interval over (as a
 * stats record's `ops`) and starts the next, so nothing is counted twice or dropped between them.
 */
import {
  encodeHistogram,
  type Histogram,
  newHistogram,
  recordMicros,
} from "../../fleet/histogram.ts";
import type { OperationStats, OperationType } from "../../fleet/protocol.ts";

/** Error messages kept per interval, for the report: the first few, not all. */
const ERROR_SAMPLES = 10;

interface Counts {
  count: number;
  errors: number;
  bytes: number;
  histogram: Histogram;
}

export class IntervalRecorder {
  #ops = new Map<OperationType, Counts>();
  #errorSamples: string[] = [];

  /** One operation of `type` took `micros`; `error` (its message) when it failed. */
  record(type: OperationType, micros: number, bytes: number, error?: string): void {
    let counts = this.#ops.get(type);
    if (counts === undefined) {
      counts = { count: 0, errors: 0, bytes: 0, histogram: newHistogram() };
      this.#ops.set(type, counts);
    }
    counts.count++;
    counts.bytes += bytes;
    recordMicros(counts.histogram, micros);
    if (error !== undefined) {
      counts.errors++;
      if (this.#errorSamples.length < ERROR_SAMPLES) this.#errorSamples.push(error.slice(0, 1000));
    }
  }

  /** The interval so far, and a fresh one begins. */
  take(): { ops: Partial<Record<OperationType, OperationStats>>; errorSamples: string[] } {
    const ops: Partial<Record<OperationType, OperationStats>> = {};
    for (const [type, counts] of this.#ops) {
      ops[type] = {
        count: counts.count,
        errors: counts.errors,
        bytes: counts.bytes,
        histogram: encodeHistogram(counts.histogram),
      };
    }
    const errorSamples = this.#errorSamples;
    this.#ops = new Map();
    this.#errorSamples = [];
    return { ops, errorSamples };
  }
}

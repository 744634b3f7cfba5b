/**
 * The `workload` service: what a fleet run's controller and an agent say to each other. Both sides
 * import this module; the agent checks every request against these schemas, the controller every
 * reply. docs/fleet.md ("The workload service") describes the exchange:
 *
 * 1. `workload.time` → the agent's wall clock, several times, for its clock offset.
 * 2. `workload.configure {stage, workload, durationMs}` → the agent prepares the stage and answers
 *    READY (the call's result: sent once, kept across a resume like every result).
 * 3. `workload.run {stage, startAtMs, intervalMs}` with a `stats` stream: the agent waits for the
 *    start instant (in its own clock) on a monotonic timer, runs the workload, writes one NDJSON
 *    `StatsRecord` per interval and a last one for the rest, then answers with a `RunOutcome`.
 *    Cancelling the call is ABORT: the agent stops the workload (process groups killed) and
 *    confirms with an ABORTED outcome. With an `output` stream, a command workload's output goes
 *    there, muxed (see `OUTPUT_HEADER_BYTES`).
 */
import * as v from "valibot";
import { IO_OPERATIONS } from "./workload.ts";

export const WORKLOAD_SERVICE = "workload";
export const METHOD_TIME = "workload.time";
export const METHOD_CONFIGURE = "workload.configure";
export const METHOD_RUN = "workload.run";

/** An agent's states in a stage (docs/fleet.md has the transitions). */
export type AgentState =
  | "IDLE"
  | "CONFIGURED"
  | "READY"
  | "RUNNING"
  | "COMPLETED"
  | "ERROR"
  | "ABORTED";

/** Operation types a stats record may carry: the io operations, and `run` for a command. */
export const OPERATION_TYPES = [...IO_OPERATIONS, "run"] as const;
export type OperationType = (typeof OPERATION_TYPES)[number];

const count = v.pipe(v.number(), v.integer(), v.minValue(0));
const name = v.pipe(v.string(), v.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/));
const weight = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(1_000_000));
const concurrency = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(4096));
const optionalCount = v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)));

export const WorkloadSchema = v.variant("kind", [
  v.strictObject({
    kind: v.literal("io"),
    dir: v.pipe(v.string(), v.minLength(1)),
    files: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1_000_000)),
    size: count,
    concurrency,
    mix: v.pipe(
      v.strictObject({
        write: v.optional(weight),
        read: v.optional(weight),
        stat: v.optional(weight),
        delete: v.optional(weight),
      }),
      v.check(
        (mix) => Object.values(mix).some((w) => (w ?? 0) > 0),
        "must give an operation a weight above 0",
      ),
    ),
    count: optionalCount,
  }),
  v.strictObject({
    kind: v.literal("command"),
    argv: v.pipe(v.array(v.string()), v.minLength(1)),
    concurrency,
    count: optionalCount,
  }),
]);

export const ConfigureParams = v.strictObject({
  stage: name,
  workload: WorkloadSchema,
  /** Run this long (undefined: the workload's count, or once per slot). */
  durationMs: v.optional(v.pipe(v.number(), v.minValue(0))),
});
export type ConfigureParams = v.InferOutput<typeof ConfigureParams>;

export const ConfigureResult = v.object({ state: v.literal("READY") });

export const TimeResult = v.object({ wallMs: v.number() });

export const RunParams = v.strictObject({
  stage: name,
  /** The start instant in the agent's wall clock (ms since the epoch). */
  startAtMs: v.number(),
  /** How often to write a stats record. */
  intervalMs: v.pipe(v.number(), v.integer(), v.minValue(10), v.maxValue(60_000)),
});
export type RunParams = v.InferOutput<typeof RunParams>;

export const OperationStats = v.object({
  count,
  errors: count,
  bytes: count,
  /** Latencies (µs) of the interval's operations, errors included: fleet/histogram.ts. */
  histogram: v.pipe(v.string(), v.maxLength(1 << 20)),
});
export type OperationStats = v.InferOutput<typeof OperationStats>;

export const StatsRecord = v.object({
  stage: v.string(),
  /** 0, 1, 2, … within the run call. */
  seq: count,
  /** The interval, in the agent's wall clock. */
  startMs: v.number(),
  endMs: v.number(),
  ops: v.record(v.picklist(OPERATION_TYPES), OperationStats),
  /** The first few errors' messages of the interval, for the report. */
  errorSamples: v.optional(v.pipe(v.array(v.pipe(v.string(), v.maxLength(1000))), v.maxLength(10))),
});
export type StatsRecord = v.InferOutput<typeof StatsRecord>;

export const RunOutcome = v.object({
  state: v.picklist(["COMPLETED", "ERROR", "ABORTED"]),
  /** When the workload really started and ended, in the agent's wall clock. */
  startedAtMs: v.optional(v.number()),
  endedAtMs: v.number(),
  /** How many stats records were written: the controller checks it saw them all. */
  records: count,
  error: v.optional(v.object({ code: v.string(), message: v.string() })),
});
export type RunOutcome = v.InferOutput<typeof RunOutcome>;

/**
 * The `output` stream of a command workload: chunks, each a header of this many bytes — run
 * number (uint32, from 0), which stream (uint8: 1 stdout, 2 stderr), length (uint32) — then the
 * bytes. A run's end is a chunk of length 0 for each of its streams.
 */
export const OUTPUT_HEADER_BYTES = 9;

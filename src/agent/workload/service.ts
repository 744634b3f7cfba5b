/**
 * The `workload` service (fleet/protocol.ts): an agent's side of a fleet run. Per session, the
 * agent is IDLE until a stage is configured; `workload.configure` prepares it (CONFIGURED) and
 * answers READY; `workload.run` waits for the start instant in the agent's own clock, runs
 * (RUNNING), writes a stats record each interval, and ends COMPLETED, ERROR or ABORTED (the call
 * cancelled: the workload is stopped, its processes killed, and the outcome still sent).
 */
import { GuestlinkError } from "../../errors.ts";
import {
  type AgentState,
  ConfigureParams,
  METHOD_CONFIGURE,
  METHOD_RUN,
  METHOD_TIME,
  type RunOutcome,
  RunParams,
  type StatsRecord,
  WORKLOAD_SERVICE,
} from "../../fleet/protocol.ts";
import type { Workload } from "../../fleet/workload.ts";
import { loadOnce } from "../../platform/require.ts";
import type { Clock } from "../../session/runtime.ts";
import type { CallContext } from "../../session/session.ts";
import type { SessionStream } from "../../session/stream.ts";
import type { CommandGroups } from "../command-groups.ts";
import { parseParams, requireStream } from "../params.ts";
import type { Service } from "../service.ts";
import { runCommand } from "./command.ts";
import { prepareIo, runIo } from "./io.ts";
import type { IntervalRecorder } from "./recorder.ts";

export interface WorkloadServiceOptions {
  /** The agent's clock (tests give each agent a skewed one). Default: Node's. */
  clock: Clock;
  /**
   * How long before the start instant the timer hands over to a precise sleep (the event loop's
   * timers are only as fine as a millisecond). 0 with a fake clock, which no sleep would move.
   */
  preciseMs?: number;
  killGraceMs?: number;
  groups?: CommandGroups;
}

interface StageState {
  stage: string;
  state: AgentState;
  workload: Workload;
  durationMs: number | undefined;
}

const DEFAULT_PRECISE_MS = 2;
/** What Atomics.wait sleeps on: nobody ever wakes it, so it sleeps out its timeout. */
const NEVER_WOKEN = new Int32Array(new SharedArrayBuffer(4));
const DEFAULT_KILL_GRACE_MS = 2_000;

/**
 * The recorder's module, loaded by the first `configure`: its HDR histograms (hdr-histogram-js,
 * which carries a WebAssembly build) cost an agent about 11 MiB of memory, and most agents never
 * run a workload.
 */
const loadRecorder = loadOnce(() => import("./recorder.ts"));

export function workloadService(options: WorkloadServiceOptions): Service {
  const { clock } = options;
  const preciseMs = options.preciseMs ?? DEFAULT_PRECISE_MS;
  const sessions = new WeakMap<object, StageState>();

  const time = () => ({ wallMs: clock.wallNow() });

  const configure = async (params: unknown, ctx: CallContext) => {
    const p = parseParams(METHOD_CONFIGURE, ConfigureParams, params);
    const current = sessions.get(ctx.session as object);
    if (current?.state === "RUNNING") {
      throw wrongState(METHOD_CONFIGURE, `stage ${current.stage} is still RUNNING on this agent`);
    }
    const entry: StageState = {
      stage: p.stage,
      state: "CONFIGURED",
      workload: p.workload as Workload,
      durationMs: p.durationMs,
    };
    sessions.set(ctx.session as object, entry);
    try {
      await loadRecorder();
      if (entry.workload.kind === "io") await prepareIo(entry.workload);
    } catch (err) {
      entry.state = "ERROR";
      const e = err as NodeJS.ErrnoException;
      throw new GuestlinkError(
        e.code === "EACCES" || e.code === "EPERM" ? "PERMISSION_DENIED" : "HANDLER_FAILED",
        `stage ${p.stage} cannot be prepared on this agent: ${e.message}`,
        { details: { stage: p.stage } },
      );
    }
    entry.state = "READY";
    return { state: "READY" as const };
  };

  const run = async (params: unknown, ctx: CallContext): Promise<RunOutcome> => {
    const p = parseParams(METHOD_RUN, RunParams, params);
    const stats = requireStream(ctx, "stats");
    const entry = sessions.get(ctx.session as object);
    if (entry === undefined || entry.stage !== p.stage || entry.state !== "READY") {
      throw wrongState(
        METHOD_RUN,
        `stage ${p.stage} is not READY on this agent (${entry === undefined ? "IDLE" : `${entry.stage}: ${entry.state}`})`,
      );
    }
    entry.state = "RUNNING";
    let records = 0;
    // Loaded by `configure` already: this waits for nothing.
    const recorder = new (await loadRecorder()).IntervalRecorder();
    const write = (startMs: number, endMs: number) => {
      const { ops, errorSamples } = recorder.take();
      const record: StatsRecord = { stage: p.stage, seq: records++, startMs, endMs, ops };
      if (errorSamples.length > 0) record.errorSamples = errorSamples;
      stats.write(Buffer.from(`${JSON.stringify(record)}\n`));
    };
    const started = await waitUntil(p.startAtMs, clock, preciseMs, ctx);
    if (!started) {
      entry.state = "ABORTED";
      stats.end();
      return { state: "ABORTED", endedAtMs: clock.wallNow(), records };
    }
    const startedAtMs = clock.wallNow();
    let intervalStart = startedAtMs;
    let timer = clock.setTimer(p.intervalMs, function tick() {
      const now = clock.wallNow();
      write(intervalStart, now);
      intervalStart = now;
      timer = clock.setTimer(p.intervalMs, tick);
    });
    let error: RunOutcome["error"];
    try {
      await runWorkload(entry, ctx, recorder, options);
    } catch (err) {
      error = { code: "HANDLER_FAILED", message: (err as Error).message };
    } finally {
      timer.cancel();
    }
    const endedAtMs = clock.wallNow();
    write(intervalStart, endedAtMs);
    stats.end();
    entry.state = ctx.signal.aborted ? "ABORTED" : error !== undefined ? "ERROR" : "COMPLETED";
    const outcome: RunOutcome = { state: entry.state, startedAtMs, endedAtMs, records };
    if (error !== undefined) outcome.error = error;
    return outcome;
  };

  return {
    name: WORKLOAD_SERVICE,
    methods: { [METHOD_TIME]: time, [METHOD_CONFIGURE]: configure, [METHOD_RUN]: run },
  };
}

async function runWorkload(
  entry: StageState,
  ctx: CallContext,
  recorder: IntervalRecorder,
  options: WorkloadServiceOptions,
): Promise<void> {
  const { workload, durationMs } = entry;
  if (workload.kind === "io") {
    await runIo(workload, durationMs, seedOf(entry.stage), options.clock, ctx.signal, recorder);
    return;
  }
  const output: SessionStream | undefined = ctx.streams.output;
  await runCommand(workload, durationMs, {
    clock: options.clock,
    signal: ctx.signal,
    recorder,
    output,
    killGraceMs: options.killGraceMs ?? DEFAULT_KILL_GRACE_MS,
    groups: options.groups,
    owner: ctx.session as object,
  });
}

/**
 * Waits until `startAtMs` on the agent's wall clock, timed on its monotonic clock: a timer to
 * `preciseMs` before, then a blocking sleep of the rest (Atomics.wait, to the microsecond, with
 * no CPU spent: agents that outnumber the CPUs would starve each other spinning). The event loop
 * stands still for at most `preciseMs`. False if the call was cancelled first.
 */
function waitUntil(
  startAtMs: number,
  clock: Clock,
  preciseMs: number,
  ctx: CallContext,
): Promise<boolean> {
  const target = clock.now() + (startAtMs - clock.wallNow());
  return new Promise((resolve) => {
    let timer: { cancel(): void } | undefined;
    const finish = (started: boolean) => {
      timer?.cancel();
      ctx.signal.removeEventListener("abort", onAbort);
      resolve(started);
    };
    const onAbort = () => finish(false);
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    if (ctx.signal.aborted) return finish(false);
    const sleepOut = () => {
      if (ctx.signal.aborted) return;
      const rest = target - clock.now();
      if (preciseMs > 0 && rest > 0) Atomics.wait(NEVER_WOKEN, 0, 0, rest);
      finish(true);
    };
    const wait = target - clock.now() - preciseMs;
    if (wait > 0) timer = clock.setTimer(wait, sleepOut);
    else sleepOut();
  });
}

/** A seed from the stage's name (FNV-1a), so a stage's mix repeats from run to run. */
function seedOf(stage: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < stage.length; i++) {
    hash = Math.imul(hash ^ stage.charCodeAt(i), 0x01000193) >>> 0;
  }
  return hash;
}

function wrongState(method: string, message: string): GuestlinkError {
  return new GuestlinkError("INVALID_OPTION", `${method}: ${message}`, { details: { method } });
}

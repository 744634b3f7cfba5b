/**
 * A fleet run: every agent of a plan through every stage, started together, with live merged
 * statistics and an honest ending. docs/fleet.md describes what users see; this is the logic:
 *
 * 1. Connect to every agent (within `timeouts.connect`, retrying: start order never matters) and
 *    measure its clock offset; an agent further off than `clock.max_skew` fails.
 * 2. For each stage: configure it on every agent still in the run (READY within
 *    `timeouts.ready`), then, if the stage's barrier can still be met, start them all at one
 *    instant `start_delay` ahead, each told the instant in its own clock.
 * 3. While it runs, each agent's stats records are merged as they come; one silent for
 *    `timeouts.silence` is shown stalled (not dead); a lost session fails it; the stage's
 *    `timeout` aborts the laggards. When every agent has ended the stage, the barrier decides
 *    whether the run goes on. An agent that failed leaves the run.
 * 4. `abort()` (Ctrl-C) aborts every agent's stage, waits for each to confirm, and ends the run.
 */

import { setMaxListeners } from "node:events";
import type { Writable } from "node:stream";
import type { AbortSignalLike } from "../../abort.ts";
import { GuestlinkError, isGuestlinkError, toGuestlinkError } from "../../errors.ts";
import { HistogramRefused } from "../../fleet/histogram.ts";
import { pause } from "../../platform/node.ts";
import type { Clock, Timer } from "../../session/runtime.ts";
import type { Session } from "../../session/session.ts";
import {
  agentTime,
  configureStage,
  runStage,
  type StageRun,
  type StatsRecord,
} from "./agent-link.ts";
import { type ClockOffset, fromAgentClock, measureOffset, toAgentClock } from "./clock.ts";
import { type AgentInterval, RunStats } from "./merge.ts";
import { type RunOutcomeName, unmetBarrier } from "./outcome.ts";
import type { Barrier, Plan, PlanAgent, Stage } from "./plan.ts";
import { AgentStage, type FailureCause, type StateChange } from "./states.ts";

export type RunEvent =
  | { type: "state"; atMs: number; change: StateChange }
  | { type: "clock"; atMs: number; agent: string; offset: ClockOffset }
  | { type: "stage"; atMs: number; stage: string; startAtMs: number; agents: string[] }
  /** `record` as the agent sent it (its clock; histograms encoded), `interval` in ours. */
  | { type: "interval"; atMs: number; interval: AgentInterval; record: StatsRecord }
  | { type: "stalled"; atMs: number; agent: string; stage: string; stalled: boolean }
  | { type: "link"; atMs: number; agent: string; up: boolean; error?: string };

export interface FleetOptions {
  plan: Plan;
  /** Opens a session to `agent`, failing with CONNECT_FAILED (retried) or anything else (not). */
  connect(agent: PlanAgent, signal: AbortSignalLike): Promise<Session>;
  /** The controller's clock: monotonic `now` for timeouts, `wallNow` for the start instant. */
  clock: Clock;
  /** How often agents send stats (default 1 s). */
  intervalMs?: number;
  /** Timed exchanges per agent for its clock offset (default 16). */
  clockSamples?: number;
  onEvent?(event: RunEvent): void;
  /** Where a command workload's output goes: a writer per agent, stage, run and stream. */
  output?(agent: string, stage: string, run: number, stream: "stdout" | "stderr"): Writable;
}

/** One agent over the run. */
export interface AgentRecord {
  id: string;
  address: string;
  session: Session | undefined;
  offset: ClockOffset | undefined;
  /** Its machine in each stage it took part in. */
  stages: Map<string, AgentStage>;
  /** When it started each stage, in our wall clock. */
  startedAtMs: Map<string, number>;
  /** Out of the run (failed or aborted in some stage). */
  out: boolean;
}

export interface FleetResult {
  outcome: RunOutcomeName;
  /** Why the run ended early, when it did. */
  reason: string | undefined;
  agents: AgentRecord[];
  /** The stages that were started. */
  stagesRun: string[];
  /** Per stage: when it was to start, in our wall clock. */
  startAtMs: Map<string, number>;
  stats: RunStats;
}

const CONNECT_RETRY_MS = [50, 100, 200, 400, 800, 1000];
/** How long an agent has, once the run is over, to finish what it still runs before it is cut. */
const CLOSE_GRACE_MS = 5_000;

export class FleetRun {
  readonly stats = new RunStats();
  readonly agents: AgentRecord[];
  readonly #o: FleetOptions;
  readonly #clock: Clock;
  readonly #abort = new AbortController();
  #running = new Map<string, StageRun>();

  constructor(options: FleetOptions) {
    this.#o = options;
    // Every agent's connect, calls and waits listen on the run's signal at once: with more than
    // ten agents Node would warn of a leak that is not one (the listeners go with each phase).
    setMaxListeners(0, this.#abort.signal);
    this.#clock = options.clock;
    this.agents = options.plan.agents.map((a) => ({
      id: a.id,
      address: a.address,
      session: undefined,
      offset: undefined,
      stages: new Map(),
      startedAtMs: new Map(),
      out: false,
    }));
  }

  get aborted(): boolean {
    return this.#abort.signal.aborted;
  }

  /** Ctrl-C: every agent aborts what it runs and confirms; `run()` then ends with `aborted`. */
  abort(): void {
    if (this.aborted) return;
    this.#abort.abort(new GuestlinkError("CANCELLED", "the run was aborted"));
    for (const running of this.#running.values()) void running.abort().catch(() => {});
  }

  async run(): Promise<FleetResult> {
    const { plan } = this.#o;
    const startAtMs = new Map<string, number>();
    const stagesRun: string[] = [];
    const result = (outcome: RunOutcomeName, reason?: string): FleetResult => ({
      outcome,
      reason,
      agents: this.agents,
      stagesRun,
      startAtMs,
      stats: this.stats,
    });
    const first = plan.stages[0] as Stage;
    await Promise.all(this.agents.map((a) => this.#connect(a, first)));
    if (this.aborted) return this.#close(result("aborted"));
    for (const stage of plan.stages) {
      const inRun = this.agents.filter((a) => !a.out);
      const before = this.#unmet(stage.barrier, inRun.length);
      if (before !== undefined) {
        const cause =
          stage === first && this.agents.some((a) => this.#cause(a, first) === "unreachable")
            ? "unreachable"
            : undefined;
        return this.#close(
          result(cause ?? this.#failedOutcome(), `stage ${stage.name}: ${before}`),
        );
      }
      await Promise.all(inRun.map((a) => this.#configure(a, stage)));
      if (this.aborted) return this.#close(result("aborted"));
      const ready = inRun.filter((a) => a.stages.get(stage.name)?.state === "READY");
      const unready = this.#unmet(stage.barrier, ready.length);
      if (unready !== undefined) {
        const timedOut = inRun.some((a) => this.#cause(a, stage) === "ready-timeout");
        return this.#close(
          result(timedOut ? "timeout" : this.#failedOutcome(), `stage ${stage.name}: ${unready}`),
        );
      }
      const at = this.#clock.wallNow() + plan.startDelayMs;
      startAtMs.set(stage.name, at);
      stagesRun.push(stage.name);
      this.#emit({
        type: "stage",
        stage: stage.name,
        startAtMs: at,
        agents: ready.map((a) => a.id),
      });
      await this.#runStage(stage, ready, at);
      if (this.aborted) return this.#close(result("aborted"));
      const completed = ready.filter((a) => a.stages.get(stage.name)?.state === "COMPLETED").length;
      const after = this.#unmet(stage.barrier, completed);
      if (after !== undefined) {
        const timedOut = ready.some((a) => this.#cause(a, stage) === "stage-timeout");
        return this.#close(
          result(timedOut ? "timeout" : this.#failedOutcome(), `stage ${stage.name}: ${after}`),
        );
      }
    }
    const everyone = this.agents.every((a) => !a.out);
    if (everyone) return this.#close(result("completed"));
    return this.#close(result(this.agents.every((a) => a.out) ? "failed" : "partial"));
  }

  // ---- phases --------------------------------------------------------------------------------

  async #connect(agent: AgentRecord, stage: Stage): Promise<void> {
    const machine = this.#machine(agent, stage, "CONNECTING");
    const { timeouts, clock: skew } = this.#o.plan;
    const giveUp = this.#clock.now() + timeouts.connectMs;
    const attempt = new AbortController();
    const onAbort = () => attempt.abort(this.#abort.signal.reason);
    this.#abort.signal.addEventListener("abort", onAbort);
    const timer = this.#clock.setTimer(timeouts.connectMs, () =>
      attempt.abort(
        new GuestlinkError("CONNECT_FAILED", `not reached within ${timeouts.connectMs} ms`),
      ),
    );
    try {
      let lastError: unknown;
      for (let i = 0; !attempt.signal.aborted; i++) {
        try {
          agent.session = await this.#o.connect(
            { id: agent.id, address: agent.address },
            attempt.signal,
          );
          break;
        } catch (err) {
          lastError = err;
          if (
            !isGuestlinkError(err, "CONNECT_FAILED") &&
            !isGuestlinkError(err, "HANDSHAKE_TIMEOUT")
          )
            break;
          const wait = CONNECT_RETRY_MS[Math.min(i, CONNECT_RETRY_MS.length - 1)] as number;
          if (this.#clock.now() + wait >= giveUp) break;
          await pause(wait, attempt.signal, this.#clock);
        }
      }
      if (this.aborted)
        return machine.end("ABORTED", "aborted", "the run was aborted while connecting");
      const session = agent.session;
      if (session === undefined) {
        const why = toGuestlinkError(lastError ?? attempt.signal.reason).message;
        return this.#fail(
          agent,
          machine,
          "unreachable",
          `not reached within ${timeouts.connectMs} ms: ${why}`,
        );
      }
      this.#watch(agent, session);
      const offset = await measureOffset(
        () => agentTime(session, this.#clock.now() + timeouts.connectMs),
        this.#clock,
        this.#o.clockSamples ?? 16,
      );
      agent.offset = offset;
      this.#emit({ type: "clock", agent: agent.id, offset });
      if (Math.abs(offset.offsetMs) > skew.maxSkewMs) {
        this.#fail(
          agent,
          machine,
          "clock-skew",
          `its clock is ${(offset.offsetMs / 1000).toFixed(3)} s off ours, more than clock.max_skew (${skew.maxSkewMs / 1000} s)`,
        );
      }
    } catch (err) {
      if (this.aborted)
        return machine.end("ABORTED", "aborted", "the run was aborted while connecting");
      this.#fail(agent, machine, "error", toGuestlinkError(err).message);
    } finally {
      timer.cancel();
      this.#abort.signal.removeEventListener("abort", onAbort);
    }
  }

  async #configure(agent: AgentRecord, stage: Stage): Promise<void> {
    const machine = agent.stages.get(stage.name) ?? this.#machine(agent, stage, "CONFIGURED");
    if (machine.state === "CONNECTING") machine.move("CONFIGURED");
    const { readyMs } = this.#o.plan.timeouts;
    try {
      await configureStage(agent.session as Session, stage, this.#clock.now() + readyMs);
      if (this.aborted)
        return machine.end("ABORTED", "aborted", "the run was aborted before the start");
      machine.move("READY");
    } catch (err) {
      if (this.aborted)
        return machine.end("ABORTED", "aborted", "the run was aborted before the start");
      const e = toGuestlinkError(err);
      if (e.code === "DEADLINE_EXCEEDED") {
        this.#fail(
          agent,
          machine,
          "ready-timeout",
          `not READY within timeouts.ready (${readyMs} ms)`,
        );
      } else this.#failFromError(agent, machine, e);
    }
  }

  async #runStage(stage: Stage, agents: AgentRecord[], startAtMs: number): Promise<void> {
    const { silenceMs } = this.#o.plan.timeouts;
    let stageTimer: Timer | undefined;
    if (stage.timeoutMs !== undefined) {
      const due = Math.max(0, startAtMs - this.#clock.wallNow()) + stage.timeoutMs;
      stageTimer = this.#clock.setTimer(due, () => {
        for (const agent of agents) {
          const machine = agent.stages.get(stage.name) as AgentStage;
          if (machine.final) continue;
          this.#fail(
            agent,
            machine,
            "stage-timeout",
            `stage ${stage.name} did not end within its timeout (${stage.timeoutMs} ms)`,
          );
          void this.#running
            .get(agent.id)
            ?.abort()
            .catch(() => {});
        }
      });
    }
    await Promise.all(
      agents.map(async (agent) => {
        const machine = agent.stages.get(stage.name) as AgentStage;
        const offset = agent.offset as ClockOffset;
        let silence: Timer | undefined;
        let stalled = false;
        // Silent for `silence` (past the start instant, while it has not started): stalled.
        const listen = (waitingMs = 0) => {
          silence?.cancel();
          if (stalled) {
            stalled = false;
            this.#emit({ type: "stalled", agent: agent.id, stage: stage.name, stalled });
          }
          silence = this.#clock.setTimer(silenceMs + waitingMs, () => {
            if (machine.final) return;
            stalled = true;
            this.#emit({ type: "stalled", agent: agent.id, stage: stage.name, stalled });
          });
        };
        let badRecord: Error | undefined;
        let received = 0;
        const running = runStage(
          agent.session as Session,
          stage.name,
          toAgentClock(startAtMs, offset),
          this.#o.intervalMs ?? 1000,
          (record) => {
            if (badRecord !== undefined) return;
            received++;
            try {
              const interval = this.stats.add(agent.id, record, offset.offsetMs);
              if (machine.state === "START_SENT") machine.move("RUNNING");
              listen();
              this.#emit({ type: "interval", interval, record });
            } catch (err) {
              if (!(err instanceof HistogramRefused)) throw err;
              badRecord = err;
              this.#fail(agent, machine, "error", `sent a bad stats record: ${err.message}`);
              void running.abort().catch(() => {});
            }
          },
          this.#o.output === undefined
            ? undefined
            : (run, which) => this.#o.output?.(agent.id, stage.name, run, which) as Writable,
        );
        this.#running.set(agent.id, running);
        machine.move("START_SENT");
        if (this.aborted) void running.abort().catch(() => {});
        listen(Math.max(0, startAtMs - this.#clock.wallNow()));
        try {
          const outcome = await running.outcome.catch(async (err: unknown) => {
            // Aborted here: the agent's own outcome is in its confirmation.
            if (isGuestlinkError(err, "CANCELLED")) return await running.abort();
            throw err;
          });
          if (outcome.startedAtMs !== undefined) {
            agent.startedAtMs.set(stage.name, fromAgentClock(outcome.startedAtMs, offset));
          }
          if (machine.final) return;
          if (outcome.records !== received) {
            // Never the case over a session (nothing is lost); never passed over if it were.
            this.#fail(
              agent,
              machine,
              "error",
              `it sent ${outcome.records} stats records and ${received} arrived`,
            );
            return;
          }
          if (outcome.state === "COMPLETED") {
            if (machine.state === "START_SENT") machine.move("RUNNING");
            machine.move("COMPLETED");
          } else if (outcome.state === "ABORTED") {
            this.#fail(agent, machine, "aborted", "the run was aborted", "ABORTED");
          } else {
            this.#fail(agent, machine, "error", outcome.error?.message ?? "the workload failed");
          }
        } catch (err) {
          if (this.aborted) this.#fail(agent, machine, "aborted", "the run was aborted", "ABORTED");
          else this.#failFromError(agent, machine, toGuestlinkError(err));
        } finally {
          silence?.cancel();
          this.#running.delete(agent.id);
        }
      }),
    );
    stageTimer?.cancel();
  }

  // ---- helpers -------------------------------------------------------------------------------

  #machine(agent: AgentRecord, stage: Stage, first: "CONNECTING" | "CONFIGURED"): AgentStage {
    const machine = new AgentStage(agent.id, stage.name, first, (change) =>
      this.#emit({ type: "state", change }),
    );
    agent.stages.set(stage.name, machine);
    return machine;
  }

  #fail(
    agent: AgentRecord,
    machine: AgentStage,
    cause: FailureCause,
    reason: string,
    to: "FAILED" | "ABORTED" = "FAILED",
  ): void {
    if (machine.final) return;
    agent.out = true;
    machine.end(to, cause, reason);
  }

  #failFromError(agent: AgentRecord, machine: AgentStage, err: GuestlinkError): void {
    const lost = [
      "SESSION_CLOSED",
      "RESUME_FAILED",
      "PEER_UNRESPONSIVE",
      "TRANSPORT_FAILED",
    ].includes(err.code);
    this.#fail(
      agent,
      machine,
      lost ? "lost" : "error",
      lost ? `its session was lost: ${err.message}` : err.message,
    );
  }

  #cause(agent: AgentRecord, stage: Stage): FailureCause | undefined {
    return agent.stages.get(stage.name)?.cause;
  }

  #unmet(barrier: Barrier, count: number): string | undefined {
    return unmetBarrier(barrier, count, this.#o.plan.agents.length);
  }

  #failedOutcome(): RunOutcomeName {
    return this.agents.every((a) => a.out) ? "failed" : "partial";
  }

  /** Follows an agent's session: drops and resumes are shown, a lost session fails it. */
  #watch(agent: AgentRecord, session: Session): void {
    session.onEvent((event) => {
      if (event.type === "disconnected")
        this.#emit({ type: "link", agent: agent.id, up: false, error: event.error?.message });
      if (event.type === "resumed") this.#emit({ type: "link", agent: agent.id, up: true });
    });
  }

  #emit(event: DistributiveOmit<RunEvent, "atMs">): void {
    this.#o.onEvent?.({ ...event, atMs: this.#clock.wallNow() } as RunEvent);
  }

  /** Closes every session: gracefully, but an agent that will not finish is cut off. */
  async #close(result: FleetResult): Promise<FleetResult> {
    if (result.outcome === "aborted") {
      // Agents waiting between phases were not running anything: they end aborted too.
      for (const agent of this.agents) {
        for (const machine of agent.stages.values()) {
          this.#fail(agent, machine, "aborted", "the run was aborted", "ABORTED");
        }
      }
    }
    await Promise.all(
      this.agents.map(async (a) => {
        const session = a.session;
        if (session === undefined) return;
        const cut = this.#clock.setTimer(CLOSE_GRACE_MS, () =>
          session.abort(new GuestlinkError("SESSION_CLOSED", "the run is over")),
        );
        await session.close().catch(() => {});
        cut.cancel();
      }),
    );
    return result;
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

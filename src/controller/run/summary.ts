/**
 * What a fleet run amounts to, as `summary.json` holds it and `--json` prints it last: per agent
 * and merged, the final state and why, and per stage and operation type the counts, rates and
 * latencies, the clock offsets and the actual start instants. docs/fleet.md documents the schema.
 */
import type { OperationType } from "../../fleet/protocol.ts";
import type { FleetResult } from "./fleet.ts";
import { type OpReport, reportOp, type StageTotals } from "./merge.ts";
import { EXIT } from "./outcome.ts";
import type { Plan } from "./plan.ts";
import type { ThresholdCheck } from "./thresholds.ts";

export const SUMMARY_VERSION = 1;

export interface StageSummary {
  name: string;
  state: string;
  reason?: string;
  cause?: string;
  /** When it really started, ISO 8601 in the controller's clock. */
  startedAt?: string;
  operations: Partial<Record<OperationType, OpReport>>;
}

export interface AgentSummary {
  id: string;
  address: string;
  /** COMPLETED when it completed every stage that was run, else its last state. */
  state: string;
  reason?: string;
  clock?: { offsetMs: number; uncertaintyMs: number; rttMs: number };
  stages: StageSummary[];
}

export interface RunSummary {
  version: typeof SUMMARY_VERSION;
  name: string;
  outcome: string;
  exitCode: number;
  reason?: string;
  startedAt: string;
  endedAt: string;
  agents: AgentSummary[];
  stages: {
    name: string;
    /** The instant every agent was told to start (ISO 8601, controller's clock). */
    startAt: string;
    /** Latest minus earliest actual start of its agents, in ms. */
    startSpreadMs: number | null;
    agents: number;
    completed: number;
    operations: Partial<Record<OperationType, OpReport>>;
  }[];
  thresholds: ThresholdCheck[];
}

const iso = (ms: number) => new Date(ms).toISOString();

function operations(totals: StageTotals | undefined): Partial<Record<OperationType, OpReport>> {
  const out: Partial<Record<OperationType, OpReport>> = {};
  if (totals === undefined) return out;
  for (const [type, op] of totals.ops) out[type] = reportOp(op, totals.seconds);
  return out;
}

export function buildSummary(
  plan: Plan,
  result: FleetResult,
  checks: ThresholdCheck[],
  startedAtMs: number,
  endedAtMs: number,
): RunSummary {
  const crossed = checks.some((c) => !c.ok);
  const outcome = result.outcome === "completed" && crossed ? "thresholds" : result.outcome;
  const agents = result.agents.map((agent): AgentSummary => {
    const stages = [...agent.stages.values()].map((machine): StageSummary => {
      const started = agent.startedAtMs.get(machine.stage);
      const s: StageSummary = {
        name: machine.stage,
        state: machine.state,
        operations: operations(result.stats.agents.get(agent.id)?.get(machine.stage)),
      };
      if (machine.reason !== undefined) s.reason = machine.reason;
      if (machine.cause !== undefined) s.cause = machine.cause;
      if (started !== undefined) s.startedAt = iso(started);
      return s;
    });
    const last = stages[stages.length - 1];
    const all =
      stages.length === result.stagesRun.length && stages.every((s) => s.state === "COMPLETED");
    const a: AgentSummary = {
      id: agent.id,
      address: agent.address,
      state: all ? "COMPLETED" : (last?.state ?? "CONNECTING"),
      stages,
    };
    const why = stages.find((s) => s.reason !== undefined)?.reason;
    if (why !== undefined) a.reason = why;
    if (agent.offset !== undefined) {
      const { offsetMs, uncertaintyMs, rttMs } = agent.offset;
      a.clock = { offsetMs, uncertaintyMs, rttMs };
    }
    return a;
  });
  const summary: RunSummary = {
    version: SUMMARY_VERSION,
    name: plan.name,
    outcome,
    exitCode: EXIT[outcome],
    startedAt: iso(startedAtMs),
    endedAt: iso(endedAtMs),
    agents,
    stages: result.stagesRun.map((name) => {
      const starts = result.agents.flatMap((a) => {
        const t = a.startedAtMs.get(name);
        return t === undefined ? [] : [t];
      });
      const inStage = result.agents.filter((a) => a.stages.has(name));
      return {
        name,
        startAt: iso(result.startAtMs.get(name) as number),
        startSpreadMs: starts.length === 0 ? null : Math.max(...starts) - Math.min(...starts),
        agents: inStage.length,
        completed: inStage.filter((a) => a.stages.get(name)?.state === "COMPLETED").length,
        operations: operations(result.stats.stages.get(name)),
      };
    }),
    thresholds: checks,
  };
  if (result.reason !== undefined) summary.reason = result.reason;
  return summary;
}

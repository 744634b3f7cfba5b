/**
 * The plan of a fleet run (`guestlink run PLAN`), read from YAML: which agents, how they start
 * together, the timeouts of each state, the stages and their workloads, and the thresholds the
 * merged result must meet. Everything is checked before anything connects; the first problem is
 * one line naming where it is (`stages[1].workload.io.size: …`). docs/fleet.md is the reference.
 */
import { isGuestlinkError, PlanInvalidError } from "../../errors.ts";
import { CheckError, type Fields, readMapping } from "../../fleet/check.ts";
import { parseDuration } from "../../fleet/units.ts";
import { readWorkload, type Workload } from "../../fleet/workload.ts";
import { parseAddress } from "../../transport/address.ts";
import { parseNatsServers } from "../../transport/nats-address.ts";
import { readYaml } from "../config-file.ts";

export interface PlanAgent {
  id: string;
  address: string;
  /** `key_file`: the agent's key, for a tcp: address (docs/security.md). */
  keyFile?: string;
  /** For an agent found on NATS: the creds file the query named. */
  natsCreds?: string;
}

/** `agents: { nats: "nats://…", match: "io-*" }`: the plan's agents are those found on NATS. */
export interface PlanAgentQuery {
  /** The servers (`nats://HOST:PORT[/PATTERN]`, credentials as in an address). */
  nats: string;
  /** Agent ids wanted, `*` for any characters (or the pattern in `nats`); none: every agent. */
  match?: string;
  /** A NATS credentials file. */
  creds?: string;
}

/** Who must finish a stage for the run to go on. */
export type Barrier =
  | { kind: "all" }
  | { kind: "majority" }
  | { kind: "min"; min: number }
  | { kind: "best_effort" };

export interface Stage {
  name: string;
  barrier: Barrier;
  /** The stage fails on an agent that has not finished by then (undefined: no limit). */
  timeoutMs: number | undefined;
  /** The workload runs this long (undefined: until its count, or once per slot). */
  durationMs: number | undefined;
  workload: Workload;
}

const LATENCY_METRICS = ["mean", "p50", "p90", "p95", "p99", "p999", "max"] as const;
export const THRESHOLD_METRICS = [
  ...LATENCY_METRICS,
  "errors",
  "ops_per_sec",
  "mib_per_sec",
] as const;
export type ThresholdMetric = (typeof THRESHOLD_METRICS)[number];
export const COMPARATORS = ["<=", ">=", "==", "<", ">"] as const;
export type Comparator = (typeof COMPARATORS)[number];

/** `p99 < 20ms`: latencies are in microseconds, errors a count, rates per second. */
export interface Threshold {
  metric: ThresholdMetric;
  comparator: Comparator;
  value: number;
  /** As written in the plan, for reports. */
  text: string;
}

export interface Plan {
  name: string;
  /** The agents; empty until `agentQuery` is resolved (run-plan.ts, when the plan is loaded). */
  agents: PlanAgent[];
  /** Set when the plan names its agents by a NATS discovery query instead of a list. */
  agentQuery?: PlanAgentQuery;
  startDelayMs: number;
  clock: { maxSkewMs: number };
  /**
   * connect: to reach every agent; ready: from configure to READY; silence: no stats from a
   * RUNNING agent before it is shown stalled; lost: a dropped connection that has not resumed
   * by then makes the agent dead (FAILED).
   */
  timeouts: { connectMs: number; readyMs: number; silenceMs: number; lostMs: number };
  stages: Stage[];
  thresholds: Threshold[];
}

export const PLAN_DEFAULTS = {
  startDelayMs: 2_000,
  maxSkewMs: 10_000,
  connectMs: 10_000,
  readyMs: 30_000,
  silenceMs: 10_000,
  lostMs: 30_000,
} as const;

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const BARRIERS = ["all", "majority", "best_effort"] as const;

/**
 * Reads a plan from YAML `text`; `source` names it in errors. Throws PLAN_INVALID saying what is
 * wrong and where.
 */
export function parsePlan(text: string, source: string): Plan {
  return readYaml(text, source, readPlan, PlanInvalidError);
}

/** Reads a plan already parsed from YAML or JSON. Throws CheckError. */
export function readPlan(value: unknown): Plan {
  return readMapping(value, "", (f) => {
    const name = f.string("name");
    if (!ID.test(name)) {
      throw new CheckError(
        f.at("name"),
        "use letters, digits, '.', '_' and '-' (it names the results folder)",
      );
    }
    const rawAgents = f.raw("agents");
    const agentQuery =
      rawAgents !== null && typeof rawAgents === "object" && !Array.isArray(rawAgents)
        ? f.mapping("agents", readAgentQuery)
        : undefined;
    const agents = agentQuery === undefined ? f.list("agents", readAgent, 1) : [];
    const ids = new Set<string>();
    agents.forEach((agent, i) => {
      if (ids.has(agent.id)) {
        throw new CheckError(`agents[${i}].id`, `${JSON.stringify(agent.id)} is named twice`);
      }
      ids.add(agent.id);
    });
    const startDelayMs = f.duration("start_delay", PLAN_DEFAULTS.startDelayMs);
    const clock = f.mapping("clock", (c) => ({
      maxSkewMs: c.duration("max_skew", PLAN_DEFAULTS.maxSkewMs),
    })) ?? { maxSkewMs: PLAN_DEFAULTS.maxSkewMs };
    const timeouts = f.mapping("timeouts", readTimeouts) ?? readTimeouts(undefined);
    // With a query the number of agents is known once they are found (and checked then).
    const agentCount = agentQuery === undefined ? agents.length : Number.MAX_SAFE_INTEGER;
    const stages = f.list("stages", (v, p) => readStage(v, p, agentCount), 1);
    const names = new Set<string>();
    stages.forEach((stage, i) => {
      if (names.has(stage.name)) {
        throw new CheckError(`stages[${i}].name`, `${JSON.stringify(stage.name)} is used twice`);
      }
      names.add(stage.name);
    });
    const thresholds = f.mapping("thresholds", readThresholds) ?? [];
    return {
      name,
      agents,
      ...(agentQuery === undefined ? {} : { agentQuery }),
      startDelayMs,
      clock,
      timeouts,
      stages,
      thresholds,
    };
  });
}

function readAgent(value: unknown, path: string): PlanAgent {
  return readMapping(value, path, (f) => {
    const id = f.string("id");
    if (!ID.test(id)) {
      throw new CheckError(
        f.at("id"),
        "use 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit",
      );
    }
    const address = f.string("address");
    let kind: string;
    try {
      kind = parseAddress(address).kind;
    } catch (err) {
      if (isGuestlinkError(err)) throw new CheckError(f.at("address"), err.message);
      throw err;
    }
    const keyFile = f.string("key_file", undefined);
    if (keyFile === undefined) return { id, address };
    if (kind !== "tcp") {
      throw new CheckError(f.at("key_file"), `a key applies to tcp: addresses only, not ${kind}:`);
    }
    return { id, address, keyFile };
  });
}

function readAgentQuery(f: Fields): PlanAgentQuery {
  const nats = f.string("nats");
  let inUrl: string | undefined;
  try {
    inUrl = parseNatsServers(nats, (problem) => new CheckError(f.at("nats"), problem)).match;
  } catch (err) {
    if (err instanceof CheckError) throw err;
    throw new CheckError(f.at("nats"), (err as Error).message);
  }
  const match = f.string("match", undefined);
  if (match !== undefined) {
    if (inUrl !== undefined) {
      throw new CheckError(f.at("match"), "the id pattern is in nats already: give it once");
    }
    if (!/^[A-Za-z0-9_*-]{1,128}$/.test(match)) {
      throw new CheckError(f.at("match"), 'an agent-id pattern: letters, digits, "-", "_" and "*"');
    }
  }
  const creds = f.string("creds", undefined);
  return {
    nats,
    ...(match === undefined ? {} : { match }),
    ...(creds === undefined ? {} : { creds }),
  };
}

/** Whether a found agent's id can be a plan's (it names files in the results folder). */
export function isPlanAgentId(id: string): boolean {
  return ID.test(id);
}

function readTimeouts(f: Fields | undefined): Plan["timeouts"] {
  if (f === undefined) {
    const { connectMs, readyMs, silenceMs, lostMs } = PLAN_DEFAULTS;
    return { connectMs, readyMs, silenceMs, lostMs };
  }
  return {
    connectMs: f.duration("connect", PLAN_DEFAULTS.connectMs),
    readyMs: f.duration("ready", PLAN_DEFAULTS.readyMs),
    silenceMs: f.duration("silence", PLAN_DEFAULTS.silenceMs),
    lostMs: f.duration("lost", PLAN_DEFAULTS.lostMs),
  };
}

function readStage(value: unknown, path: string, agentCount: number): Stage {
  return readMapping(value, path, (f) => {
    const name = f.string("name");
    if (!ID.test(name)) {
      throw new CheckError(
        f.at("name"),
        "use letters, digits, '.', '_' and '-' (it names rows and files)",
      );
    }
    const barrier = readBarrier(f.raw("barrier"), f.at("barrier"), agentCount);
    const timeoutMs = f.duration("timeout", undefined);
    const durationMs = f.duration("duration", undefined);
    const workload = readWorkload(f.raw("workload"), f.at("workload"));
    if (durationMs !== undefined && workload.count !== undefined) {
      throw new CheckError(
        f.at("duration"),
        "give the stage a duration or its workload a count, not both",
      );
    }
    if (timeoutMs !== undefined && durationMs !== undefined && timeoutMs <= durationMs) {
      throw new CheckError(f.at("timeout"), "must be longer than the stage's duration");
    }
    return { name, barrier, timeoutMs, durationMs, workload };
  });
}

function readBarrier(value: unknown, path: string, agentCount: number): Barrier {
  if (value === undefined) return { kind: "all" };
  if (typeof value === "string") {
    if ((BARRIERS as readonly string[]).includes(value)) {
      return { kind: value as (typeof BARRIERS)[number] };
    }
    throw new CheckError(
      path,
      `expected all, majority, best_effort or { min: N }, got ${JSON.stringify(value)}`,
    );
  }
  return readMapping(value, path, (f) => ({
    kind: "min" as const,
    min: f.integer("min", 1, agentCount),
  }));
}

const THRESHOLD = /^\s*(<=|>=|==|<|>)\s*(.+?)\s*$/;

function readThresholds(f: Fields): Threshold[] {
  const thresholds: Threshold[] = [];
  for (const metric of THRESHOLD_METRICS) {
    const raw = f.raw(metric);
    if (raw === undefined) continue;
    const path = f.at(metric);
    const m = typeof raw === "string" ? THRESHOLD.exec(raw) : null;
    if (m === null) {
      throw new CheckError(
        path,
        `expected a comparison like "< 20ms" or "== 0", got ${JSON.stringify(raw)}`,
      );
    }
    const comparator = m[1] as Comparator;
    const operand = m[2] as string;
    let value: number;
    if ((LATENCY_METRICS as readonly string[]).includes(metric)) {
      const parsed = parseDuration(operand);
      if ("error" in parsed) throw new CheckError(path, parsed.error);
      value = parsed.value * 1000;
    } else {
      value = Number(operand);
      if (!Number.isFinite(value) || value < 0) {
        throw new CheckError(
          path,
          `expected a number after ${comparator}, got ${JSON.stringify(operand)}`,
        );
      }
    }
    thresholds.push({ metric, comparator, value, text: `${metric} ${comparator} ${operand}` });
  }
  return thresholds;
}

/**
 * `guestlink run PLAN` without the command line: reads and checks the plan, makes the results
 * folder, runs the fleet with a live view, writes the results, and says how it ended (the exit
 * status). `--dry-run` reaches every agent (info and clock offset) and runs nothing.
 */
import { readFile } from "node:fs/promises";
import type { AbortSignalLike } from "../../abort.ts";
import {
  GuestlinkError,
  isGuestlinkError,
  PlanInvalidError,
  toGuestlinkError,
} from "../../errors.ts";
import { readKeyFile } from "../../platform/key-file.ts";
import { nodeKeepAliveClock } from "../../platform/node.ts";
import { openSession } from "../../platform/session.ts";
import type { Clock } from "../../session/runtime.ts";
import type { Session } from "../../session/session.ts";
import { natsDescription, parseNatsServers } from "../../transport/nats-address.ts";
import { agentTime } from "./agent-link.ts";
import { type ClockOffset, measureOffset } from "./clock.ts";
import { FleetRun } from "./fleet.ts";
import { type LiveOutput, LiveState, tickOf } from "./live.ts";
import { EXIT } from "./outcome.ts";
import { isPlanAgentId, type Plan, type PlanAgent, parsePlan } from "./plan.ts";
import { defaultResultsDir, ResultsWriter } from "./results.ts";
import { buildSummary, type RunSummary } from "./summary.ts";
import { checkThresholds } from "./thresholds.ts";

export interface RunPlanOptions {
  planPath: string;
  /** Default `results/NAME-YYYYMMDD-HHMMSS`. */
  resultsDir?: string;
  /** Makes what shows the run live, given who is in it. */
  output(state: LiveState, plan: Plan): LiveOutput;
  /** Aborts the run (Ctrl-C): agents stop and confirm, results are written, exit 3. */
  signal?: AbortSignalLike;
  connect?(agent: PlanAgent, signal: AbortSignalLike): Promise<Session>;
  clock?: Clock;
  /** How often agents send stats and the view is redrawn (default 1 s). */
  intervalMs?: number;
}

export interface RunPlanResult {
  exitCode: number;
  summary: RunSummary;
  resultsDir: string;
}

/** Reads and checks the plan file: PLAN_INVALID (exit 5) for anything wrong with it. */
export async function loadPlan(path: string): Promise<{ plan: Plan; text: string }> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new GuestlinkError(
      code === "ENOENT"
        ? "FILE_NOT_FOUND"
        : code === "EACCES"
          ? "PERMISSION_DENIED"
          : "PLAN_INVALID",
      `cannot read the plan ${path} on this host (${code ?? (err as Error).message})`,
      { details: { path } },
    );
  }
  return { plan: await findPlanAgents(parsePlan(text, path), path), text };
}

/**
 * A plan whose agents are a NATS query (`agents: { nats, match }`) gets the agents found there
 * now; PLAN_INVALID when none is found, or too few for a stage's `barrier: { min }`.
 */
async function findPlanAgents(plan: Plan, path: string): Promise<Plan> {
  const query = plan.agentQuery;
  if (query === undefined) return plan;
  const { match: inUrl, ...servers } = parseNatsServers(
    query.nats,
    (p) => new PlanInvalidError(`${path}: agents.nats: ${p}`),
  );
  const match = query.match ?? inUrl;
  const { findNatsAgents } = await import("../../transport/nats-service.ts");
  const found = await findNatsAgents(servers, {
    ...(query.creds === undefined ? {} : { creds: query.creds }),
    ...(match === undefined ? {} : { match }),
  });
  const where = `${natsDescription(servers)}${match === undefined ? "" : ` matching ${match}`}`;
  if (found.length === 0) {
    throw new PlanInvalidError(
      `${path}: agents: no agent on ${where} answered: are they running with --listen nats://…/ID? (guestlink ls --nats ${natsDescription(servers)} lists them)`,
      { details: { path: "agents" } },
    );
  }
  const odd = found.find((a) => !isPlanAgentId(a.id));
  if (odd !== undefined) {
    throw new PlanInvalidError(
      `${path}: agents: the agent ${JSON.stringify(odd.id)} found on ${where} cannot be in a plan (ids there start with a letter or digit and have at most 64 characters): narrow match`,
      { details: { path: "agents" } },
    );
  }
  plan.stages.forEach((stage, i) => {
    if (stage.barrier.kind === "min" && stage.barrier.min > found.length) {
      throw new PlanInvalidError(
        `${path}: stages[${i}].barrier.min: ${stage.barrier.min} but only ${found.length} agents were found on ${where}`,
        { details: { path: `stages[${i}].barrier.min` } },
      );
    }
  });
  return {
    ...plan,
    agents: found.map((a) => ({
      id: a.id,
      address: a.address,
      ...(query.creds === undefined ? {} : { natsCreds: query.creds }),
    })),
  };
}

/** Opens a session to a plan's agent: a connection lost for longer than timeouts.lost ends it. */
function connectTo(plan: Plan): NonNullable<RunPlanOptions["connect"]> {
  return async (agent: PlanAgent, signal: AbortSignalLike) =>
    openSession(agent.address, {
      signal,
      resume: { windowMs: Math.max(1, plan.timeouts.lostMs) },
      ...(agent.keyFile === undefined ? {} : { key: await readKeyFile(agent.keyFile) }),
      ...(agent.natsCreds === undefined ? {} : { natsCreds: agent.natsCreds }),
    });
}

export async function runPlan(o: RunPlanOptions): Promise<RunPlanResult> {
  const { plan, text } = await loadPlan(o.planPath);
  const clock = o.clock ?? nodeKeepAliveClock;
  const intervalMs = o.intervalMs ?? 1000;
  const startedAtMs = clock.wallNow();
  const resultsDir = o.resultsDir ?? defaultResultsDir(plan.name, new Date(startedAtMs));
  const results = await ResultsWriter.create(resultsDir, text, startedAtMs);
  const state = new LiveState(plan.agents.map((a) => a.id));
  const live = o.output(state, plan);
  const run = new FleetRun({
    plan,
    clock,
    intervalMs,
    connect: o.connect ?? connectTo(plan),
    onEvent(e) {
      live.event(e);
      if (e.type === "interval") results.interval(e.interval, e.record);
    },
    output: (agent, stage, n, stream) => results.output(agent, stage, n, stream),
  });
  const onAbort = () => run.abort();
  o.signal?.addEventListener("abort", onAbort, { once: true });
  if (o.signal?.aborted) run.abort();
  let ticker = clock.setTimer(intervalMs, function tick() {
    const now = clock.wallNow();
    const { stage, totals } = run.stats.takeTick();
    const t = tickOf(
      now,
      (now - startedAtMs) / 1000,
      stage,
      totals,
      state.counts(),
      intervalMs / 1000,
    );
    const all = Object.values(t.ops);
    if (stage !== undefined && all.length > 0) {
      results.ticks.push({
        stage,
        t: t.t,
        opsPerSec: all.reduce((sum, r) => sum + r.opsPerSec, 0),
        mibPerSec: all.reduce((sum, r) => sum + r.mibPerSec, 0),
        p99Us: Math.max(0, ...all.map((r) => r.latencyUs.p99)),
      });
    }
    live.tick(t);
    ticker = clock.setTimer(intervalMs, tick);
  });
  try {
    const result = await run.run();
    const summary = buildSummary(
      plan,
      result,
      checkThresholds(plan.thresholds, result.stats),
      startedAtMs,
      clock.wallNow(),
    );
    await results.finish(summary, result.stats);
    live.summary(summary);
    return { exitCode: summary.exitCode, summary, resultsDir };
  } finally {
    ticker.cancel();
    o.signal?.removeEventListener("abort", onAbort);
  }
}

export interface DryRunAgent {
  id: string;
  address: string;
  reachable: boolean;
  error?: { code: string; message: string };
  info?: unknown;
  clock?: ClockOffset;
  withinSkew?: boolean;
}

/** `--dry-run`: every agent reached (info, clock offset), nothing run. Exit 0, 4 or 5. */
export async function dryRun(
  planPath: string,
  o: { connect?: RunPlanOptions["connect"]; clock?: Clock; signal?: AbortSignalLike } = {},
): Promise<{ exitCode: number; plan: Plan; agents: DryRunAgent[] }> {
  const { plan } = await loadPlan(planPath);
  const clock = o.clock ?? nodeKeepAliveClock;
  const connect = o.connect ?? connectTo(plan);
  const agents = await Promise.all(
    plan.agents.map(async (agent): Promise<DryRunAgent> => {
      const attempt = new AbortController();
      const timer = clock.setTimer(plan.timeouts.connectMs, () =>
        attempt.abort(
          new GuestlinkError("CONNECT_FAILED", `not reached within ${plan.timeouts.connectMs} ms`),
        ),
      );
      const onAbort = () => attempt.abort(o.signal?.reason);
      o.signal?.addEventListener("abort", onAbort, { once: true });
      let session: Session | undefined;
      try {
        session = await connect(agent, attempt.signal);
        const s = session;
        const info = await s.call("info", {}, { deadline: clock.now() + plan.timeouts.connectMs });
        const offset = await measureOffset(
          () => agentTime(s, clock.now() + plan.timeouts.connectMs),
          clock,
          5,
        );
        return {
          id: agent.id,
          address: agent.address,
          reachable: true,
          info,
          clock: offset,
          withinSkew: Math.abs(offset.offsetMs) <= plan.clock.maxSkewMs,
        };
      } catch (err) {
        const e = isGuestlinkError(err) ? err : toGuestlinkError(err);
        return {
          id: agent.id,
          address: agent.address,
          reachable: false,
          error: { code: e.code, message: e.message },
        };
      } finally {
        timer.cancel();
        o.signal?.removeEventListener("abort", onAbort);
        await session?.close().catch(() => {});
      }
    }),
  );
  const bad = agents.some((a) => !a.reachable || a.withinSkew === false);
  return { exitCode: bad ? EXIT.unreachable : EXIT.completed, plan, agents };
}

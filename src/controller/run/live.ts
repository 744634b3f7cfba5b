/**
 * What a fleet run shows while it runs: on a terminal, a table redrawn in place (per agent:
 * state, ops/s, MiB/s, p50/p99/p99.9, errors; and the merged total, "7 of 8 agents (1 stalled)");
 * elsewhere, a line per state change and per second; with `--json`, NDJSON events and nothing
 * else (docs/fleet.md has their schema).
 */
import type { OperationType } from "../../fleet/protocol.ts";
import type { RunEvent } from "./fleet.ts";
import { type OpReport, reportOp, type StageTotals } from "./merge.ts";
import type { RunSummary } from "./summary.ts";

export const EVENTS_VERSION = 1;

/** The merged numbers of one second of the run. */
export interface Tick {
  atMs: number;
  /** Seconds since the run started. */
  t: number;
  stage: string | undefined;
  ops: Partial<Record<OperationType, OpReport>>;
  agents: { total: number; running: number; stalled: number };
}

export interface LiveOutput {
  event(e: RunEvent): void;
  tick(t: Tick): void;
  summary(s: RunSummary): void;
}

interface AgentView {
  state: string;
  stage: string;
  stalled: boolean;
  link: boolean;
  last?: { ops: Partial<Record<OperationType, OpReport>> };
}

/** Who is where, from the events; shared by the table and the lines. */
export class LiveState {
  readonly agents = new Map<string, AgentView>();

  constructor(ids: readonly string[]) {
    for (const id of ids)
      this.agents.set(id, { state: "CONNECTING", stage: "", stalled: false, link: true });
  }

  event(e: RunEvent): void {
    const view = (id: string) => this.agents.get(id) as AgentView;
    if (e.type === "state") {
      const v = view(e.change.agent);
      v.state = e.change.to;
      v.stage = e.change.stage;
      if (e.change.to !== "RUNNING") v.stalled = false;
    } else if (e.type === "stalled") view(e.agent).stalled = e.stalled;
    else if (e.type === "link") view(e.agent).link = e.up;
    else if (e.type === "interval") view(e.interval.agent).last = { ops: e.interval.ops };
  }

  counts(): Tick["agents"] {
    let running = 0;
    let stalled = 0;
    for (const v of this.agents.values()) {
      if (v.state === "RUNNING") running++;
      if (v.stalled) stalled++;
    }
    return { total: this.agents.size, running, stalled };
  }
}

/** Sums a tick's operation types into one: what the table's rates show. */
export function combine(ops: Partial<Record<OperationType, OpReport>>): {
  opsPerSec: number;
  mibPerSec: number;
  errors: number;
  p50: number;
  p99: number;
  p999: number;
} {
  const all = Object.values(ops);
  const worst = (k: "p50" | "p99" | "p999") => Math.max(0, ...all.map((r) => r.latencyUs[k]));
  return {
    opsPerSec: all.reduce((s, r) => s + r.opsPerSec, 0),
    mibPerSec: all.reduce((s, r) => s + r.mibPerSec, 0),
    errors: all.reduce((s, r) => s + r.errors, 0),
    p50: worst("p50"),
    p99: worst("p99"),
    p999: worst("p999"),
  };
}

/** A tick's merged numbers: what arrived over the last `seconds`, from every agent. */
export function tickOf(
  atMs: number,
  t: number,
  stage: string | undefined,
  totals: StageTotals,
  agents: Tick["agents"],
  seconds: number,
): Tick {
  const ops: Tick["ops"] = {};
  for (const [type, op] of totals.ops) ops[type] = reportOp(op, seconds);
  return { atMs, t, stage, ops, agents };
}

export function formatUs(us: number): string {
  if (us >= 1e6) return `${(us / 1e6).toFixed(2)}s`;
  if (us >= 1e4) return `${(us / 1e3).toFixed(1)}ms`;
  if (us >= 1e3) return `${(us / 1e3).toFixed(2)}ms`;
  return `${Math.round(us)}us`;
}

const rate = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

/** `--json`: one JSON object per line on `write`, and nothing else. */
export function ndjsonOutput(write: (line: string) => void): LiveOutput {
  const out = (type: string, at: number, body: object) =>
    write(
      `${JSON.stringify({ schemaVersion: EVENTS_VERSION, type, at: new Date(at).toISOString(), ...body })}\n`,
    );
  return {
    event(e) {
      switch (e.type) {
        case "state":
          return out("state", e.atMs, e.change);
        case "clock":
          return out("clock", e.atMs, { agent: e.agent, ...e.offset });
        case "stage":
          return out("stage", e.atMs, {
            stage: e.stage,
            startAt: new Date(e.startAtMs).toISOString(),
            agents: e.agents,
          });
        case "interval":
          return out("interval", e.atMs, e.interval);
        case "stalled":
          return out("stalled", e.atMs, { agent: e.agent, stage: e.stage, stalled: e.stalled });
        case "link":
          return out("link", e.atMs, {
            agent: e.agent,
            up: e.up,
            ...(e.error ? { error: e.error } : {}),
          });
      }
    },
    tick(t) {
      if (t.stage !== undefined)
        out("tick", t.atMs, { stage: t.stage, t: t.t, agents: t.agents, ops: t.ops });
    },
    summary(s) {
      write(
        `${JSON.stringify({ schemaVersion: EVENTS_VERSION, type: "summary", at: s.endedAt, summary: s })}\n`,
      );
    },
  };
}

/** Not a terminal: a line per state change that matters and one per second. */
export function lineOutput(write: (line: string) => void, state: LiveState): LiveOutput {
  return {
    event(e) {
      state.event(e);
      if (e.type === "stage")
        write(
          `stage ${e.stage}: starting ${e.agents.length} agents at ${new Date(e.startAtMs).toISOString()}\n`,
        );
      if (e.type === "state" && (e.change.to === "FAILED" || e.change.to === "ABORTED")) {
        write(`${e.change.agent}: ${e.change.stage} ${e.change.to}: ${e.change.reason ?? ""}\n`);
      }
      if (e.type === "stalled" && e.stalled) write(`${e.agent}: stalled (no stats)\n`);
      if (e.type === "link")
        write(
          `${e.agent}: connection ${e.up ? "resumed" : `lost${e.error ? ` (${e.error})` : ""}; resuming`}\n`,
        );
    },
    tick(t) {
      if (t.stage === undefined || Object.keys(t.ops).length === 0) return;
      const c = combine(t.ops);
      write(
        `[${t.stage} ${t.t.toFixed(0)}s] ${t.agents.running} of ${t.agents.total} agents${t.agents.stalled ? ` (${t.agents.stalled} stalled)` : ""}: ${rate(c.opsPerSec)} ops/s ${rate(c.mibPerSec)} MiB/s p50 ${formatUs(c.p50)} p99 ${formatUs(c.p99)} p99.9 ${formatUs(c.p999)} errors ${c.errors}\n`,
      );
    },
    summary() {},
  };
}

/** A terminal: the table, redrawn in place each second. */
export function tableOutput(
  write: (text: string) => void,
  state: LiveState,
  columns: () => number,
): LiveOutput {
  let drawn = 0;
  let last: Tick | undefined;
  const draw = () => {
    const width = Math.max(60, columns());
    const head = ["agent", "state", "ops/s", "MiB/s", "p50", "p99", "p99.9", "errors"];
    const rows: string[][] = [];
    for (const [id, v] of state.agents) {
      const c = v.last === undefined ? undefined : combine(v.last.ops);
      const label = v.stalled ? "STALLED" : v.link ? v.state : `${v.state} (link down)`;
      rows.push([
        id,
        label,
        c ? rate(c.opsPerSec) : "",
        c ? rate(c.mibPerSec) : "",
        c ? formatUs(c.p50) : "",
        c ? formatUs(c.p99) : "",
        c ? formatUs(c.p999) : "",
        c ? String(c.errors) : "",
      ]);
    }
    if (last !== undefined && last.stage !== undefined) {
      const c = combine(last.ops);
      const who = `${last.agents.running} of ${last.agents.total} agents${last.agents.stalled ? ` (${last.agents.stalled} stalled)` : ""}`;
      rows.push([
        "total",
        who,
        rate(c.opsPerSec),
        rate(c.mibPerSec),
        formatUs(c.p50),
        formatUs(c.p99),
        formatUs(c.p999),
        String(c.errors),
      ]);
    }
    const widths = head.map((h, i) =>
      Math.max(h.length, ...rows.map((r) => (r[i] as string).length)),
    );
    const line = (cells: string[]) =>
      cells
        .map((cell, i) =>
          i < 2 ? cell.padEnd(widths[i] as number) : cell.padStart(widths[i] as number),
        )
        .join("  ")
        .slice(0, width);
    const title =
      last?.stage === undefined ? "connecting" : `stage ${last.stage}, ${last.t.toFixed(0)} s`;
    const text = [title, line(head), ...rows.map(line)];
    // Up over what was drawn before, then each line cleared and drawn again.
    write(`${drawn > 0 ? `\x1b[${drawn}A` : ""}${text.map((l) => `\x1b[2K${l}\n`).join("")}`);
    drawn = text.length;
  };
  return {
    event(e) {
      state.event(e);
      if (e.type === "state" || e.type === "stalled" || e.type === "link") draw();
    },
    tick(t) {
      if (t.stage !== undefined) last = t;
      draw();
    },
    summary() {},
  };
}

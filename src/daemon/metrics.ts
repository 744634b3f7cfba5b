/**
 * The daemon's Prometheus metrics (`GET /metrics`, issue 18): the agents it holds — state, round
 * trip, clock offset, reconnects, resumes, restarts, stream bytes, damaged frames — the calls it
 * forwards by method and outcome, and its own process. docs/daemon.md#metrics lists them.
 *
 * Per-agent figures are read from `HeldAgent.snapshot()` when scraped, never kept here: an agent
 * the daemon lets go of has no series at the next scrape, and nothing grows with agents that
 * came and went. Every label is bounded: agent ids by the agents held, states, sources, reasons
 * and directions by fixed sets, error codes by `ERROR_CODES`, methods by the agents' services
 * (a name no agent serves is counted as `other`, and so is any beyond MAX_METHODS).
 */
import type { ServerResponse } from "node:http";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { toGuestlinkError } from "../errors.ts";
import { VERSION } from "../version.ts";
import type { AgentSnapshot, AgentSource, AgentState, HeldAgent } from "./held-agent.ts";

const STATES: readonly AgentState[] = ["connecting", "up", "stalled", "down"];
const SOURCES: readonly AgentSource[] = ["config", "discovered", "dialled-in"];

/** Distinct method labels kept; past this, calls are counted under `other`. */
const MAX_METHODS = 100;
/** The method label of a call to a method no agent has, and of any past MAX_METHODS. */
const OTHER_METHOD = "other";

/**
 * Call durations: from a millisecond (an `info` on a local socket) to ten minutes (a long `exec`
 * or a large `get`).
 */
const CALL_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600,
];

/**
 * Default metrics prom-client registers that `promtool check metrics` rejects (gauges named
 * `_total`); each is the sum of a series it also registers (`nodejs_active_handles{type}` …).
 */
const LINT_FAILING_DEFAULTS = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

export class DaemonMetrics {
  /** The daemon's own registry: never prom-client's global one, so daemons do not share series. */
  readonly #registry = new Registry();
  readonly #agents: ReadonlyMap<string, HeldAgent>;
  /** One snapshot per agent, taken as a scrape begins; every per-agent collector reads these. */
  #snapshots: AgentSnapshot[] = [];
  readonly #calls: Counter<"method" | "code">;
  readonly #callSeconds: Histogram<"method">;
  readonly #methods = new Set<string>();

  /** `agents` is read at each scrape: the daemon's map of the agents it holds. */
  constructor(agents: ReadonlyMap<string, HeldAgent>) {
    this.#agents = agents;
    const registers = [this.#registry];
    const each = (fill: (s: AgentSnapshot) => void) => {
      for (const s of this.#snapshots) fill(s);
    };

    new Gauge({
      name: "guestlink_daemon_agents",
      help: "Agents the daemon holds, by how it came to know them.",
      labelNames: ["source"],
      registers,
      collect() {
        this.reset();
        for (const source of SOURCES) this.set({ source }, 0);
        each((s) => this.inc({ source: s.source }));
      },
    });
    new Gauge({
      name: "guestlink_daemon_build_info",
      help: "The daemon's guestlink version; always 1.",
      labelNames: ["version"],
      registers,
      collect() {
        this.reset();
        this.set({ version: VERSION }, 1);
      },
    });
    new Gauge({
      name: "guestlink_agent_up",
      help: "1 when the daemon's session to the agent is up and the agent makes progress, else 0 (connecting, stalled or down).",
      labelNames: ["agent"],
      registers,
      collect() {
        this.reset();
        each((s) => this.set({ agent: s.id }, s.state === "up" ? 1 : 0));
      },
    });
    new Gauge({
      name: "guestlink_agent_state",
      help: "1 for the state the agent is in (connecting, up, stalled, down), 0 for the others.",
      labelNames: ["agent", "state"],
      registers,
      collect() {
        this.reset();
        each((s) => {
          for (const state of STATES) this.set({ agent: s.id, state }, s.state === state ? 1 : 0);
        });
      },
    });
    new Gauge({
      name: "guestlink_agent_round_trip_seconds",
      help: "The last measured round trip to the agent; absent while it is not connected.",
      labelNames: ["agent"],
      registers,
      collect() {
        this.reset();
        each((s) => {
          if (s.rttMs !== null) this.set({ agent: s.id }, s.rttMs / 1000);
        });
      },
    });
    new Gauge({
      name: "guestlink_agent_clock_offset_seconds",
      help: "How far the agent's clock is ahead of the daemon's (negative: behind); absent while it is not connected.",
      labelNames: ["agent"],
      registers,
      collect() {
        this.reset();
        each((s) => {
          if (s.clockOffsetMs !== null) this.set({ agent: s.id }, s.clockOffsetMs / 1000);
        });
      },
    });
    const counter = (
      name: string,
      help: string,
      value: (s: AgentSnapshot) => number,
    ): Counter<"agent"> =>
      new Counter({
        name,
        help,
        labelNames: ["agent"],
        registers,
        collect() {
          this.reset();
          each((s) => this.inc({ agent: s.id }, value(s)));
        },
      });
    counter(
      "guestlink_agent_reconnects_total",
      "Times the daemon's connection to the agent was lost after it had been up.",
      (s) => s.reconnects,
    );
    counter(
      "guestlink_agent_resumes_total",
      "Times the session to the agent went on where it left off on a new connection.",
      (s) => s.resumes,
    );
    counter(
      "guestlink_agent_restarts_total",
      "Times the agent came back as a new process.",
      (s) => s.restarts,
    );
    counter(
      "guestlink_agent_frames_skipped_bytes_total",
      "Bytes from the agent that belonged to no good frame (junk, damaged headers).",
      (s) => s.framesSkippedBytes,
    );
    new Counter({
      name: "guestlink_agent_stream_bytes_total",
      help: "Stream data bytes between the daemon and the agent, by direction as the daemon sees it.",
      labelNames: ["agent", "direction"],
      registers,
      collect() {
        this.reset();
        each((s) => {
          this.inc({ agent: s.id, direction: "sent" }, s.bytesSent);
          this.inc({ agent: s.id, direction: "received" }, s.bytesReceived);
        });
      },
    });
    new Counter({
      name: "guestlink_agent_bad_frames_total",
      help: "Frames from the agent dropped as damaged: header (bad header checksum or fields) or payload (bad payload checksum).",
      labelNames: ["agent", "reason"],
      registers,
      collect() {
        this.reset();
        each((s) => {
          this.inc({ agent: s.id, reason: "header" }, s.badFrames.header);
          this.inc({ agent: s.id, reason: "payload" }, s.badFrames.payload);
        });
      },
    });
    this.#calls = new Counter({
      name: "guestlink_daemon_calls_total",
      help: "Calls forwarded by the daemon to agents, by method and outcome (OK, or the error code).",
      labelNames: ["method", "code"],
      registers,
    });
    this.#callSeconds = new Histogram({
      name: "guestlink_daemon_call_duration_seconds",
      help: "How long calls forwarded by the daemon took, until their result or error, by method.",
      labelNames: ["method"],
      buckets: CALL_BUCKETS,
      registers,
    });
    // The process's own metrics under their usual names (process_*, nodejs_*), which every
    // Prometheus client gives them and dashboards expect; `job` and `instance` say whose they are.
    collectDefaultMetrics({ register: this.#registry });
    for (const name of LINT_FAILING_DEFAULTS) this.#registry.removeSingleMetric(name);
  }

  /**
   * Counts one forwarded call: `error` undefined for a result, else what it failed with.
   * Bound to the instance, to be passed as a callback.
   */
  readonly observeCall = (method: string, seconds: number, error?: unknown): void => {
    const code = error === undefined ? "OK" : toGuestlinkError(error).code;
    let label = method;
    if (code === "METHOD_NOT_FOUND") label = OTHER_METHOD;
    else if (!this.#methods.has(method)) {
      if (this.#methods.size >= MAX_METHODS) label = OTHER_METHOD;
      else this.#methods.add(method);
    }
    this.#calls.inc({ method: label, code });
    this.#callSeconds.observe({ method: label }, seconds);
  };

  /** The metrics in Prometheus' text format. */
  async text(): Promise<string> {
    this.#snapshots = [...this.#agents.values()].map((a) => a.snapshot());
    try {
      return await this.#registry.metrics();
    } finally {
      this.#snapshots = [];
    }
  }

  /** Answers a `GET /metrics` (or `HEAD`). */
  async respond(res: ServerResponse, head = false): Promise<void> {
    const body = await this.text();
    res.writeHead(200, {
      "content-type": this.#registry.contentType,
      "content-length": Buffer.byteLength(body),
      "cache-control": "no-store",
    });
    res.end(head ? undefined : body);
  }
}

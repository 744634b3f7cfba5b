/**
 * One agent the daemon holds (issue 18): a session to it kept up whatever the start order — an
 * address is dialled with backoff until the agent listens, a dropped connection resumes, a
 * restarted agent is noticed (the session reports `restarted`, or a new session is opened when
 * the old one ends) — and what is known of it for the API and the metrics: its state and since
 * when, round trip, clock offset, reconnects, resumes, bytes, bad frames, last error, its info.
 * An agent that dials in (`agent --connect`) is held the same way, minus the dialling.
 */
import { isGuestlinkError } from "../errors.ts";
import { readKeyFile } from "../platform/key-file.ts";
import { nodeKeepAliveClock } from "../platform/node.ts";
import { openSession } from "../platform/session.ts";
import type { Session, SessionEvent } from "../session/session.ts";
import { Supervisor } from "../supervise/supervisor.ts";
import { parseAddress } from "../transport/address.ts";
import { natsDescription } from "../transport/nats-address.ts";

export type AgentState = "connecting" | "up" | "stalled" | "down";

/** How the daemon came to know the agent. */
export type AgentSource = "config" | "discovered" | "dialled-in";

export interface AgentSnapshot {
  id: string;
  address: string | null;
  source: AgentSource;
  labels: Record<string, string>;
  state: AgentState;
  /** Wall-clock milliseconds since the epoch of the last state change. */
  since: number;
  rttMs: number | null;
  clockOffsetMs: number | null;
  reconnects: number;
  resumes: number;
  restarts: number;
  bytesSent: number;
  bytesReceived: number;
  framesSkippedBytes: number;
  badFrames: { header: number; payload: number };
  lastError: { code: string; message: string } | null;
  info: unknown;
}

export type HeldAgentEvent =
  | { type: "state"; id: string; state: AgentState; previous: AgentState; error?: string }
  | { type: "resumed"; id: string; downMs: number }
  | { type: "restarted"; id: string };

/** How often the state is checked against the session's liveness (stalled comes and goes). */
const LIVENESS_POLL_MS = 1_000;

export class HeldAgent {
  readonly id: string;
  readonly address: string | undefined;
  readonly source: AgentSource;
  readonly labels: Record<string, string>;
  #state: AgentState = "connecting";
  #since = Date.now();
  #session: Session | undefined;
  #supervisor: Supervisor<Session> | undefined;
  #reconnects = 0;
  #resumes = 0;
  #restarts = 0;
  /** Bytes of sessions that ended, so the counters keep counting across them. */
  #pastBytes = { sent: 0, received: 0, skipped: 0, header: 0, payload: 0 };
  #lastError: { code: string; message: string } | null = null;
  #info: unknown = null;
  #timer: NodeJS.Timeout;
  readonly #listeners = new Set<(e: HeldAgentEvent) => void>();
  #closed = false;
  /** The agent's key file (tcp: only), read at each dial so a replaced key is picked up. */
  readonly #keyFile: string | undefined;

  constructor(
    id: string,
    source: AgentSource,
    options: { address?: string; labels?: Record<string, string>; keyFile?: string },
  ) {
    this.id = id;
    this.source = source;
    this.address = options.address;
    this.#keyFile = options.keyFile;
    this.labels = options.labels ?? {};
    this.#timer = setInterval(() => this.#checkLiveness(), LIVENESS_POLL_MS);
    this.#timer.unref();
  }

  get state(): AgentState {
    return this.#state;
  }

  /** The live session, for calls through the daemon; undefined while none is up. */
  get session(): Session | undefined {
    return this.#state === "up" || this.#state === "stalled" ? this.#session : undefined;
  }

  onEvent(listener: (e: HeldAgentEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Dials the agent's address and keeps a session to it. */
  hold(): void {
    const address = this.address as string;
    const supervisor = new Supervisor<Session>({
      connect: async (signal) => {
        const key = this.#keyFile === undefined ? undefined : await readKeyFile(this.#keyFile);
        const session = await openSession(address, { signal, ...(key ? { key } : {}) });
        return session;
      },
      closed: (session) => session.closed,
      dispose: (session) => session.abort(),
      clock: nodeKeepAliveClock,
      random: Math.random,
      backoff: { baseMs: 100, ceilingMs: 5_000 },
      stableAfterMs: 10_000,
    });
    supervisor.onEvent((e) => {
      if (this.#closed) return;
      if (e.state === "ready") {
        const session = supervisor.current;
        if (session !== undefined) this.#attach(session);
      } else if (e.state === "transient-failure") {
        if (e.error !== undefined) this.#lastError = describe(e.error);
        if (e.previous === "ready") this.#reconnects++;
        this.#setState(
          this.#state === "connecting" ? "connecting" : "down",
          this.#lastError?.message,
        );
      }
    });
    this.#supervisor = supervisor;
    supervisor.start();
  }

  /** An agent that dialled in: its session, until it ends (a new one replaces it). */
  adopt(session: Session): void {
    if (this.#session !== undefined && this.#session !== session) {
      this.#reconnects++;
      this.#session.abort();
    }
    this.#attach(session);
    void session.closed.then((err) => {
      if (this.#session !== session || this.#closed) return;
      if (err !== undefined) this.#lastError = describe(err);
      this.#setState("down", this.#lastError?.message);
    });
  }

  snapshot(): AgentSnapshot {
    const s = this.#session;
    const live = s !== undefined && this.#state !== "connecting";
    return {
      id: this.id,
      // A nats: address may hold a password or token: the API shows it without them.
      address: this.address === undefined ? null : shownAddress(this.address),
      source: this.source,
      labels: this.labels,
      state: this.#state,
      since: this.#since,
      rttMs: live ? (s.rttMs ?? null) : null,
      clockOffsetMs: live ? (s.clockOffsetMs ?? null) : null,
      reconnects: this.#reconnects,
      resumes: this.#resumes,
      restarts: this.#restarts,
      bytesSent: this.#pastBytes.sent + (s?.stats.dataBytesSent ?? 0),
      bytesReceived: this.#pastBytes.received + (s?.stats.dataBytesReceived ?? 0),
      framesSkippedBytes: this.#pastBytes.skipped + (s?.wireStats.skippedBytes ?? 0),
      badFrames: {
        header: this.#pastBytes.header + (s?.wireStats.badHeaders ?? 0),
        payload: this.#pastBytes.payload + (s?.wireStats.badPayloads ?? 0),
      },
      lastError: this.#lastError,
      info: this.#info,
    };
  }

  /** Stops holding it: its session is closed gracefully (bounded), then let go. */
  async close(graceMs = 2_000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    const session = this.#supervisor?.shutdown() ?? this.#session;
    if (session !== undefined) {
      void session.close();
      const timer = setTimeout(() => session.abort(), graceMs);
      await session.closed;
      clearTimeout(timer);
    }
  }

  #attach(session: Session): void {
    const previous = this.#session;
    if (previous !== undefined && previous !== session) this.#addPast(previous);
    this.#session = session;
    session.onEvent((e: SessionEvent) => this.#onSessionEvent(session, e));
    this.#setState("up");
    void session.call("info").then(
      (info) => {
        if (this.#session === session) this.#info = info;
      },
      () => {},
    );
  }

  #onSessionEvent(session: Session, e: SessionEvent): void {
    if (this.#session !== session || this.#closed) return;
    switch (e.type) {
      case "disconnected":
        this.#lastError = describe(e.error);
        this.#reconnects++;
        this.#setState("down", e.error.message);
        break;
      case "resumed":
        this.#resumes++;
        this.#emit({ type: "resumed", id: this.id, downMs: e.downMs });
        this.#setState("up");
        break;
      case "restarted":
        this.#restarts++;
        this.#emit({ type: "restarted", id: this.id });
        this.#setState("up");
        void session.call("info").then(
          (info) => {
            if (this.#session === session) this.#info = info;
          },
          () => {},
        );
        break;
      case "stalled":
        this.#setState("stalled");
        break;
      case "progressing":
        this.#setState("up");
        break;
    }
  }

  #checkLiveness(): void {
    const s = this.#session;
    if (s === undefined || this.#state === "connecting" || this.#state === "down") return;
    if (s.liveness === "stalled") this.#setState("stalled");
    else if (s.liveness === "alive") this.#setState("up");
  }

  #addPast(s: Session): void {
    this.#pastBytes.sent += s.stats.dataBytesSent;
    this.#pastBytes.received += s.stats.dataBytesReceived;
    this.#pastBytes.skipped += s.wireStats.skippedBytes;
    this.#pastBytes.header += s.wireStats.badHeaders;
    this.#pastBytes.payload += s.wireStats.badPayloads;
  }

  #setState(state: AgentState, error?: string): void {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.#since = Date.now();
    this.#emit({ type: "state", id: this.id, state, previous, ...(error ? { error } : {}) });
  }

  #emit(e: HeldAgentEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // A listener's failure is its own.
      }
    }
  }
}

function describe(err: unknown): { code: string; message: string } {
  if (isGuestlinkError(err)) return { code: err.code, message: err.message };
  return { code: "UNKNOWN", message: err instanceof Error ? err.message : String(err) };
}

/** An address as the API shows it: a `nats:` one without its credentials. */
export function shownAddress(address: string): string {
  if (!address.startsWith("nats:")) return address;
  const a = parseAddress(address);
  return a.kind === "nats" ? natsDescription(a, a.agent) : address;
}

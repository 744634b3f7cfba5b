/**
 * `guestlink serve` (issue 18): a host daemon holding a session to every agent of the host —
 * agents named in its config, agents found by socket patterns (picked up and dropped live),
 * agents that dial in — and an HTTP API over them on a Unix socket (mode 0600) and on loopback
 * TCP: the agents and their figures, server-sent events of what happens to them and of their
 * telemetry, and a tunnel through which the CLI's `@ID` addresses reach an agent. docs/daemon.md
 * is the reference.
 */
import { chmod, mkdir, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { isIP, connect as netConnect, type Socket } from "node:net";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { Discovery } from "../controller/discover.ts";
import { watchTelemetry } from "../controller/telemetry.ts";
import { ConfigInvalidError, GuestlinkError, InvalidOptionError } from "../errors.ts";
import { type SessionServer, serveSessions, sessionOptions } from "../platform/session.ts";
import { Session } from "../session/session.ts";
import { parseNatsServers } from "../transport/nats-address.ts";
import { NatsDiscovery } from "../transport/nats-service.ts";
import { NodeStreamTransport } from "../transport/node-stream.ts";
import { VERSION } from "../version.ts";
import type { ServeConfig } from "./config.ts";
import { serveDashboard } from "./dashboard/serve.ts";
import { serveExecHttp, serveExecUpgrade } from "./exec-ws.ts";
import { serveFiles } from "./files-http.ts";
import { forwardCalls } from "./forward.ts";
import { type AgentSource, HeldAgent, type HeldAgentEvent, shownAddress } from "./held-agent.ts";
import { errorBody, refuseUpgrade, sendError, sendJson } from "./http-errors.ts";
import { DaemonMetrics } from "./metrics.ts";
import { UPGRADE_PROTOCOL } from "./paths.ts";
import { SseStream } from "./sse.ts";

export type DaemonLog = (
  level: "info" | "warn",
  message: string,
  fields?: Record<string, unknown>,
) => void;

export type DaemonEvent =
  | HeldAgentEvent
  | { type: "added"; id: string; source: AgentSource; address: string | null }
  | { type: "removed"; id: string };

export interface DaemonOptions {
  log?: DaemonLog;
  /** How often discovery patterns are looked at. Default 500 ms. */
  discoverPollMs?: number;
}

/** Events kept for a client that connects to /v1/events, so it sees what just happened. */
const RECENT_EVENTS = 100;

export class Daemon {
  readonly config: ServeConfig;
  readonly agents = new Map<string, HeldAgent>();
  readonly metrics = new DaemonMetrics(this.agents);
  readonly #log: DaemonLog;
  readonly #listeners = new Set<(e: DaemonEvent) => void>();
  readonly #recent: (DaemonEvent & { at: number })[] = [];
  readonly #discoveries: (Discovery | NatsDiscovery)[] = [];
  readonly #dialIns: SessionServer[] = [];
  readonly #servers: Server[] = [];
  readonly #pollMs: number;
  #httpAddress: string | undefined;
  #closing: Promise<void> | undefined;

  private constructor(config: ServeConfig, options: DaemonOptions) {
    this.config = config;
    this.#log = options.log ?? (() => {});
    this.#pollMs = options.discoverPollMs ?? 500;
  }

  static async start(config: ServeConfig, options: DaemonOptions = {}): Promise<Daemon> {
    const daemon = new Daemon(config, options);
    try {
      await daemon.#start();
    } catch (err) {
      await daemon.close();
      throw err;
    }
    return daemon;
  }

  /** Where the HTTP API listens on TCP (`host:port`, the port chosen when 0 was asked). */
  get httpAddress(): string | undefined {
    return this.#httpAddress;
  }

  onEvent(listener: (e: DaemonEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stops the API, lets go of every agent (sessions closed gracefully, bounded), and resolves. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #start(): Promise<void> {
    for (const a of this.config.agents) {
      this.#add(a.id, "config", a.address, a.labels, a.keyFile);
    }
    for (const pattern of this.config.discover) {
      if (pattern.startsWith("nats:")) {
        await this.#discoverOnNats(pattern);
        continue;
      }
      const discovery: Discovery = new Discovery(
        pattern,
        {
          found: (m) => {
            const id = m.name;
            if (this.agents.has(id)) {
              this.#log("warn", `${m.path}: an agent named ${id} is held already; not added`, {
                id,
              });
              return;
            }
            this.#add(id, "discovered", `unix:${m.path}`, {});
          },
          lost: (m) => {
            const held = this.agents.get(m.name);
            if (held?.source === "discovered" && held.address === `unix:${m.path}`)
              this.#remove(m.name);
          },
        },
        this.#pollMs,
        true,
      );
      this.#discoveries.push(discovery);
      await discovery.start();
    }
    for (const address of this.config.listen) {
      const server = await serveSessions(address, (session) => this.#dialledIn(session, address), {
        role: "client",
        peer: daemonPeer(),
      });
      this.#dialIns.push(server);
      this.#log("info", `agents may dial in at ${address}`, { address });
    }
    await this.#listenSocket(this.config.socket);
    if (this.config.http !== null) await this.#listenHttp(this.config.http);
  }

  #add(
    id: string,
    source: AgentSource,
    address: string | null,
    labels: Record<string, string>,
    keyFile?: string,
  ): HeldAgent {
    const held = new HeldAgent(id, source, { address: address ?? undefined, labels, keyFile });
    this.agents.set(id, held);
    held.onEvent((e) => this.#emit(e));
    this.#emit({
      type: "added",
      id,
      source,
      address: address === null ? null : shownAddress(address),
    });
    if (address !== null && source !== "dialled-in") held.hold();
    return held;
  }

  #remove(id: string): void {
    const held = this.agents.get(id);
    if (held === undefined) return;
    this.agents.delete(id);
    void held.close();
    this.#emit({ type: "removed", id });
  }

  #dialledIn(session: Session, address: string): void {
    void session.ready.then(
      (peer) => {
        const id = peer.id;
        const known = this.agents.get(id);
        if (known !== undefined && known.source !== "dialled-in") {
          this.#log(
            "warn",
            `an agent dialled in at ${address} as ${id}, a name held already; refused`,
            {
              id,
            },
          );
          session.abort(
            new GuestlinkError("POLICY_DENIED", `the daemon holds an agent named ${id} already`),
          );
          return;
        }
        (known ?? this.#add(id, "dialled-in", null, {})).adopt(session);
      },
      () => {},
    );
  }

  #emit(e: DaemonEvent): void {
    this.#recent.push({ ...e, at: Date.now() });
    if (this.#recent.length > RECENT_EVENTS) this.#recent.shift();
    if (e.type === "state") {
      this.#log(
        e.state === "up" ? "info" : "warn",
        `agent ${e.id}: ${e.previous} → ${e.state}${e.error ? ` (${e.error})` : ""}`,
        {
          id: e.id,
          state: e.state,
        },
      );
    }
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  async #listenSocket(path: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    if (await answers(path)) {
      throw new GuestlinkError("ADDRESS_IN_USE", `a daemon already answers on ${path}`, {
        details: { address: path },
      });
    }
    await rm(path, { force: true });
    const server = this.#httpServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
    await chmod(path, 0o600);
    this.#servers.push(server);
    this.#log("info", `API on ${path}`, { socket: path });
  }

  async #listenHttp(hostPort: string): Promise<void> {
    const at = hostPort.lastIndexOf(":");
    const host = hostPort.slice(0, at).replace(/^\[|\]$/g, "");
    const port = Number(hostPort.slice(at + 1));
    const server = this.#httpServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) =>
        reject(
          err.code === "EADDRINUSE"
            ? new GuestlinkError(
                "ADDRESS_IN_USE",
                `${hostPort} is in use: is a daemon running already? (--http)`,
                {
                  details: { address: hostPort },
                },
              )
            : err,
        ),
      );
      server.listen(port, host, () => resolve());
    });
    const bound = server.address();
    if (bound !== null && typeof bound === "object") {
      this.#httpAddress = `${isIP(bound.address) === 6 ? `[${bound.address}]` : bound.address}:${bound.port}`;
    }
    this.#servers.push(server);
    this.#log("info", `API and dashboard on http://${this.#httpAddress}/`, {
      http: this.#httpAddress,
    });
  }

  #httpServer(): Server {
    const server = createServer((req, res) => {
      this.#route(req, res).catch((err: unknown) => sendError(res, err));
    });
    server.on("upgrade", (req, socket, head) => this.#upgrade(req, socket as Socket, head));
    return server;
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://daemon");
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    const get = req.method === "GET" || req.method === "HEAD";
    if (url.pathname === "/metrics" && get) return this.metrics.respond(res, req.method === "HEAD");
    if (get && serveDashboard(req, res, url.pathname)) return;
    if (serveExecHttp(req, res) || (await serveFiles(req, res, this.agents))) return;
    if (parts[0] === "v1" && parts[1] === "agents") {
      if (parts.length === 2 && get) {
        sendJson(res, 200, { agents: [...this.agents.values()].map((a) => a.snapshot()) });
        return;
      }
      const held = this.#agent(parts[2] as string);
      if (parts.length === 3 && get) {
        sendJson(res, 200, held.snapshot());
        return;
      }
      if (parts.length === 4 && parts[3] === "telemetry" && get) {
        this.#telemetry(held, url, req, res);
        return;
      }
    }
    if (parts[0] === "v1" && parts[1] === "events" && parts.length === 2 && get) {
      this.#events(res);
      return;
    }
    throw new GuestlinkError("NOT_FOUND", `no such path: ${req.method} ${url.pathname}`, {
      details: { path: url.pathname, method: req.method },
    });
  }

  #agent(id: string): HeldAgent {
    const held = this.agents.get(id);
    if (held === undefined) {
      throw new GuestlinkError("AGENT_NOT_FOUND", `the daemon holds no agent ${id}`, {
        details: { id, available: [...this.agents.keys()] },
      });
    }
    return held;
  }

  #live(held: HeldAgent): Session {
    const session = held.session;
    if (session === undefined) {
      throw new GuestlinkError(
        "AGENT_UNAVAILABLE",
        `agent ${held.id} is ${held.state} (not connected now)`,
        {
          details: { id: held.id, state: held.state },
        },
      );
    }
    return session;
  }

  #events(res: ServerResponse): void {
    const sse = new SseStream(res);
    sse.sendOrDrop(
      "agents",
      [...this.agents.values()].map((a) => a.snapshot()),
    );
    for (const e of this.#recent) sse.sendOrDrop(e.type, e);
    const off = this.onEvent((e) => sse.sendOrDrop(e.type, { ...e, at: Date.now() }));
    res.once("close", off);
  }

  #telemetry(held: HeldAgent, url: URL, req: IncomingMessage, res: ServerResponse): void {
    const session = this.#live(held);
    const intervalMs = Number(url.searchParams.get("interval") ?? 1000);
    if (!Number.isFinite(intervalMs) || intervalMs < 100 || intervalMs > 3_600_000) {
      throw new InvalidOptionError("interval is milliseconds from 100 to 3600000", {
        details: { interval: url.searchParams.get("interval") },
      });
    }
    const sse = new SseStream(res);
    const stop = new AbortController();
    req.once("close", () => stop.abort());
    void (async () => {
      try {
        for await (const sample of watchTelemetry(session, { intervalMs, signal: stop.signal })) {
          sse.send("sample", sample);
        }
      } catch (err) {
        if (!stop.signal.aborted) sse.sendOrDrop("error", errorBody(err));
      } finally {
        sse.close();
      }
    })();
  }

  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    if (serveExecUpgrade(req, socket, head, this.agents)) return;
    const url = new URL(req.url ?? "/", "http://daemon");
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    if (
      (req.headers.upgrade ?? "").toLowerCase() !== UPGRADE_PROTOCOL ||
      parts.length !== 4 ||
      parts[0] !== "v1" ||
      parts[1] !== "agents" ||
      parts[3] !== "session"
    ) {
      refuseUpgrade(socket, new GuestlinkError("NOT_FOUND", `no such upgrade: ${url.pathname}`));
      return;
    }
    const id = parts[2] as string;
    const held = this.agents.get(id);
    if (held === undefined) {
      refuseUpgrade(
        socket,
        new GuestlinkError("AGENT_NOT_FOUND", `the daemon holds no agent ${id}`, {
          details: { id, available: [...this.agents.keys()] },
        }),
      );
      return;
    }
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: ${UPGRADE_PROTOCOL}\r\nconnection: Upgrade\r\n\r\n`,
    );
    if (head.length > 0) socket.unshift(head);
    const transport = new NodeStreamTransport(socket, socket, { description: `@${id} client` });
    const session = new Session(
      transport,
      sessionOptions("server", {
        resume: false,
        peer: daemonPeer(),
        services: (held.snapshot().info as { services?: string[] } | null)?.services ?? [],
      }),
    );
    forwardCalls(session, () => held.session, id, this.metrics.observeCall);
  }

  /** Holds every agent the NATS servers of `query` have (whose id matches), found live. */
  async #discoverOnNats(query: string): Promise<void> {
    const { match, ...servers } = parseNatsServers(query, (p) => new ConfigInvalidError(p));
    const discovery = new NatsDiscovery(
      servers,
      {
        found: (agent) => {
          if (this.agents.has(agent.id)) {
            this.#log(
              "warn",
              `${agent.description}: an agent named ${agent.id} is held already; not added`,
              { id: agent.id },
            );
            return;
          }
          this.#add(agent.id, "discovered", agent.address, {});
        },
        lost: (agent) => {
          const held = this.agents.get(agent.id);
          if (held?.source === "discovered" && held.address === agent.address)
            this.#remove(agent.id);
        },
      },
      { ...(match === undefined ? {} : { match }), pollMs: Math.max(this.#pollMs, 1_000) },
    );
    this.#discoveries.push(discovery);
    await discovery.start();
  }

  async #close(): Promise<void> {
    await Promise.all(this.#discoveries.map((d) => d.stop()));
    await Promise.all(
      this.#servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
    if (this.config.socket !== "") await rm(this.config.socket, { force: true }).catch(() => {});
    await Promise.all(this.#dialIns.map((s) => s.close({ graceMs: 2_000 })));
    await Promise.all([...this.agents.values()].map((a) => a.close()));
  }
}

function daemonPeer() {
  return { id: `guestlink-serve@${hostname()}`, hostname: hostname(), version: VERSION };
}

/** Whether something accepts connections on a Unix socket path now. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

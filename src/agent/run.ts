/**
 * Puts an agent on the wire: listening on any number of addresses, connecting out to a host, or
 * on this process's stdio. What happens is reported through a small logger interface (the CLI
 * passes pino writing to stderr); nothing here writes to stdout, which stdio mode owns.
 */
import { arch, hostname, release, type } from "node:os";
import { GuestlinkError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import { nodeKeepAliveClock, nodeRuntime } from "../platform/node.ts";
import {
  type EventLogger,
  logSessionEvents,
  openSession,
  type SessionServer,
  serveSessions,
} from "../platform/session.ts";
import type { RegistryLimits } from "../session/registry.ts";
import { Session } from "../session/session.ts";
import { Supervisor } from "../supervise/supervisor.ts";
import { isLoopbackHost, parseAddress } from "../transport/address.ts";
import { connectStdio } from "../transport/stdio.ts";
import { keyId } from "../transport/tls.ts";
import type { Agent } from "./agent.ts";
import { DEFAULT_DRAIN_TIMEOUT_MS } from "./drain.ts";

export type AgentLogger = EventLogger;

export interface RunAgentOptions {
  agent: Agent;
  /** Addresses to listen on (unix, tcp). */
  listen?: readonly string[];
  /** An address to connect out to (the host listens); reconnects when the session ends. */
  connect?: string;
  /** Serve exactly one session on this process's stdin and stdout. */
  stdio?: boolean;
  log: AgentLogger;
  /** Upper bound of the first reconnect delay with `connect` (full jitter; doubles up to 30 s). */
  reconnectDelayMs?: number;
  /**
   * `false` asks hosts to go without payload checksums (both sides must agree; never over a
   * lossy pipe). Default: every payload checked.
   */
  payloadChecksum?: boolean;
  /** How long a session whose connection was lost waits to be resumed (default 60 s). */
  resumeWindowMs?: number;
  /**
   * The agent's 32-byte key: every `tcp:` address (listened on or connected to) is then TLS 1.3
   * with it, and a peer without it is refused (AUTH_FAILED). Other transports ignore it.
   */
  key?: Uint8Array;
  /** Allow listening on a non-loopback `tcp:` address without a key (refused otherwise). */
  insecure?: boolean;
  /** For `nats:` addresses that name none: the NATS credentials file (`--nats-creds`). */
  natsCreds?: string;
  /**
   * What one peer may make the agent hold (docs/security.md#limits): per listener, sessions and
   * connections waiting for their HELLO (registry.ts); per session, the time to HELLO, streams
   * open and calls running (session/options.ts). Defaults where not given.
   */
  limits?: AgentLimits;
  /**
   * On a graceful `stop()`, how long running work may take to finish before its sessions are
   * aborted and its commands killed (default `DEFAULT_DRAIN_TIMEOUT_MS`).
   */
  drainTimeoutMs?: number;
}

export interface AgentLimits extends RegistryLimits {
  /** How long a new connection has to say HELLO (a keyed one's TLS handshake included). */
  helloTimeoutMs?: number;
  /** Streams a peer may have open at once in one session (LIMIT_EXCEEDED past it). */
  maxStreams?: number;
  /** Calls a peer may have running at once in one session (the agent stops reading past it). */
  maxCalls?: number;
}

export { DEFAULT_DRAIN_TIMEOUT_MS } from "./drain.ts";

export interface RunningAgent {
  /** The addresses actually listened on (a tcp port 0 resolved). */
  readonly addresses: readonly string[];
  /** Settles when the agent has stopped: with stdio, when its one session ends. */
  readonly done: Promise<void>;
  /**
   * Stops accepting and closes the sessions gracefully: running work has until `drainTimeoutMs`
   * to finish, then the sessions are aborted. With `abort` (or called again with it) they are
   * aborted at once. Either way, resolves once every command's process group is gone.
   */
  stop(options?: { abort?: boolean }): Promise<void>;
}

/** What each way of running the agent provides for stopping it. */
interface Mode {
  addresses: readonly string[];
  /** Settles when the agent has stopped by itself (stdio: its one session ended). */
  done: Promise<void>;
  /** Stops accepting, asks every session to close, and resolves once they all have. */
  close(): Promise<void>;
  /** The sessions still open, to abort when draining runs out of time. */
  live(): Iterable<Session>;
}

export async function runAgent(options: RunAgentOptions): Promise<RunningAgent> {
  const { agent, log } = options;
  const modes = [
    options.listen?.length ? "listen" : "",
    options.connect ? "connect" : "",
    options.stdio ? "stdio" : "",
  ].filter(Boolean);
  if (modes.length !== 1) {
    throw new InvalidOptionError(
      modes.length === 0
        ? "say where the agent should be reached: --listen ADDR, --connect ADDR or --stdio"
        : `choose one of --listen, --connect and --stdio (got ${modes.join(" and ")})`,
    );
  }
  const keyFor = (address: string) =>
    parseAddress(address).kind === "tcp" ? options.key : undefined;
  for (const address of options.listen ?? []) {
    const a = parseAddress(address);
    if (a.kind === "tcp" && options.key === undefined && !options.insecure) {
      if (!isLoopbackHost(a.host)) {
        throw new InvalidOptionError(
          `refusing to listen on ${address} without a key: anyone who can reach it could run commands here; give --key-file FILE (guestlink keygen FILE makes one), or --insecure if the network is trusted`,
          { details: { address } },
        );
      }
    }
  }
  const limits = options.limits ?? {};
  const sessionOptions = {
    ...agent.sessionOptions(),
    ...(limits.helloTimeoutMs === undefined ? {} : { handshakeTimeoutMs: limits.helloTimeoutMs }),
    ...(limits.maxStreams === undefined ? {} : { maxPeerStreams: limits.maxStreams }),
    ...(limits.maxCalls === undefined ? {} : { maxIncomingCalls: limits.maxCalls }),
    ...(options.payloadChecksum === false ? { payloadChecksum: false } : {}),
    ...(options.resumeWindowMs ? { resume: { windowMs: options.resumeWindowMs } } : {}),
  };
  const watch = (session: Session, where: string) => {
    logSessionEvents(session, log, { where });
    void session.ready.then(
      (peer) => log.info({ where, peer: peer.id, host: peer.hostname }, "session open"),
      () => {},
    );
    void session.closed.then((err) =>
      err
        ? log.warn({ where, code: err.code, err: err.message }, "session ended")
        : log.info({ where }, "session closed"),
    );
  };

  if (options.stdio) {
    const transport = await connectStdio();
    const session = new Session(transport, {
      role: "server",
      runtime: nodeRuntime(),
      ...sessionOptions,
    });
    agent.attach(session);
    watch(session, "stdio");
    return stoppable(options, {
      addresses: ["stdio"],
      done: session.closed.then(() => {}),
      async close() {
        await session.close();
        await session.closed;
      },
      live: () => [session],
    });
  }

  if (options.connect) {
    const address = options.connect;
    const stopping = () => new GuestlinkError("SESSION_CLOSED", "the agent is stopping");
    const supervisor = new Supervisor<Session>({
      connect: async (signal) => {
        const session = await openSession(address, {
          ...sessionOptions,
          key: keyFor(address),
          role: "server",
          signal,
          setup: (s) => agent.attach(s),
        });
        watch(session, address);
        return session;
      },
      closed: (session) => session.closed,
      dispose: (session) => session.abort(stopping()),
      clock: nodeKeepAliveClock,
      random: Math.random,
      backoff: { baseMs: options.reconnectDelayMs },
    });
    let stopped!: () => void;
    const done = new Promise<void>((resolve) => {
      stopped = resolve;
    });
    supervisor.onEvent((e) => {
      if (e.state === "shutdown") stopped();
      else if (e.state === "transient-failure" && e.previous === "connecting") {
        log.warn(
          {
            where: address,
            code: isGuestlinkError(e.error) ? e.error.code : undefined,
            err: e.error instanceof Error ? e.error.message : String(e.error),
            attempt: e.attempt,
            retryInMs: e.nextRetryInMs,
          },
          "cannot reach the host",
        );
      }
    });
    supervisor.start();
    let current: Session | undefined;
    return stoppable(options, {
      addresses: [address],
      done,
      async close() {
        current = supervisor.shutdown(stopping());
        if (current) {
          void current.close();
          await current.closed;
        }
        await done;
      },
      live: () => (current ? [current] : []),
    });
  }

  const servers: SessionServer[] = [];
  try {
    for (const address of options.listen ?? []) {
      const server = await serveSessions(
        address,
        (session) => {
          agent.attach(session);
          watch(session, address);
        },
        sessionOptions,
        {
          key: keyFor(address),
          natsCreds: options.natsCreds,
          natsMetadata: () => ({
            hostname: hostname(),
            pid: String(process.pid),
            os: `${type()} ${release()} ${arch()}`,
            services: [...agent.allowed].join(","),
            sessions: String(servers.reduce((n, s) => n + s.sessions.size, 0)),
          }),
          maxSessions: limits.maxSessions,
          maxHandshaking: limits.maxHandshaking,
          onLimit: limitLog(address, log),
          // Keyed or not, a tcp: listener refuses a peer whose key does not match (or exist).
          onRefused: refusalLog(address, log),
        },
      );
      servers.push(server);
      log.info(
        keyFor(address) === undefined
          ? { address: server.address }
          : {
              address: server.address,
              tls: "TLS 1.3, pre-shared key",
              keyId: keyId(options.key as Uint8Array),
            },
        "listening",
      );
    }
  } catch (err) {
    await Promise.all(servers.map((s) => s.close({ abort: true })));
    throw err;
  }
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => {
    stopped = resolve;
  });
  return stoppable(options, {
    addresses: servers.map((s) => s.address),
    done,
    async close() {
      await Promise.all(servers.map((s) => s.close()));
      stopped();
    },
    live: () => servers.flatMap((s) => [...s.sessions]),
  });
}

/** How often the agent says how many silent connections it dropped (each would be a line). */
const DROPPED_REPORT_MS = 10_000;

/**
 * Logs a listener's refusals at its limits: each session refused, and the connections dropped
 * for never saying HELLO summed up at most once every 10 s (a flood of them is one line).
 */
function limitLog(
  where: string,
  log: AgentLogger,
): (r: { limit: "maxSessions" | "maxHandshaking"; address: string }) => void {
  let dropped = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  return ({ limit, address }) => {
    if (limit === "maxSessions") {
      log.warn(
        { where, peer: address, code: "LIMIT_EXCEEDED", limit },
        `refused a session from ${address}: this listener holds as many as it takes (--max-connections)`,
      );
      return;
    }
    dropped++;
    if (timer !== undefined) return;
    const report = () => {
      timer = undefined;
      if (dropped === 0) return;
      log.warn(
        { where, code: "LIMIT_EXCEEDED", limit, dropped },
        `dropped ${dropped} connections that had not said HELLO, to make room for new ones (--max-pending)`,
      );
      dropped = 0;
      timer = setTimeout(report, DROPPED_REPORT_MS);
      timer.unref();
    };
    report();
  };
}

/** Refusals logged one by one in each 10 s; past that they are counted and summed up. */
const REFUSALS_PER_REPORT = 20;

/**
 * Logs the connections a tcp: listener refused for their key, each with its peer, up to 20 in
 * 10 s; past that (a flood) the rest are counted and said in one line when the 10 s are over.
 */
function refusalLog(
  where: string,
  log: AgentLogger,
): (r: { peer: string; reason: string }) => void {
  let told = 0;
  let untold = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const windowEnds = () => {
    timer = undefined;
    if (untold > 0) {
      log.warn(
        { where, code: "AUTH_FAILED", refused: untold },
        `refused ${untold} more connections in ${DROPPED_REPORT_MS / 1000} s (each not logged)`,
      );
    }
    told = 0;
    untold = 0;
  };
  return ({ peer, reason }) => {
    if (timer === undefined) {
      timer = setTimeout(windowEnds, DROPPED_REPORT_MS);
      timer.unref();
    }
    if (told >= REFUSALS_PER_REPORT) {
      untold++;
      return;
    }
    told++;
    log.warn({ where, peer, code: "AUTH_FAILED" }, `refused ${peer}: ${reason}`);
  };
}

/**
 * The stop every mode shares: a graceful close bounded by the drain deadline, then abort; and
 * after the sessions, their commands (a session's end stops its calls' groups; this also waits
 * for them and stops what finished calls left behind).
 */
function stoppable(options: RunAgentOptions, mode: Mode): RunningAgent {
  const drainMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
  let closing: Promise<void> | undefined;
  let drainTimer: NodeJS.Timeout | undefined;
  let aborted = false;
  const abortAll = () => {
    clearTimeout(drainTimer);
    if (aborted) return;
    aborted = true;
    const err = new GuestlinkError("SESSION_CLOSED", "the agent is stopping");
    for (const session of mode.live()) session.abort(err);
  };
  let finished: Promise<void> | undefined;
  // Stopped by itself (stdio), its commands go too.
  const done = mode.done.then(() => options.agent.stopCommands());
  return {
    addresses: mode.addresses,
    done,
    stop({ abort = false } = {}) {
      closing ??= mode.close();
      if (abort) abortAll();
      else if (drainTimer === undefined && !aborted) {
        drainTimer = setTimeout(() => {
          options.log.warn(
            { drainTimeoutMs: drainMs },
            "drain deadline passed: stopping the sessions and their commands",
          );
          abortAll();
        }, drainMs);
      }
      finished ??= closing.then(async () => {
        clearTimeout(drainTimer);
        await options.agent.stopCommands();
      });
      return finished;
    },
  };
}

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
import { Session } from "../session/session.ts";
import { Supervisor } from "../supervise/supervisor.ts";
import { isLoopbackHost, parseAddress } from "../transport/address.ts";
import { connectStdio } from "../transport/stdio.ts";
import type { Agent } from "./agent.ts";

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
   * On a graceful `stop()`, how long running work may take to finish before its sessions are
   * aborted and its commands killed (default `DEFAULT_DRAIN_TIMEOUT_MS`).
   */
  drainTimeoutMs?: number;
}

/** How long a graceful stop lets running work finish (SIGTERM to a container gets 10 s too). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;

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
  const sessionOptions = {
    ...agent.sessionOptions(),
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
          // Keyed or not, a tcp: listener refuses a peer whose key does not match (or exist).
          onRefused: ({ peer, reason }) =>
            log.warn({ where: address, peer, code: "AUTH_FAILED" }, `refused ${peer}: ${reason}`),
        },
      );
      servers.push(server);
      log.info(
        keyFor(address) === undefined
          ? { address: server.address }
          : { address: server.address, tls: "TLS 1.3, pre-shared key" },
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

/**
 * Puts an agent on the wire: listening on any number of addresses, connecting out to a host, or
 * on this process's stdio. What happens is reported through a small logger interface (the CLI
 * passes pino writing to stderr); nothing here writes to stdout, which stdio mode owns.
 */
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
}

export interface RunningAgent {
  /** The addresses actually listened on (a tcp port 0 resolved). */
  readonly addresses: readonly string[];
  /** Settles when the agent has stopped: with stdio, when its one session ends. */
  readonly done: Promise<void>;
  /** Stops listening and closes sessions gracefully (or at once with `abort`). */
  stop(options?: { abort?: boolean }): Promise<void>;
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
    return {
      addresses: ["stdio"],
      done: session.closed.then(() => {}),
      async stop({ abort = false } = {}) {
        if (abort) session.abort(new GuestlinkError("SESSION_CLOSED", "the agent is stopping"));
        else await session.close();
        await session.closed;
      },
    };
  }

  if (options.connect) {
    const address = options.connect;
    const stopping = () => new GuestlinkError("SESSION_CLOSED", "the agent is stopping");
    const supervisor = new Supervisor<Session>({
      connect: async (signal) => {
        const session = await openSession(address, {
          ...sessionOptions,
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
    return {
      addresses: [address],
      done,
      async stop({ abort = false } = {}) {
        const session = supervisor.shutdown(stopping());
        if (session) {
          if (abort) session.abort(stopping());
          else await session.close();
        }
        await done;
      },
    };
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
      );
      servers.push(server);
      log.info({ address: server.address }, "listening");
    }
  } catch (err) {
    await Promise.all(servers.map((s) => s.close({ abort: true })));
    throw err;
  }
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => {
    stopped = resolve;
  });
  return {
    addresses: servers.map((s) => s.address),
    done,
    async stop({ abort = false } = {}) {
      await Promise.all(servers.map((s) => s.close({ abort })));
      stopped();
    },
  };
}

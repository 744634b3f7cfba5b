/**
 * Sessions over real addresses on Node: connect a transport, run a session on it with Node's
 * clock and CRC, and keep a session that can resume connected.
 */
import { hostname } from "node:os";
import { ConnectFailedError, GuestlinkError } from "../errors.ts";
import type { SessionOptions } from "../session/options.ts";
import { type RegistryLimits, SessionRegistry } from "../session/registry.ts";
import { Session, type SessionConnection, type SessionEvent } from "../session/session.ts";
import type { BackoffOptions } from "../supervise/backoff.ts";
import { Supervisor } from "../supervise/supervisor.ts";
import { type Address, toAddress } from "../transport/address.ts";
import { raceCallOptions } from "../transport/call-options.ts";
import { connect, type ListenOptions, listen } from "../transport/dispatch.ts";
import type { CallOptions, Listener } from "../transport/transport.ts";
import { VERSION } from "../version.ts";
import { nodeKeepAliveClock, nodeRuntime } from "./node.ts";

export type NodeSessionOptions = Partial<Omit<SessionOptions, "runtime">>;

/**
 * Redialling a lost connection: quick at first (a blip), backing off to a second between tries.
 * The first redial waits 0.5 ms on average: measured through the chaos proxy (a cut every 2 MB),
 * a 5 ms base was 2.5 of the 7.5 ms from losing a connection to data flowing again. A peer that
 * refuses or drops before the handshake still backs off: only a finished handshake resets it.
 */
const RECONNECT_BACKOFF: BackoffOptions = { baseMs: 1, ceilingMs: 1_000 };

/** A session's options on Node: this host as the peer, the Node runtime, `options` over both. */
export function sessionOptions(
  role: "client" | "server",
  options: NodeSessionOptions,
): SessionOptions {
  return {
    role,
    peer: { id: `${hostname()}:${process.pid}`, hostname: hostname(), version: VERSION },
    ...options,
    runtime: nodeRuntime(),
  };
}

export interface OpenSessionOptions extends NodeSessionOptions, CallOptions {
  /** Called with the new session before its handshake, to register handlers it advertises. */
  setup?: (session: Session) => void;
  /** How redialling backs off after a lost connection (resume only). */
  reconnectBackoff?: BackoffOptions;
  /** For `exec:` addresses: where the child's stderr goes (default: this process's stderr). */
  execStderr?: NodeJS.WritableStream;
  /** For `tcp:`: the agent's key; every connection, redials included, is TLS with it. */
  key?: Uint8Array;
  /** For `nats:` addresses that name none: a NATS credentials file, for every redial too. */
  natsCreds?: string;
}

/**
 * Connects to `address` and resolves with a session once its handshake is done. The session is
 * the client side of the id space unless `role` says otherwise.
 *
 * Over an address it can dial again (unix, tcp, vsock, fc, mailbox) the session resumes by
 * default: when the connection is lost it dials again (backing off with jitter) and goes on
 * where it left off, for up to `resume.windowMs`; see `session.onEvent` for what happens.
 * `resume: false` makes a lost connection end the session.
 *
 * `signal` and `deadline` bound the whole open, the handshake included.
 */
export async function openSession(
  address: string | Address,
  options: OpenSessionOptions = {},
): Promise<Session> {
  const { signal, deadline, setup, reconnectBackoff, execStderr, key, natsCreds, ...rest } =
    options;
  const parsed = toAddress(address);
  const transport = await connect(parsed, { signal, deadline, execStderr, key, natsCreds });
  // Only where dialling again reaches the same peer can a lost connection be resumed.
  const resume = transport.redialable === true ? (rest.resume ?? true) : false;
  const session = new Session(
    transport,
    sessionOptions(rest.role ?? "client", { ...rest, resume }),
  );
  setup?.(session);
  // The signal and deadline cover the handshake too: a listener that accepts and never says
  // HELLO must not hold the caller past them (the handshake timeout is a bound of its own).
  await raceCallOptions(
    session.ready,
    { signal, deadline },
    {
      onDeadline: () =>
        new ConnectFailedError(
          `${transport.description} took the connection but did not finish the handshake before the deadline`,
          { details: { address: transport.description, reason: "deadline" } },
        ),
      cancel: () => session.abort(new GuestlinkError("CANCELLED", "the handshake was given up")),
    },
  );
  if (resume !== false) {
    keepConnected(session, parsed, reconnectBackoff ?? RECONNECT_BACKOFF, key, natsCreds);
  }
  return session;
}

/** Dials `address` again whenever the session's connection is lost, until the session ends. */
function keepConnected(
  session: Session,
  address: Address,
  backoff: BackoffOptions,
  key: Uint8Array | undefined,
  natsCreds: string | undefined,
): void {
  let first = session.connection;
  const supervisor = new Supervisor<SessionConnection>({
    connect: async (signal) => {
      if (first !== undefined) {
        const conn = first;
        first = undefined;
        return conn;
      }
      // A redial is a new TLS connection with the same key: the session resumes over it.
      const conn = session.reconnect(await connect(address, { signal, key, natsCreds }));
      await conn.ready;
      return conn;
    },
    closed: (conn) => conn.lost,
    // Waiting to redial is all a command may have left to do: the wait must keep Node alive.
    clock: nodeKeepAliveClock,
    random: Math.random,
    backoff,
    // An attempt counts only once its handshake is done, so a peer that accepts and drops keeps
    // backing off; one that resumed is healthy, and its next loss is retried at the base delay.
    stableAfterMs: 0,
  });
  supervisor.start();
  void session.closed.then(() => supervisor.shutdown());
}

/**
 * How a listener of sessions listens: the transport's options (a key for tcp:) and what the
 * listener holds at most (registry.ts): sessions, and connections waiting for their HELLO.
 */
export interface ServeOptions extends ListenOptions, RegistryLimits {}

/** A listener that runs a session on every connection it accepts. */
export interface SessionServer {
  readonly address: string;
  /** Sessions currently open. */
  readonly sessions: ReadonlySet<Session>;
  /**
   * Stops accepting; with `abort`, ends the open sessions too, else they close gracefully — and
   * those still open after `graceMs` (a peer that went away and may never resume) are aborted.
   */
  close(options?: { abort?: boolean; graceMs?: number }): Promise<void>;
}

/**
 * Listens on `address` and calls `setup(session)` for each new session, before it answers the
 * peer's handshake (so the handlers it registers are advertised). A connection that resumes a
 * session goes to it, and makes no new one. Sessions are the server side of the id space.
 * `listenOptions.key` makes a `tcp:` listener accept only TLS with that key.
 */
export async function serveSessions(
  address: string | Address,
  setup: (session: Session) => void,
  options: NodeSessionOptions = {},
  listenOptions: ServeOptions = {},
): Promise<SessionServer> {
  const parsed = toAddress(address);
  const { maxSessions, maxHandshaking, onLimit, ...rest } = listenOptions;
  const listener: Listener = await listen(parsed, {
    ...rest,
    // A keyed tcp: listener's TLS handshake is held to the same bounds as the HELLO after it.
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    maxHandshaking,
  });
  // Every connection waits for its peer's HELLO, which may resume a session it had before.
  const registry = new SessionRegistry(sessionOptions("server", options), setup, {
    maxSessions,
    maxHandshaking,
    onLimit,
  });
  const sessions = registry.sessions;
  const accepting = (async () => {
    for await (const transport of listener) registry.accept(transport);
  })();
  return {
    address: listener.address,
    sessions,
    async close({ abort = false, graceMs = Number.POSITIVE_INFINITY } = {}) {
      await listener.close();
      await accepting;
      registry.abortWaiting(new GuestlinkError("SESSION_CLOSED", "the server is shutting down"));
      await Promise.all(
        [...sessions].map(async (s) => {
          if (abort) {
            s.abort(new GuestlinkError("SESSION_CLOSED", "the server is shutting down"));
            return s.closed;
          }
          void s.close();
          const timer = Number.isFinite(graceMs)
            ? setTimeout(
                () =>
                  s.abort(
                    new GuestlinkError(
                      "SESSION_CLOSED",
                      `the server is shutting down and the peer did not close within ${graceMs} ms`,
                    ),
                  ),
                graceMs,
              )
            : undefined;
          await s.closed;
          clearTimeout(timer);
        }),
      );
    },
  };
}

/** A logger as pino and the agent's have it. */
export interface EventLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Logs what happens to a session's connection and peer, one line an event, with `fields`. */
export function logSessionEvents(
  session: Session,
  log: EventLogger,
  fields: Record<string, unknown> = {},
): void {
  session.onEvent((e: SessionEvent) => {
    switch (e.type) {
      case "disconnected":
        log.info(
          { ...fields, code: e.error.code, err: e.error.message },
          "connection lost; the session resumes once it is back",
        );
        return;
      case "resumed":
        log.info(
          { ...fields, downMs: Math.round(e.downMs), replayedFrames: e.replayedFrames },
          "connection restored; session resumed",
        );
        return;
      case "restarted":
        log.warn(
          { ...fields, code: e.error.code, err: e.error.message },
          "session could not be resumed; it starts afresh",
        );
        return;
      case "stalled":
        log.warn({ ...fields, forMs: Math.round(e.forMs) }, "peer answers but makes no progress");
        return;
      case "progressing":
        log.info(fields, "peer making progress again");
        return;
    }
  });
}

/**
 * Sessions over real addresses on Node: connect a transport, run a session on it with Node's
 * clock and CRC, and switch payload checksums on for byte pipes that can lose or mangle bytes.
 */
import { hostname } from "node:os";
import { GuestlinkError } from "../errors.ts";
import type { SessionOptions } from "../session/options.ts";
import { Session } from "../session/session.ts";
import { type Address, connect, listen, toAddress } from "../transport/index.ts";
import type { CallOptions, Listener } from "../transport/transport.ts";
import { VERSION } from "../version.ts";
import { nodeRuntime } from "./node.ts";

export type NodeSessionOptions = Partial<Omit<SessionOptions, "runtime">>;

/** Byte pipes with no integrity of their own, where stray output or stale bytes can appear. */
export function isLossyAddress(address: Address): boolean {
  return (
    address.kind === "stdio" ||
    address.kind === "exec" ||
    address.kind === "serial" ||
    address.kind === "mailbox"
  );
}

function sessionOptions(
  address: Address,
  role: "client" | "server",
  options: NodeSessionOptions,
): SessionOptions {
  return {
    role,
    payloadChecksum: isLossyAddress(address),
    peer: { id: `${hostname()}:${process.pid}`, hostname: hostname(), version: VERSION },
    ...options,
    runtime: nodeRuntime(),
  };
}

export interface OpenSessionOptions extends NodeSessionOptions, CallOptions {
  /** Called with the new session before its handshake, to register handlers it advertises. */
  setup?: (session: Session) => void;
}

/**
 * Connects to `address` and resolves with a session once its handshake is done. The session is
 * the client side of the id space unless `role` says otherwise.
 */
export async function openSession(
  address: string | Address,
  options: OpenSessionOptions = {},
): Promise<Session> {
  const { signal, deadline, setup, ...rest } = options;
  const parsed = toAddress(address);
  const transport = await connect(parsed, { signal, deadline });
  const session = new Session(transport, sessionOptions(parsed, rest.role ?? "client", rest));
  setup?.(session);
  await session.ready;
  return session;
}

/** A listener that runs a session on every connection it accepts. */
export interface SessionServer {
  readonly address: string;
  /** Sessions currently open. */
  readonly sessions: ReadonlySet<Session>;
  /** Stops accepting; with `abort`, ends the open sessions too (else they close gracefully). */
  close(options?: { abort?: boolean }): Promise<void>;
}

/**
 * Listens on `address` and calls `setup(session)` for each connection, before its handshake (so
 * the handlers it registers are advertised). Sessions are the server side of the id space.
 */
export async function serveSessions(
  address: string | Address,
  setup: (session: Session) => void,
  options: NodeSessionOptions = {},
): Promise<SessionServer> {
  const parsed = toAddress(address);
  const listener: Listener = await listen(parsed);
  const sessions = new Set<Session>();
  const accepting = (async () => {
    for await (const transport of listener) {
      const session = new Session(transport, sessionOptions(parsed, "server", options));
      sessions.add(session);
      void session.closed.then(() => sessions.delete(session));
      setup(session);
    }
  })();
  return {
    address: listener.address,
    sessions,
    async close({ abort = false } = {}) {
      await listener.close();
      await accepting;
      await Promise.all(
        [...sessions].map((s) => {
          if (abort) s.abort(new GuestlinkError("SESSION_CLOSED", "the server is shutting down"));
          else void s.close();
          return s.closed;
        }),
      );
    },
  };
}

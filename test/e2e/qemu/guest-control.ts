/**
 * How the harness talks to what runs in the guest to tell it is ready and to stop it: the agent
 * through guestlink's library, bare-port.cjs with its "quit" line.
 */
import { once } from "node:events";
import { connect as netConnect } from "node:net";
import { Writable } from "node:stream";
import type { AgentInfo } from "../../../src/agent/info.ts";
import { GuestlinkError, isGuestlinkError, openSession, remoteExec } from "../../../src/index.ts";
import type { Session } from "../../../src/session/session.ts";

/** Between attempts to reach an agent that is starting. */
const READY_POLL_MS = 100;
/** One attempt to open a session and get the agent's info. */
const READY_ATTEMPT_MS = 5_000;
/**
 * Failures that mean "not up yet": QEMU's user-mode network accepts a connection before anything
 * listens in the guest and then drops it; a port nobody reads yet stays silent.
 */
const TRANSIENT = [
  "CONNECT_FAILED",
  "TRANSPORT_FAILED",
  "TRANSPORT_CLOSED",
  "SESSION_CLOSED",
  "HANDSHAKE_TIMEOUT",
  "CANCELLED",
  "DEADLINE_EXCEEDED",
] as const;
/**
 * A session with the agent at `address`, its handshake included, or a rejection once `signal`
 * aborts (openSession bounds only the connect with it; a port nobody reads yet never answers).
 */
async function openAgentSession(address: string, signal: AbortSignal): Promise<Session> {
  let opening: Session | undefined;
  const onAbort = () =>
    opening?.abort(new GuestlinkError("CANCELLED", `no answer from the agent at ${address}`));
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await openSession(address, {
      resume: false,
      signal,
      setup: (session) => {
        opening = session;
      },
    });
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Polls until the agent at `address` answers `info`; its answer. */
export async function waitForAgent(
  address: string,
  deadline: number,
  signal: AbortSignal,
): Promise<AgentInfo> {
  let last: unknown;
  while (!signal.aborted) {
    const left = Math.ceil(Math.max(1, Math.min(READY_ATTEMPT_MS, deadline - performance.now())));
    const attempt = AbortSignal.any([signal, AbortSignal.timeout(left)]);
    try {
      const session = await openAgentSession(address, attempt);
      try {
        return (await session.call("info", undefined, { signal: attempt })) as AgentInfo;
      } finally {
        await session.close().catch(() => {});
      }
    } catch (err) {
      // An attempt that ran out of its own time (the dial rejects with the signal's reason, a
      // TimeoutError) is tried again, as a transient failure is; on a busy machine a booting
      // guest can take longer than one attempt. An agent that answers wrongly (another protocol
      // version, say) will not get better.
      const attemptTimedOut = attempt.aborted && !signal.aborted;
      if (!attemptTimedOut && !TRANSIENT.some((code) => isGuestlinkError(err, code))) {
        throw new Error(`the agent at ${address} answered, but: ${(err as Error).message}`, {
          cause: err,
        });
      }
      last = err;
    }
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }
  throw new Error(`the agent at ${address} did not answer: ${String(last)}`);
}

/** A Writable that drops what it is given. */
function discard(): Writable {
  return new Writable({ write: (_chunk, _enc, done) => done() });
}

/**
 * Stops the agent the way its service manager would: SIGTERM. The exec'd shell's parent is the
 * agent, which finishes this session's work and exits; init then powers the guest off.
 */
export async function stopAgent(address: string, signal: AbortSignal): Promise<void> {
  const session = await openAgentSession(address, signal);
  try {
    await remoteExec(
      session,
      { argv: ["sh", "-c", "kill -TERM $PPID"] },
      { stdout: discard(), stderr: discard() },
      { signal },
    );
  } finally {
    await session.close().catch(() => {});
  }
}

/** Tells bare-port.cjs to exit, over the port. */
export async function sayQuit(socketPath: string, signal: AbortSignal): Promise<void> {
  const socket = netConnect(socketPath);
  signal.addEventListener("abort", () => socket.destroy(), { once: true });
  socket.on("error", () => {});
  await once(socket, "connect");
  socket.end("quit\n");
}

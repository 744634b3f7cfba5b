/**
 * Reaching an agent that may not be up yet (a VM still booting, an agent restarting): dial,
 * and dial again with backoff while what failed can still heal, for at most `timeoutMs` in all,
 * handshakes included. What cannot heal (no such folder, not a socket, permission denied, a
 * malformed address) fails at once with its reason; see `worthWaitingFor`.
 */
import { ConnectFailedError, isGuestlinkError } from "../errors.ts";
import type { Session } from "../session/session.ts";
import { Supervisor } from "../supervise/supervisor.ts";
import { nodeKeepAliveClock } from "./node.ts";
import { type OpenSessionOptions, openSession } from "./session.ts";

/** Longest wait between attempts while an agent is not up yet: it is found this soon after it is. */
export const DIAL_RETRY_CEILING_MS = 1_000;
/** How long a wait goes on before `onWaiting` is told (a person deserves to know by then). */
export const DIAL_NOTICE_AFTER_MS = 2_000;

export interface DialOptions extends Omit<OpenSessionOptions, "deadline"> {
  /** How long to wait for a session, every attempt and its handshake included. */
  timeoutMs: number;
  /** Called once if no session is up `noticeAfterMs` after dialling began. */
  onWaiting?: (waitedMs: number) => void;
  /** Default `DIAL_NOTICE_AFTER_MS`. */
  noticeAfterMs?: number;
}

/**
 * Whether a failed attempt may succeed if tried again: a CONNECT_FAILED (nothing listening yet,
 * a socket file not created yet in its folder) unless the transport marked it `dialAgain: false`
 * (it cannot heal by waiting), or any error the transport marked `dialAgain: true` (a forwarded
 * port that drops connections until the guest's agent listens).
 */
export function worthWaitingFor(err: unknown): boolean {
  if (!isGuestlinkError(err)) return false;
  if (err.details?.dialAgain === true) return true;
  return err.code === "CONNECT_FAILED" && err.details?.dialAgain !== false;
}

/**
 * Opens a session to `address`, waiting for it as above. Rejects with the error that cannot
 * heal, with CONNECT_FAILED (`details.reason` "gave-up") once `timeoutMs` has passed, or with
 * `signal.reason`.
 */
export async function dialSession(address: string, options: DialOptions): Promise<Session> {
  const {
    timeoutMs,
    onWaiting,
    noticeAfterMs = DIAL_NOTICE_AFTER_MS,
    signal,
    setup,
    ...rest
  } = options;
  /** Whether the attempt in flight got as far as a connection (its handshake is pending). */
  let connected = false;
  const supervisor = new Supervisor<Session>({
    connect: (attempt) => {
      connected = false;
      return openSession(address, {
        ...rest,
        signal: attempt as AbortSignal,
        setup: (session) => {
          connected = true;
          setup?.(session);
        },
      });
    },
    closed: (session) => session.closed,
    dispose: (session) => session.abort(),
    clock: nodeKeepAliveClock,
    random: Math.random,
    backoff: { ceilingMs: DIAL_RETRY_CEILING_MS },
    giveUpAfterMs: timeoutMs,
    retryable: worthWaitingFor,
  });
  const startedAt = performance.now();
  const notice =
    onWaiting === undefined
      ? undefined
      : setTimeout(() => onWaiting(performance.now() - startedAt), noticeAfterMs);
  notice?.unref();
  try {
    return await supervisor.ready({ signal });
  } catch (err) {
    if (connected && isGuestlinkError(err, "CONNECT_FAILED") && err.cause === undefined) {
      // Given up while a connection waited for its HELLO: say what is there instead of "an
      // attempt was still in progress".
      throw new ConnectFailedError(
        `${err.message.replace(/; an attempt was still in progress$/, "")}: something at ${address} took the connection but did not answer as a guestlink agent (no HELLO); is the address right, and is the agent stuck?`,
        { details: { ...err.details, handshake: "pending" } },
      );
    }
    throw err;
  } finally {
    clearTimeout(notice);
    // The session is the caller's from here; the supervisor stops watching it (or trying).
    supervisor.shutdown();
  }
}

/**
 * The accepting side of resume. Every accepted connection starts a session that waits for the
 * peer's HELLO; a HELLO that asks to resume one of the sessions here (its id, its secret token,
 * the same peer incarnation) hands the connection to that session, which goes on where it left
 * off. Any other HELLO makes a new session, which `onSession` is given before it answers, so the
 * handlers it registers are advertised.
 */
import { GuestlinkError, InvalidOptionError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import type { FrameDecoder } from "../wire/decode.ts";
import type { Acceptor } from "./acceptor.ts";
import type { SessionOptions } from "./options.ts";
import { Session } from "./session.ts";

/** Sessions a registry holds at once (open, or waiting to be resumed), by default. */
export const DEFAULT_MAX_SESSIONS = 64;
/** Connections a registry lets wait for their peer's HELLO at once, by default. */
export const DEFAULT_MAX_HANDSHAKING = 64;

/** What one registry (one listener) holds for its peers at most. */
export interface RegistryLimits {
  /**
   * Sessions at once, open or waiting to be resumed. A new one past it first makes room by
   * ending the oldest that waits to be resumed; when every one is connected it is refused with
   * LIMIT_EXCEEDED, told to the peer before any HELLO. Resuming one that is here is not new.
   * Default `DEFAULT_MAX_SESSIONS`.
   */
  maxSessions?: number;
  /**
   * Connections whose peer has not said HELLO yet (each also bounded in time by the session's
   * `handshakeTimeoutMs`). One more drops the oldest, so peers that connect and say nothing can
   * hold no more than this, and a peer that says HELLO at once still gets in. Default
   * `DEFAULT_MAX_HANDSHAKING`.
   */
  maxHandshaking?: number;
  /**
   * Told of each connection refused or dropped at a limit: `limit` is "maxSessions" or
   * "maxHandshaking", `address` the connection's (`Transport.description`).
   */
  onLimit?: (refusal: { limit: "maxSessions" | "maxHandshaking"; address: string }) => void;
}

export class SessionRegistry implements Acceptor<Session> {
  /** The sessions this registry made that have not ended, connected or waiting to be resumed. */
  readonly sessions: ReadonlySet<Session> = new Set<Session>();
  readonly #byId = new Map<string, Session>();
  /** Sessions on accepted connections whose peer has not said HELLO yet. */
  readonly #waiting = new Set<Session>();
  readonly #options: SessionOptions;
  readonly #onSession: (session: Session) => void;
  readonly #maxSessions: number;
  readonly #maxHandshaking: number;
  readonly #onLimit: RegistryLimits["onLimit"];
  /** Connections dropped at `maxHandshaking`, sessions refused, and sessions let go while they waited to be resumed. */
  readonly refused = { handshaking: 0, sessions: 0, resumable: 0 };

  constructor(
    options: SessionOptions,
    onSession: (session: Session) => void,
    limits: RegistryLimits = {},
  ) {
    this.#options = { resume: true, ...options };
    this.#onSession = onSession;
    this.#maxSessions = limit("maxSessions", limits.maxSessions, DEFAULT_MAX_SESSIONS);
    this.#maxHandshaking = limit("maxHandshaking", limits.maxHandshaking, DEFAULT_MAX_HANDSHAKING);
    this.#onLimit = limits.onLimit;
  }

  /** Runs a session on `transport`: a resumed one, or a new one once the peer's HELLO says so. */
  accept(transport: Transport): void {
    this.#makeRoom();
    this.#wait(new Session(transport, this.#options, { acceptor: this }));
  }

  /** Drops the oldest connections still waiting for a HELLO until one more fits. */
  #makeRoom(): void {
    while (this.#waiting.size >= this.#maxHandshaking) {
      const oldest = this.#waiting.values().next().value as Session;
      this.#waiting.delete(oldest);
      this.refused.handshaking++;
      this.#told("maxHandshaking", oldest);
      oldest.abort(
        new GuestlinkError(
          "LIMIT_EXCEEDED",
          `${this.#maxHandshaking} connections were waiting for their peer's HELLO; the oldest was dropped for a new one`,
          { details: { limit: "maxHandshaking", max: this.#maxHandshaking } },
        ),
      );
    }
  }

  /**
   * A connection the peer began in mid-stream on `transport` (see `Transport.reconnectsInBand`),
   * read on by the session whose connection it follows, with its `decoder`. For `Session` only.
   */
  acceptInBand(transport: Transport, decoder: FrameDecoder): Session {
    return this.#wait(new Session(transport, this.#options, { acceptor: this, decoder }));
  }

  /**
   * Ends the sessions whose peer has not said HELLO yet: a server that stops has no use for
   * them, and on a guest's port one would wait for a host for as long as the agent runs.
   */
  abortWaiting(reason: Error): void {
    for (const session of [...this.#waiting]) session.abort(reason);
  }

  #wait(session: Session): Session {
    this.#waiting.add(session);
    void session.closed.then(() => this.#waiting.delete(session));
    return session;
  }

  /** The session with this id, if it is still here. For `Session` only. */
  find(sessionId: string): Session | undefined {
    return this.#byId.get(sessionId);
  }

  /** A new session is about to answer its peer's HELLO. For `Session` only. */
  opened(session: Session): GuestlinkError | undefined {
    this.#waiting.delete(session);
    const sessions = this.sessions as Set<Session>;
    if (sessions.size >= this.#maxSessions) this.#dropOldestWaiting();
    if (sessions.size >= this.#maxSessions) {
      this.refused.sessions++;
      this.#told("maxSessions", session);
      return new GuestlinkError(
        "LIMIT_EXCEEDED",
        `${sessions.size} sessions are open here already (or waiting to be resumed), the most this listener takes: try again once one has ended`,
        { details: { limit: "maxSessions", max: this.#maxSessions } },
      );
    }
    sessions.add(session);
    this.#byId.set(session.id, session);
    void session.closed.then(() => {
      sessions.delete(session);
      this.#byId.delete(session.id);
    });
    this.#onSession(session);
    return undefined;
  }

  /**
   * Makes room for a new session by ending the oldest one whose connection is lost and that
   * waits for its peer to come back: a peer that opens sessions and drops them cannot keep
   * others out for a resume window (they are let go, oldest first, as new peers come).
   */
  #dropOldestWaiting(): void {
    for (const session of this.sessions) {
      if (session.connection !== undefined) continue;
      this.refused.resumable++;
      session.abort(
        new GuestlinkError(
          "RESUME_FAILED",
          `the session was let go while it waited to be resumed: ${this.#maxSessions} sessions were held and a new one came`,
          { details: { limit: "maxSessions", max: this.#maxSessions } },
        ),
      );
      (this.sessions as Set<Session>).delete(session);
      this.#byId.delete(session.id);
      return;
    }
  }

  #told(which: "maxSessions" | "maxHandshaking", session: Session): void {
    try {
      this.#onLimit?.({ limit: which, address: session.connection?.description ?? "?" });
    } catch {
      // The listener's failure is its own.
    }
  }
}

function limit(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!(Number.isInteger(v) && v > 0) && v !== Number.POSITIVE_INFINITY) {
    throw new InvalidOptionError(`${name} must be a positive integer, got ${v}`, {
      details: { option: name, value: v },
    });
  }
  return v;
}

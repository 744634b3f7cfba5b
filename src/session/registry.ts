/**
 * The accepting side of resume. Every accepted connection starts a session that waits for the
 * peer's HELLO; a HELLO that asks to resume one of the sessions here (its id, its secret token,
 * the same peer incarnation) hands the connection to that session, which goes on where it left
 * off. Any other HELLO makes a new session, which `onSession` is given before it answers, so the
 * handlers it registers are advertised.
 */
import type { Transport } from "../transport/transport.ts";
import type { FrameDecoder } from "../wire/decode.ts";
import type { Acceptor } from "./acceptor.ts";
import type { SessionOptions } from "./options.ts";
import { Session } from "./session.ts";

export class SessionRegistry implements Acceptor<Session> {
  /** The sessions this registry made that have not ended, connected or waiting to be resumed. */
  readonly sessions: ReadonlySet<Session> = new Set<Session>();
  readonly #byId = new Map<string, Session>();
  /** Sessions on accepted connections whose peer has not said HELLO yet. */
  readonly #waiting = new Set<Session>();
  readonly #options: SessionOptions;
  readonly #onSession: (session: Session) => void;

  constructor(options: SessionOptions, onSession: (session: Session) => void) {
    this.#options = { resume: true, ...options };
    this.#onSession = onSession;
  }

  /** Runs a session on `transport`: a resumed one, or a new one once the peer's HELLO says so. */
  accept(transport: Transport): void {
    this.#wait(new Session(transport, this.#options, { acceptor: this }));
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
  opened(session: Session): void {
    this.#waiting.delete(session);
    const sessions = this.sessions as Set<Session>;
    sessions.add(session);
    this.#byId.set(session.id, session);
    void session.closed.then(() => {
      sessions.delete(session);
      this.#byId.delete(session.id);
    });
    this.#onSession(session);
  }
}

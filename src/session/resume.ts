/**
 * Resuming a session on a new connection (docs/protocol.md 9.7): the window a session without a
 * connection waits in, and the handshake's two resume cases: the side that dialled again reads
 * the peer's answer (resumed, or it restarted or refused), and the side that accepts adopts a
 * connection that asks for one of its sessions. Either way, what the peer lacks is sent again
 * and both go on with the same numbers, calls and streams.
 */
import { GuestlinkError } from "../errors.ts";
import { FrameType } from "../wire/frame.ts";
import type { Connection, ConnectionOwner } from "./connection.ts";
import { sortRedialAnswer } from "./handshake.ts";
import type { Hello } from "./messages.ts";
import type { ResolvedSessionOptions } from "./options.ts";
import type { Outbox } from "./outbox.ts";
import type { ReceiveSequence } from "./receive-sequence.ts";
import type { Timer } from "./runtime.ts";
import type { Terms } from "./terms.ts";

/** Why a session could not be resumed, as the accepting side's HELLO says (`resumeRefused`). */
export interface ResumeRefusal {
  reason: string;
  message: string;
}

/** The peer's session and process, to ask for resume on the next connection. */
export interface ResumeFrom {
  sessionId: string;
  token: string;
  incarnation: string;
}

/** The connections of the session being resumed (`Links`). */
export interface ResumeHost {
  conn: Connection | undefined;
  description: string;
  resumeFrom: ResumeFrom | undefined;
  /** Stops using `conn` (its frames are ignored from now on). */
  drop(conn: Connection, err: GuestlinkError): void;
  /** `conn` is gone; the session waits for another. */
  disconnect(conn: Connection, err: GuestlinkError): void;
  sendDirect(conn: Connection, type: FrameType, value: unknown): void;
  unsequenced(type: FrameType, value: unknown): Uint8Array;
  /** The handshake on `conn` opened the session afresh. */
  opened(conn: Connection, hello: Hello, version: number): void;
}

/** What resuming needs from the session. */
export interface ResumePort {
  state(): "handshaking" | "open" | "closing" | "closed";
  end(err: GuestlinkError | undefined, gracefully?: boolean): void;
  /** Calls and streams in flight. */
  busy(): number;
}

export interface ResumeParts {
  options: ResolvedSessionOptions;
  outbox: Outbox;
  rx: ReceiveSequence<unknown>;
  terms: Terms;
  /** What the session's connections report to, for a connection it adopts. */
  owner: ConnectionOwner;
  resumeToken: string;
}

export class Resume {
  readonly #host: ResumeHost;
  readonly #port: ResumePort;
  readonly #parts: ResumeParts;
  #windowTimer: Timer | undefined;
  #lostAt = 0;

  constructor(host: ResumeHost, port: ResumePort, parts: ResumeParts) {
    this.#host = host;
    this.#port = port;
    this.#parts = parts;
  }

  /**
   * The connection was lost (`err`): wait up to the resume window for another, then end the
   * session with RESUME_FAILED.
   */
  wait(err: GuestlinkError): void {
    const resume = this.#parts.options.resume;
    if (resume === false) return;
    const clock = this.#parts.options.runtime.clock;
    this.#lostAt = clock.now();
    this.stop();
    this.#windowTimer = clock.setTimer(resume.windowMs, () =>
      this.#port.end(
        new GuestlinkError(
          "RESUME_FAILED",
          `the connection to ${this.#host.description} was lost and not restored within ${resume.windowMs} ms (${err.message})`,
          { details: { reason: "timeout", windowMs: resume.windowMs }, cause: err },
        ),
      ),
    );
  }

  /** No more waiting (resumed, or the session ended). */
  stop(): void {
    this.#windowTimer?.cancel();
    this.#windowTimer = undefined;
  }

  /** We dialled again: did the peer resume our session? */
  answered(conn: Connection, hello: Hello, version: number): void {
    const host = this.#host;
    const { outbox, terms } = this.#parts;
    const known = host.resumeFrom;
    const verdict =
      known === undefined ? undefined : sortRedialAnswer(hello, known, true, host.description);
    if (verdict?.kind === "resumed") {
      if (outbox.canReplayFrom(verdict.received)) {
        this.#resumeOn(conn, hello, verdict.received, undefined);
        return;
      }
      const err = this.#replayExceeded(verdict.received);
      host.sendDirect(conn, FrameType.ERROR, { code: "RESUME_FAILED", message: err.message });
      terms.restarted(err);
      host.resumeFrom = undefined;
      host.disconnect(conn, err);
      return;
    }
    if (verdict?.kind === "restarted") {
      const lost = this.#port.busy();
      terms.restarted(
        new GuestlinkError(
          "RESUME_FAILED",
          `${verdict.why}; ${lost} calls and streams in flight were lost`,
          { details: { reason: verdict.reason, lost } },
        ),
      );
      host.resumeFrom = undefined;
    }
    outbox.attach(conn.transport, undefined, 0);
    host.opened(conn, hello, version);
  }

  /**
   * A peer that dialled again asks this session (one of a registry's) to go on over `conn`.
   * Returns why not, or undefined once this session has taken the connection over.
   */
  adopt(conn: Connection, hello: Hello): ResumeRefusal | undefined {
    const host = this.#host;
    const { outbox, terms, rx } = this.#parts;
    const ask = hello.resume as NonNullable<Hello["resume"]>;
    if (
      this.#port.state() === "closed" ||
      ask.token !== this.#parts.resumeToken ||
      hello.incarnation !== host.resumeFrom?.incarnation
    ) {
      return { reason: "unknown-session", message: "this side has no such session to resume" };
    }
    if (!outbox.canReplayFrom(ask.received)) {
      const err = this.#replayExceeded(ask.received);
      this.#port.end(err);
      return { reason: "replay-exceeded", message: err.message };
    }
    if (host.conn !== undefined) {
      // The old connection has not noticed it is gone yet (a half-open TCP): this one wins.
      const old = host.conn;
      host.drop(old, new GuestlinkError("TRANSPORT_FAILED", "replaced by a new connection"));
      old.transport.abort();
    }
    conn.handOver(this.#parts.owner);
    host.conn = conn;
    host.description = conn.description;
    terms.agree(conn, hello);
    const answer = terms.hello(conn, {
      resumed: { received: rx.received },
      ...(hello.nonce === undefined ? {} : { answers: hello.nonce }),
      ...(terms.seesNoEnd(conn) || hello.confirmsClose === true ? { confirmsClose: true } : {}),
    });
    this.#resumeOn(conn, hello, ask.received, host.unsequenced(FrameType.HELLO, answer));
    return undefined;
  }

  /** Goes on over `conn`: everything after `received` is sent again, after `first` if given. */
  #resumeOn(conn: Connection, hello: Hello, received: number, first: Uint8Array | undefined): void {
    const { outbox, terms, rx, options } = this.#parts;
    this.stop();
    terms.agree(conn, hello);
    rx.newConnection();
    const replayed = outbox.attach(conn.transport, first, received);
    conn.opened();
    const now = options.runtime.clock.now();
    terms.resumed(conn, replayed, {
      downMs: now - this.#lostAt,
      handshakeMs: now - conn.startedAt,
    });
  }

  #replayExceeded(received: number): GuestlinkError {
    const limit = this.#parts.options.replayBufferBytes;
    return new GuestlinkError(
      "RESUME_FAILED",
      `the session could not be resumed: frames after ${received} that the peer lacks were dropped from the replay buffer (${limit} bytes); raise resume.replayBufferBytes`,
      { details: { reason: "replay-exceeded", received, replayBufferBytes: limit } },
    );
  }
}

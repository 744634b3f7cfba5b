/**
 * Keeps one connection to a peer: connects, and whenever an attempt fails or the connection
 * ends, tries again after a backoff delay with full jitter, until shut down or, with
 * `giveUpAfterMs`, until one outage has lasted that long. What it is doing is a state, reported
 * as events, with gRPC's connectivity states (idle, connecting, ready, transient failure,
 * shutdown) as the model.
 *
 * Generic over what it connects (on Node, a Session from `openSession`), and free of Node APIs:
 * time comes from the injected Clock and jitter from the injected `random`, so every retry
 * sequence replays exactly under a fake clock and a seeded random.
 */
import {
  type AbortControllerLike,
  type AbortSignalLike,
  type CallOptions,
  newAbortController,
} from "../abort.ts";
import {
  ConnectFailedError,
  type ErrorCode,
  GuestlinkError,
  InvalidOptionError,
} from "../errors.ts";
import type { Clock, Timer } from "../session/runtime.ts";
import { Backoff, type BackoffOptions } from "./backoff.ts";
import { formatMs, timerAt } from "./timers.ts";

/** What the supervisor is doing. */
export const SupervisorState = {
  /** Constructed; nothing tried yet (`start()` or `ready()` begins). */
  IDLE: "idle",
  /** An attempt to connect is in progress. */
  CONNECTING: "connecting",
  /** A connection is live (`current`). */
  READY: "ready",
  /** The last attempt failed or the connection ended; the next attempt waits for its delay. */
  TRANSIENT_FAILURE: "transient-failure",
  /** Stopped for good: `shutdown()`, giving up, or a connect error no retry can fix. */
  SHUTDOWN: "shutdown",
} as const;
export type SupervisorState = (typeof SupervisorState)[keyof typeof SupervisorState];

/** A change of state. Events arrive in order, each `previous` being the last event's `state`. */
export interface SupervisorStateEvent {
  type: "state";
  state: SupervisorState;
  previous: SupervisorState;
  /**
   * transient-failure: the failed attempt's error, or the reason the connection ended (absent
   * after a clean end). shutdown: why it stopped when that is a failure (giving up, an error not
   * worth retrying); absent after `shutdown()`.
   */
  error?: unknown;
  /**
   * Connect attempts since the backoff was last reset (at start, and when a connection that
   * lasted `stableAfterMs` ends), counting one in progress.
   */
  attempt: number;
  /** transient-failure only: the delay before the next attempt. */
  nextRetryInMs?: number;
}

export type SupervisorEvent = SupervisorStateEvent;

export interface SupervisorOptions<T> {
  /**
   * Makes one connection. Rejects if it cannot; should stop and reject when `signal` aborts
   * (shutdown, giving up). A connection it resolves with after that goes to `dispose`.
   */
  connect: (signal: AbortSignalLike) => Promise<T>;
  /** Settles when `conn` is over; a value or rejection other than undefined is reported as why. */
  closed: (conn: T) => Promise<unknown>;
  clock: Clock;
  /** Uniform in [0, 1], as `Math.random`; tests pass a seeded one. */
  random: () => number;
  backoff?: BackoffOptions;
  /**
   * How long one outage (from `start()`, or from the moment a connection ended) may last before
   * the supervisor gives up: it shuts down and `ready()` rejects with CONNECT_FAILED.
   * Default Infinity (retry forever), what an agent wants; a client passes its reconnect timeout,
   * with a backoff ceiling well below it, so that a peer that comes back late in the outage is
   * still tried before the supervisor gives up.
   */
  giveUpAfterMs?: number;
  /**
   * A connection that lasted at least this long resets the backoff when it ends. Default: the
   * backoff ceiling. Resetting on every successful connect instead would let a peer that accepts
   * and at once drops (a crash loop, a rejected handshake) be re-dialled every few base delays
   * forever; with the ceiling as threshold, such a peer is re-dialled no more often than one
   * that refuses outright, while a connection that served for a while comes back within
   * `baseMs`. 0 resets after every connection.
   */
  stableAfterMs?: number;
  /**
   * Whether a failed attempt is worth retrying; if not, the supervisor shuts down and `ready()`
   * rejects with that error itself. Default `isRetryableConnectError`. A connection that ended is
   * always retried.
   */
  retryable?: (error: unknown) => boolean;
  /**
   * Releases a connection nobody will be given: one an attempt produced after `shutdown()` or
   * after giving up (a connect that finished its handshake although its signal aborted). Without
   * it such a connection is dropped unreleased. The live connection is never disposed: after
   * `shutdown()` it is the caller's to close.
   */
  dispose?: (conn: T) => unknown;
}

/** Connect errors a retry cannot fix: what was asked for is itself wrong. */
const PERMANENT_CONNECT_ERRORS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "INVALID_OPTION",
  "INVALID_ADDRESS",
  "TRANSPORT_UNSUPPORTED",
]);

/** The default `retryable`: every failure except a wrong option, address or transport. */
export function isRetryableConnectError(error: unknown): boolean {
  return !(error instanceof GuestlinkError && PERMANENT_CONNECT_ERRORS.has(error.code));
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function requireFunction(name: string, value: unknown): void {
  if (typeof value !== "function") {
    throw new InvalidOptionError(`supervisor option ${name} must be a function`, {
      details: { option: name },
    });
  }
}

function durationMs(name: string, value: unknown, allowZero: boolean): number {
  if (!(typeof value === "number" && (allowZero ? value >= 0 : value > 0))) {
    throw new InvalidOptionError(
      `supervisor option ${name} must be a number of milliseconds ${allowZero ? "from 0" : "above 0"} (Infinity allowed), got ${String(value)}`,
      { details: { option: name, value } },
    );
  }
  return value;
}

interface ResolvedSupervisorOptions<T> {
  connect: (signal: AbortSignalLike) => Promise<T>;
  closed: (conn: T) => Promise<unknown>;
  clock: Clock;
  giveUpAfterMs: number;
  stableAfterMs: number;
  retryable: (error: unknown) => boolean;
  dispose: ((conn: T) => unknown) | undefined;
}

interface Waiter<T> {
  resolve(conn: T): void;
  reject(error: unknown): void;
}

export class Supervisor<T> {
  readonly #options: ResolvedSupervisorOptions<T>;
  readonly #backoff: Backoff;
  readonly #listeners = new Set<(event: SupervisorEvent) => void>();
  readonly #waiters = new Set<Waiter<T>>();
  readonly #queue: SupervisorEvent[] = [];
  #emitting = false;
  #state: SupervisorState = SupervisorState.IDLE;
  #current: T | undefined;
  #connectedAt = 0;
  /** The attempt in flight; a result from any other attempt is stale. */
  #attempt: AbortControllerLike | undefined;
  #retryTimer: Timer | undefined;
  #giveUpTimer: Timer | undefined;
  #attempts = 0;
  #outageStartedAt = 0;
  #outageAttempts = 0;
  #lastError: unknown;
  /** What `ready()` rejects with once shut down. */
  #stopReason: unknown;

  constructor(options: SupervisorOptions<T>) {
    requireFunction("connect", options.connect);
    requireFunction("closed", options.closed);
    const clock = options.clock;
    if (typeof clock?.now !== "function" || typeof clock.setTimer !== "function") {
      throw new InvalidOptionError("supervisor option clock must be a Clock (nodeClock on Node)", {
        details: { option: "clock" },
      });
    }
    if (options.retryable !== undefined) requireFunction("retryable", options.retryable);
    if (options.dispose !== undefined) requireFunction("dispose", options.dispose);
    this.#backoff = new Backoff(options.backoff, options.random);
    this.#options = {
      connect: options.connect,
      closed: options.closed,
      clock,
      giveUpAfterMs: durationMs(
        "giveUpAfterMs",
        options.giveUpAfterMs ?? Number.POSITIVE_INFINITY,
        false,
      ),
      stableAfterMs: durationMs(
        "stableAfterMs",
        options.stableAfterMs ?? this.#backoff.options.ceilingMs,
        true,
      ),
      retryable: options.retryable ?? isRetryableConnectError,
      dispose: options.dispose,
    };
  }

  get state(): SupervisorState {
    return this.#state;
  }

  /** The live connection, or undefined when not ready. */
  get current(): T | undefined {
    return this.#current;
  }

  /** Calls `listener` with every event from now on; returns a function that unsubscribes. */
  onEvent(listener: (event: SupervisorEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Begins connecting. Does nothing unless idle (a shut down supervisor stays shut down). */
  start(): void {
    if (this.#state !== SupervisorState.IDLE) return;
    this.#beginOutage();
    this.#connectNow();
  }

  /**
   * Resolves with a live connection, waiting through retries (and starting the supervisor if
   * idle). Rejects with `signal.reason` on abort; with CONNECT_FAILED (`details.reason`
   * "deadline") when `deadline` (on `clock.now()`) passes first; and with the reason it stopped
   * once the supervisor is shut down (CONNECT_FAILED with `details.reason` "gave-up" after
   * `giveUpAfterMs`).
   */
  ready(options: CallOptions = {}): Promise<T> {
    const { signal, deadline } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (deadline !== undefined && (typeof deadline !== "number" || Number.isNaN(deadline))) {
      return Promise.reject(
        new InvalidOptionError("deadline must be a number of milliseconds on the clock's now()", {
          details: { option: "deadline", value: deadline },
        }),
      );
    }
    this.start();
    if (this.#state === SupervisorState.SHUTDOWN) return Promise.reject(this.#stopReason);
    if (this.#state === SupervisorState.READY) return Promise.resolve(this.#current as T);
    const clock = this.#options.clock;
    const startedAt = clock.now();
    if (deadline !== undefined && deadline <= startedAt) {
      return Promise.reject(this.#deadlineError(startedAt));
    }
    return new Promise<T>((resolve, reject) => {
      let timer: Timer | undefined;
      const onAbort = () => waiter.reject(signal?.reason);
      const finish = () => {
        this.#waiters.delete(waiter);
        timer?.cancel();
        signal?.removeEventListener("abort", onAbort);
      };
      const waiter: Waiter<T> = {
        resolve: (conn) => {
          finish();
          resolve(conn);
        },
        reject: (error) => {
          finish();
          reject(error);
        },
      };
      this.#waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
      if (deadline !== undefined && deadline < Number.POSITIVE_INFINITY) {
        timer = timerAt(clock, deadline, () => waiter.reject(this.#deadlineError(startedAt)));
      }
    });
  }

  /**
   * Stops connecting and retrying, at once: cancels the pending retry, aborts an attempt in
   * flight, and rejects waiting `ready()` calls with `reason` (by default CANCELLED). Closes
   * nothing: returns the live connection, if any, which is now the caller's to close (the
   * supervisor no longer watches it).
   */
  shutdown(
    reason: unknown = new GuestlinkError("CANCELLED", "the supervisor was shut down"),
  ): T | undefined {
    return this.#stop(reason, false);
  }

  // ---- transitions -----------------------------------------------------------------------------

  #beginOutage(): void {
    const { clock, giveUpAfterMs } = this.#options;
    this.#outageStartedAt = clock.now();
    this.#outageAttempts = 0;
    if (giveUpAfterMs < Number.POSITIVE_INFINITY) {
      this.#giveUpTimer = timerAt(clock, this.#outageStartedAt + giveUpAfterMs, () => {
        this.#giveUpTimer = undefined;
        this.#giveUp();
      });
    }
  }

  #connectNow(): void {
    this.#retryTimer = undefined;
    const controller = newAbortController();
    this.#attempt = controller;
    this.#attempts++;
    this.#outageAttempts++;
    this.#setState(SupervisorState.CONNECTING);
    // A listener may have shut the supervisor down.
    if (this.#attempt !== controller) return;
    let attempt: Promise<T>;
    try {
      attempt = Promise.resolve(this.#options.connect(controller.signal));
    } catch (err) {
      attempt = Promise.reject(err);
    }
    attempt.then(
      (conn) => this.#connected(controller, conn),
      (err: unknown) => this.#attemptFailed(controller, err),
    );
  }

  #connected(controller: AbortControllerLike, conn: T): void {
    if (this.#attempt !== controller) {
      this.#discard(conn);
      return;
    }
    this.#attempt = undefined;
    this.#giveUpTimer?.cancel();
    this.#giveUpTimer = undefined;
    this.#current = conn;
    this.#connectedAt = this.#options.clock.now();
    this.#lastError = undefined;
    let ended: Promise<unknown>;
    try {
      ended = Promise.resolve(this.#options.closed(conn));
    } catch (err) {
      ended = Promise.reject(err);
    }
    ended.then(
      (why) => this.#ended(conn, why),
      (err: unknown) => this.#ended(conn, err),
    );
    this.#setState(SupervisorState.READY);
    if (this.#current !== conn) return;
    for (const waiter of [...this.#waiters]) waiter.resolve(conn);
  }

  #attemptFailed(controller: AbortControllerLike, error: unknown): void {
    if (this.#attempt !== controller) return;
    this.#attempt = undefined;
    this.#lastError = error;
    let retry: boolean;
    try {
      retry = this.#options.retryable(error);
    } catch (err) {
      this.#stop(err, true);
      return;
    }
    if (retry) this.#retryLater(error);
    else this.#stop(error, true);
  }

  #ended(conn: T, why: unknown): void {
    if (this.#current !== conn) return;
    this.#current = undefined;
    if (this.#options.clock.now() - this.#connectedAt >= this.#options.stableAfterMs) {
      this.#backoff.reset();
      this.#attempts = 0;
    }
    this.#lastError = why;
    this.#beginOutage();
    this.#retryLater(why);
  }

  #retryLater(error: unknown): void {
    let delay: number;
    try {
      delay = this.#backoff.next();
    } catch (err) {
      this.#stop(err, true);
      return;
    }
    // Armed before the event, so a listener that shuts down cancels it.
    this.#retryTimer = this.#options.clock.setTimer(delay, () => this.#connectNow());
    this.#setState(
      SupervisorState.TRANSIENT_FAILURE,
      error === undefined ? { nextRetryInMs: delay } : { error, nextRetryInMs: delay },
    );
  }

  #giveUp(): void {
    const triedForMs = this.#options.clock.now() - this.#outageStartedAt;
    const attempts = this.#outageAttempts;
    const last = this.#lastError;
    const tail =
      last !== undefined
        ? `; the last error: ${describe(last)}`
        : this.#attempt !== undefined
          ? "; an attempt was still in progress"
          : "";
    const error = new ConnectFailedError(
      `gave up connecting after ${formatMs(triedForMs)} and ${attempts} attempt${attempts === 1 ? "" : "s"}${tail}`,
      { cause: last, details: { reason: "gave-up", triedForMs, attempts } },
    );
    this.#stop(error, true);
  }

  #stop(reason: unknown, failed: boolean): T | undefined {
    if (this.#state === SupervisorState.SHUTDOWN) return undefined;
    this.#retryTimer?.cancel();
    this.#retryTimer = undefined;
    this.#giveUpTimer?.cancel();
    this.#giveUpTimer = undefined;
    const attempt = this.#attempt;
    this.#attempt = undefined;
    const conn = this.#current;
    this.#current = undefined;
    this.#stopReason = reason;
    attempt?.abort(reason);
    this.#setState(SupervisorState.SHUTDOWN, failed ? { error: reason } : {});
    for (const waiter of [...this.#waiters]) waiter.reject(reason);
    return conn;
  }

  /** A connection nobody asked for any more (its attempt was abandoned). */
  #discard(conn: T): void {
    const dispose = this.#options.dispose;
    if (!dispose) return;
    // Releasing an unwanted connection is best effort; its failure changes nothing here.
    Promise.resolve()
      .then(() => dispose(conn))
      .catch(() => {});
  }

  #deadlineError(startedAt: number): ConnectFailedError {
    const waitedMs = this.#options.clock.now() - startedAt;
    const last = this.#lastError;
    return new ConnectFailedError(
      `no connection was ready within ${formatMs(waitedMs)}${last === undefined ? "" : `; the last error: ${describe(last)}`}`,
      { cause: last, details: { reason: "deadline", waitedMs, state: this.#state } },
    );
  }

  #setState(state: SupervisorState, extra: { error?: unknown; nextRetryInMs?: number } = {}): void {
    const previous = this.#state;
    this.#state = state;
    this.#emit({ type: "state", state, previous, attempt: this.#attempts, ...extra });
  }

  /**
   * Delivers events in order even when a listener causes another transition: that event waits
   * until every listener has seen the current one.
   */
  #emit(event: SupervisorEvent): void {
    this.#queue.push(event);
    if (this.#emitting) return;
    this.#emitting = true;
    try {
      for (let next = this.#queue.shift(); next; next = this.#queue.shift()) {
        for (const listener of [...this.#listeners]) {
          try {
            listener(next);
          } catch (err) {
            // A listener's bug must not leave the supervisor half-way through a transition; it
            // surfaces as an unhandled rejection instead, as a throw in any promise callback would.
            void Promise.reject(err);
          }
        }
      }
    } finally {
      this.#emitting = false;
    }
  }
}

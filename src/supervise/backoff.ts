/**
 * Exponential backoff with full jitter: the n-th delay since the last reset is drawn uniformly
 * from [0, min(ceiling, base * 2^n)] ("Exponential Backoff And Jitter", AWS Architecture Blog,
 * 2015). Full jitter rather than grpc-js's ±20% (`src/backoff-timeout.ts`): when a host daemon
 * restarts, every agent of every VM on it loses its connection in the same instant, and only
 * full jitter spreads their retries over the whole window instead of a band around one moment.
 *
 * This file only computes delays; the supervisor owns the timers, so both stay testable with a
 * fake clock and a seeded `random`.
 */
import { InvalidOptionError } from "../errors.ts";

/**
 * Upper bound of the first delay. A refused connect costs well under a millisecond on unix,
 * vsock and loopback tcp, and what is being waited for (an agent in a booting VM, a restarted
 * host daemon) often appears between two attempts, so retrying quickly at first is cheap and
 * keeps a command started just before its agent snappy (the CLI's old fixed retry was 100 ms).
 * Doubling reaches the ceiling after 9 delays, about 25 s of waiting on average, after which a
 * peer that stays away is tried once per ceiling/2 on average. grpc-js starts at 1 s, which suits
 * remote servers shared by many clients; a guestlink peer is usually on the same host.
 */
export const DEFAULT_BACKOFF_BASE_MS = 100;
/**
 * Upper bound of any delay: a peer that comes back is found within 30 s at worst, the same as the
 * agent's earlier reconnect loop and the CLI's default connect timeout.
 */
export const DEFAULT_BACKOFF_CEILING_MS = 30_000;
/** Each delay's upper bound is this many times the previous one, until the ceiling. */
export const BACKOFF_MULTIPLIER = 2;
/** The largest ceiling accepted: the longest delay a platform timer takes (setTimeout's limit). */
export const MAX_BACKOFF_CEILING_MS = 2 ** 31 - 1;

export interface BackoffOptions {
  /** Upper bound of the first delay, in ms. Default `DEFAULT_BACKOFF_BASE_MS`. */
  baseMs?: number;
  /** Upper bound of every delay, in ms; at least `baseMs`. Default `DEFAULT_BACKOFF_CEILING_MS`
   * (or `baseMs`, if that is larger). */
  ceilingMs?: number;
}

export interface ResolvedBackoffOptions {
  baseMs: number;
  ceilingMs: number;
}

/** Fills in defaults and checks the options, throwing INVALID_OPTION with the range. */
export function resolveBackoffOptions(options: BackoffOptions = {}): ResolvedBackoffOptions {
  const baseMs = options.baseMs ?? DEFAULT_BACKOFF_BASE_MS;
  const ceilingMs = options.ceilingMs ?? Math.max(DEFAULT_BACKOFF_CEILING_MS, baseMs);
  if (!(typeof baseMs === "number" && baseMs > 0 && baseMs <= MAX_BACKOFF_CEILING_MS)) {
    throw new InvalidOptionError(
      `backoff baseMs must be a number of milliseconds above 0 and at most ${MAX_BACKOFF_CEILING_MS}, got ${String(baseMs)}`,
      { details: { option: "baseMs", value: baseMs } },
    );
  }
  if (
    !(typeof ceilingMs === "number" && ceilingMs >= baseMs && ceilingMs <= MAX_BACKOFF_CEILING_MS)
  ) {
    throw new InvalidOptionError(
      `backoff ceilingMs must be a number of milliseconds from baseMs (${baseMs}) to ${MAX_BACKOFF_CEILING_MS}, got ${String(ceilingMs)}`,
      { details: { option: "ceilingMs", value: ceilingMs } },
    );
  }
  return { baseMs, ceilingMs };
}

/** The delays between attempts to reach a peer. */
export class Backoff {
  readonly options: ResolvedBackoffOptions;
  readonly #random: () => number;
  #attempt = 0;

  /** `random` returns a number in [0, 1], as `Math.random` does; tests pass a seeded one. */
  constructor(options: BackoffOptions | undefined, random: () => number) {
    if (typeof random !== "function") {
      throw new InvalidOptionError("backoff needs a random() function returning [0, 1]");
    }
    this.options = resolveBackoffOptions(options);
    this.#random = random;
  }

  /** Delays handed out since the last reset: the exponent of the next one's upper bound. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The upper bound of the delay `next()` returns: min(ceiling, base * 2^attempt). */
  get nextLimitMs(): number {
    const { baseMs, ceilingMs } = this.options;
    // Past 2^1024 the product is Infinity, which min() still caps correctly.
    return Math.min(ceilingMs, baseMs * BACKOFF_MULTIPLIER ** this.#attempt);
  }

  /** The next delay, in whole ms, drawn uniformly from [0, nextLimitMs]. */
  next(): number {
    const r = this.#random();
    if (!(typeof r === "number" && r >= 0 && r <= 1)) {
      throw new InvalidOptionError(`backoff random() must return a number in [0, 1], got ${r}`, {
        details: { option: "random", value: r },
      });
    }
    const delay = Math.floor(r * this.nextLimitMs);
    this.#attempt++;
    return delay;
  }

  /** Starts again from the base delay (the peer was reached and stayed). */
  reset(): void {
    this.#attempt = 0;
  }
}

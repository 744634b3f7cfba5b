/**
 * A pool of jsonrpc helpers (issue 16): n copies of one helper, each supervised on its own (its
 * own restarts and budget), and each request sent to the ready helper with the fewest requests
 * outstanding; ties go round the pool. A request made while none is ready waits for the first
 * that is (within its deadline), and fails HELPER_FAILED once every helper has given up.
 */
import type { CallOptions } from "../../abort.ts";
import { GuestlinkError, InvalidOptionError } from "../../errors.ts";
import { Helper, type HelperEvent, type HelperOptions } from "./helper.ts";
import type { RpcHandler } from "./jsonrpc.ts";

/** The most helpers one pool runs. */
export const MAX_POOL_SIZE = 1024;

export class HelperPool {
  /** The pool's helpers, in a fixed order (an event's `index` is the position here). */
  readonly helpers: readonly Helper[];
  #next = 0;

  constructor(size: number, options: HelperOptions) {
    if (!Number.isSafeInteger(size) || size < 1 || size > MAX_POOL_SIZE) {
      throw new InvalidOptionError(
        `spawnHelpers: the pool's size must be a whole number from 1 to ${MAX_POOL_SIZE}, got ${size}`,
      );
    }
    if ((options.protocol ?? "lines") !== "jsonrpc") {
      throw new InvalidOptionError(
        `spawnHelpers: a pool spreads requests, so its helpers speak protocol "jsonrpc" (got ${JSON.stringify(options.protocol ?? "lines")})`,
      );
    }
    const helpers: Helper[] = [];
    try {
      for (let i = 0; i < size; i++) helpers.push(new Helper(options));
    } catch (err) {
      for (const h of helpers) void h.stop();
      throw err;
    }
    this.helpers = helpers;
  }

  /** Requests sent and not yet answered, over the whole pool. */
  get outstanding(): number {
    let n = 0;
    for (const h of this.helpers) n += h.outstanding;
    return n;
  }

  /** Every helper's events, with its position in `helpers`. */
  onEvent(listener: (e: HelperEvent, index: number) => void): () => void {
    const offs = this.helpers.map((h, i) => h.onEvent((e) => listener(e, i)));
    return () => {
      for (const off of offs) off();
    };
  }

  /** Serves the helpers' requests (and notifications) for `method`, from any of them. */
  handle(method: string, handler: RpcHandler): void {
    for (const h of this.helpers) h.handle(method, handler);
  }

  /** Calls `method` in the ready helper with the fewest requests outstanding. */
  async request(method: string, params?: unknown, options?: CallOptions): Promise<unknown> {
    const helper = this.#pick() ?? (await this.#firstReady(options));
    return helper.request(method, params, options);
  }

  /** Resolves once every helper is ready; rejects as soon as one gives up or is stopped. */
  async ready(options?: CallOptions): Promise<void> {
    await Promise.all(this.helpers.map((h) => h.ready(options)));
  }

  /** Stops every helper; resolves when nothing of any is left. */
  async stop(): Promise<void> {
    await Promise.all(this.helpers.map((h) => h.stop()));
  }

  /** The ready helper with the fewest outstanding, starting the search after the last pick. */
  #pick(): Helper | undefined {
    const n = this.helpers.length;
    let best: Helper | undefined;
    let bestAt = 0;
    for (let k = 0; k < n; k++) {
      const at = (this.#next + k) % n;
      const h = this.helpers[at] as Helper;
      if (!h.isReady) continue;
      if (best === undefined || h.outstanding < best.outstanding) {
        best = h;
        bestAt = at;
      }
    }
    if (best !== undefined) this.#next = (bestAt + 1) % n;
    return best;
  }

  /** Waits for a helper to become ready; fails once none can (every one gave up or stopped). */
  async #firstReady(options: CallOptions | undefined): Promise<Helper> {
    const done = new AbortController();
    const signal =
      options?.signal === undefined
        ? done.signal
        : AbortSignal.any([done.signal, options.signal as AbortSignal]);
    try {
      return await Promise.any(
        this.helpers.map((h) => h.ready({ signal, deadline: options?.deadline }).then(() => h)),
      );
    } catch (err) {
      if (options?.signal?.aborted) throw options.signal.reason;
      const errors = err instanceof AggregateError ? err.errors : [err];
      throw (
        errors.find((e) => e instanceof GuestlinkError && e.code !== "HELPER_FAILED") ??
        errors[0] ??
        err
      );
    } finally {
      done.abort();
    }
  }
}

/** Starts `size` copies of a jsonrpc helper as one pool (see `HelperPool`). */
export function spawnHelpers(size: number, options: HelperOptions): HelperPool {
  return new HelperPool(size, options);
}

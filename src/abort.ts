/**
 * AbortController and AbortSignal as every layer uses them. They are globals in every
 * JavaScript runtime guestlink targets, but not part of ECMAScript's own types, and the wire and
 * session layers compile without Node's or the DOM's types; Node's AbortSignal satisfies this interface.
 */

export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

export interface AbortControllerLike {
  readonly signal: AbortSignalLike;
  abort(reason?: unknown): void;
}

const Controller = (globalThis as unknown as { AbortController: new () => AbortControllerLike })
  .AbortController;

export function newAbortController(): AbortControllerLike {
  return new Controller();
}

/** The last argument of every async API: an abort signal and an absolute deadline. */
export interface CallOptions {
  signal?: AbortSignalLike;
  /**
   * Absolute deadline on the session clock's monotonic milliseconds (`clock.now()`; with the
   * Node runtime, `performance.now()`). `Infinity` means none.
   */
  deadline?: number;
}

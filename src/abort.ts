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

/**
 * A signal of our own for code that only listens: `aborted`, `reason` and listeners, with none of
 * an AbortSignal's cost (it is no EventTarget; Node's APIs do not take it).
 */
class LightSignal implements AbortSignalLike {
  aborted = false;
  reason: unknown;
  #listeners: (() => void)[] | undefined;

  addEventListener(_type: "abort", listener: () => void): void {
    if (this.aborted) return;
    this.#listeners ??= [];
    this.#listeners.push(listener);
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    const at = this.#listeners?.indexOf(listener) ?? -1;
    if (at >= 0) this.#listeners?.splice(at, 1);
  }

  fire(reason: unknown): void {
    this.aborted = true;
    this.reason = reason;
    const listeners = this.#listeners;
    this.#listeners = undefined;
    for (const listener of listeners ?? []) listener();
  }
}

/**
 * An AbortController created only when someone asks for its signal. Most calls finish without
 * their handler ever looking, and on Node 20 a signal costs about 1.7 µs to make (bench/session).
 * Code of ours that only listens takes `light` instead, which costs next to nothing.
 */
export class LazyAbortController implements AbortControllerLike {
  #controller: AbortControllerLike | undefined;
  #light: LightSignal | undefined;
  #aborted = false;
  #reason: unknown;

  get signal(): AbortSignalLike {
    if (!this.#controller) {
      this.#controller = newAbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** The same cancellation as `signal`, as a plain `AbortSignalLike` that is not a Node AbortSignal. */
  get light(): AbortSignalLike {
    if (!this.#light) {
      this.#light = new LightSignal();
      if (this.#aborted) this.#light.fire(this.#reason);
    }
    return this.#light;
  }

  abort(reason?: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
    this.#light?.fire(reason);
  }
}

/** Does nothing: attached to a promise so that its rejection does not count as unhandled. */
export const IGNORE = (): void => {};

/** A promise with its settling functions. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(IGNORE); // callers may never look; a rejection here is not "unhandled"
  return { promise, resolve, reject };
}

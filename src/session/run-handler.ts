/**
 * Running one of the peer's calls (see `Calls.onCall`): the handler is called in a microtask, so
 * frames that arrived with the CALL (a CANCEL, say) are handled first; what it returns or throws
 * becomes the reply, and the call's output streams are ended and drained before the result goes.
 */
import type { Handler, HandlerContext } from "./call.ts";
import type { SessionStream } from "./stream.ts";

/** What the reply to one call needs. */
export interface HandlerRun {
  /** The call's output streams (empty for most calls). */
  output: readonly SessionStream[];
  /** Settles once everything written to `stream` is sent. */
  outputDone(stream: SessionStream): Promise<void>;
  /** Sends the handler's value as the RESULT. */
  sendResult(value: unknown): void;
  /** Sends what the handler threw or rejected with as the ERROR. */
  fail(err: unknown): void;
  /** The call is over (called once, after the reply, whatever happened). */
  finish(): void;
}

const RESOLVED = Promise.resolve();

export function runHandler<S>(
  handler: Handler<S>,
  params: unknown,
  ctx: HandlerContext<S>,
  run: HandlerRun,
): void {
  RESOLVED.then(() => {
    let value: unknown;
    let then: unknown;
    try {
      value = handler(params, ctx);
      // Read once, as resolving a promise with `value` would.
      then = isObjectLike(value) ? (value as { then?: unknown }).then : undefined;
    } catch (err) {
      try {
        run.fail(err);
      } finally {
        run.finish();
      }
      return;
    }
    // A call without streams whose handler returns a plain value is answered right here: the
    // promise chain the general case needs costs more than the call itself.
    if (run.output.length === 0 && typeof then !== "function") {
      try {
        run.sendResult(value);
      } finally {
        run.finish();
      }
      return;
    }
    const outcome =
      typeof then === "function"
        ? new Promise((resolve, reject) => then.call(value, resolve, reject))
        : Promise.resolve(value);
    // The call is finished as soon as its reply is sent (the peer may close at once).
    outcome.then(
      async (value) => {
        try {
          // All stream output reaches the caller before the result does.
          for (const s of run.output) s.end();
          await Promise.all(run.output.map((s) => run.outputDone(s)));
          run.sendResult(value);
        } finally {
          run.finish();
        }
      },
      (err: unknown) => {
        try {
          run.fail(err);
        } finally {
          run.finish();
        }
      },
    );
  });
}

function isObjectLike(value: unknown): value is object {
  return (typeof value === "object" && value !== null) || typeof value === "function";
}

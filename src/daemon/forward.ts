/**
 * Forwarding a client's session to an agent the daemon holds (`guestlink exec @vm-1 …`): every
 * call the client makes is made on the agent's session with the same method, parameters, streams
 * and deadline; stream bytes are piped both ways with backpressure end to end (a slow client
 * slows the agent's stream, never the daemon's memory); the result or error comes back as the
 * agent gave it; a client that cancels or goes away cancels the call in the agent.
 */
import type { Duplex } from "node:stream";
import { GuestlinkError } from "../errors.ts";
import { toDuplex } from "../platform/duplex.ts";
import type { CallContext } from "../session/call.ts";
import type { Session } from "../session/session.ts";
import type { SessionStream } from "../session/stream.ts";

/** Told of each forwarded call once it ends: `error` is undefined when it gave a result. */
export type CallObserver = (method: string, seconds: number, error?: unknown) => void;

/**
 * Makes `client` a window onto the agent whose session `agent()` gives (undefined: it is down);
 * `observe` (the metrics) is told how each call ended and how long it took.
 */
export function forwardCalls(
  client: Session,
  agent: () => Session | undefined,
  id: string,
  observe?: CallObserver,
): void {
  client.handleOther(async (params: unknown, ctx: CallContext) => {
    if (observe === undefined) return forward(params, ctx);
    const started = performance.now();
    let outcome: { error?: unknown } = {};
    try {
      return await forward(params, ctx);
    } catch (err) {
      outcome = { error: err ?? new Error("a call failed with nothing") };
      throw err;
    } finally {
      observe(ctx.method, (performance.now() - started) / 1000, outcome.error);
    }
  });

  async function forward(params: unknown, ctx: CallContext): Promise<unknown> {
    const target = agent();
    if (target === undefined) {
      throw new GuestlinkError(
        "AGENT_UNAVAILABLE",
        `agent ${id} is not connected to the daemon now`,
        {
          details: { id },
        },
      );
    }
    const names = Object.keys(ctx.streams);
    const call = target.open(ctx.method, params, {
      streams: names,
      signal: ctx.signal,
      deadline: Number.isFinite(ctx.deadline) ? ctx.deadline : undefined,
    });
    const piping = names.map((name) =>
      splice(ctx.streams[name] as SessionStream, call.streams[name] as SessionStream),
    );
    try {
      return await call.result;
    } finally {
      // The streams finish on their own once both ends are done; the call does not wait for them
      // beyond its result, as the agent's own handler does not.
      void Promise.allSettled(piping);
    }
  }
}

/** Pipes two session streams into each other; settles when both directions are done. */
function splice(a: SessionStream, b: SessionStream): Promise<void> {
  const da = toDuplex(a);
  const db = toDuplex(b);
  return Promise.all([pipeOne(da, db), pipeOne(db, da)]).then(() => {});
}

function pipeOne(from: Duplex, to: Duplex): Promise<void> {
  return new Promise((resolve) => {
    from.pipe(to);
    const done = () => resolve();
    from.once("end", done);
    from.once("error", (err) => {
      to.destroy(err);
      done();
    });
    from.once("close", done);
  });
}

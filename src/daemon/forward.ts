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
    let result: unknown;
    try {
      result = await call.result;
    } catch (err) {
      // A failed call resets its streams; the pipes finish on their own.
      void Promise.allSettled(piping.map((p) => p.both));
      throw err;
    }
    // The agent ended its directions before it sent its result, but what it sent may still be
    // on its way to the client here (a client that reads slowly holds it back). Once the handler
    // returns, the session ends the client's streams: wait until every byte of the agent's
    // directions has been handed to them first, as the agent's own handler does.
    await Promise.all(piping.map((p) => p.toClient));
    void Promise.allSettled(piping.map((p) => p.both));
    return result;
  }
}

/**
 * Pipes two session streams into each other: `toClient` settles once everything from `agent`
 * was written into `client` and its end passed on (or the pipe failed), `both` once both
 * directions are done.
 */
function splice(
  client: SessionStream,
  agent: SessionStream,
): { toClient: Promise<void>; both: Promise<void> } {
  const dc = toDuplex(client);
  const da = toDuplex(agent);
  const toClient = pipeOne(da, dc);
  const toAgent = pipeOne(dc, da);
  return { toClient, both: Promise.all([toClient, toAgent]).then(() => {}) };
}

/** Pipes `from` into `to`; settles once `to` has finished (every write done) or either failed. */
function pipeOne(from: Duplex, to: Duplex): Promise<void> {
  return new Promise((resolve) => {
    from.pipe(to);
    const done = () => resolve();
    to.once("finish", done);
    to.once("close", done);
    from.once("error", (err) => {
      to.destroy(err);
      done();
    });
    from.once("close", () => {
      // Closed before its end (destroyed): `to` will not finish.
      if (!from.readableEnded) done();
    });
  });
}

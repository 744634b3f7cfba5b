/**
 * Forwarding a client's session to an agent the daemon holds (`guestlink exec @vm-1 …`): every
 * call the client makes is made on the agent's session with the same method, parameters, streams
 * and deadline; stream bytes are piped both ways with backpressure end to end (a slow client
 * slows the agent's stream, never the daemon's memory); the result or error comes back as the
 * agent gave it; a client that cancels or goes away cancels the call in the agent.
 */
import { GuestlinkError } from "../errors.ts";
import { adopt } from "../recycle.ts";
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
 * was handed to `client`, its end included (or the pipe failed), `both` once both directions
 * are done.
 */
function splice(
  client: SessionStream,
  agent: SessionStream,
): { toClient: Promise<void>; both: Promise<void> } {
  const toClient = pipeStreams(agent, client);
  const toAgent = pipeStreams(client, agent);
  return { toClient, both: Promise.all([toClient, toAgent]).then(() => {}) };
}

/**
 * Writes what arrives on `from` into `to`, as it is: the same chunks, no copy and no Node stream
 * in between. `from`'s bytes count as consumed (credit back to its peer) only while `to`'s queue
 * has room, so a slow reader at `to`'s end slows `from`'s writer by at most one window each. A
 * failure on either side resets the other. Settles once `to`'s direction is done (its END handed
 * to the session) or failed.
 */
function pipeStreams(from: SessionStream, to: SessionStream): Promise<void> {
  return new Promise((resolve) => {
    /** Bytes taken from `from` while `to`'s queue was full: consumed once it drains. */
    let owed = 0;
    const repay = () => {
      const bytes = owed;
      owed = 0;
      from.consumed(bytes);
    };
    const fail = (code: string, message: string) => {
      if (!from.closed) from.reset(code, message);
      if (!to.closed) to.reset(code, message);
      resolve();
    };
    from.attach({
      data(chunk) {
        // Nothing here keeps the chunk: its read buffer may take it back once it is sent.
        adopt(chunk);
        let room: boolean;
        try {
          room = to.write(chunk);
        } catch (err) {
          fail("CANCELLED", `the other side went away (${(err as Error).message})`);
          return;
        }
        if (room && owed === 0) {
          from.consumed(chunk.length);
          return;
        }
        owed += chunk.length;
        to.onDrain ??= repay;
      },
      end() {
        try {
          to.end();
        } catch {
          // `to` is closed already: its whenOutputDone below says so at once.
        }
        to.whenOutputDone(() => resolve());
      },
      error(err) {
        const code = typeof err.details?.code === "string" ? err.details.code : "CANCELLED";
        fail(code, err.message);
      },
    });
  });
}

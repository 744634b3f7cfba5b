/**
 * The host side of `mediator.bench.ts`, run as its own process (as `guestlink mediate` is):
 *
 *   node --import tsx bench/mediator-host.ts --lib DIR --dir SOCKDIR --guests N --slots S
 *
 * It serves, all from this one process (so every path sees the same process and CPU):
 *
 * - a Mediator listening on `unix:SOCKDIR/gNN.sock` for each of the N guests (one channel, hence
 *   one flow, each, named gNN), with two pools of S slots whose worker is
 *   bench/mediator-worker.mjs (JSON-RPC helpers, one per slot): "flat" (one level) and "tiers"
 *   (three levels, weights 8:3:1); queue limits high enough that flooding is never refused;
 * - "direct": `unix:SOCKDIR/direct.sock`, a session server whose "bench.run" handler does the
 *   worker's trivial work itself ({input, guest, priority}, guest "direct");
 * - "relay": `unix:SOCKDIR/relay.sock`, a session server whose "bench.run" handler sends a `run`
 *   request to a pool of S helpers running the same worker program (no scheduler, no slot
 *   limit: the helper pool pipelines), guest "relay";
 * - "capped": `unix:SOCKDIR/capped.sock`, the same as relay but with at most S requests at the
 *   helpers at once (the rest wait in a FIFO), as the mediator's S slots allow: the mediator's
 *   hops and concurrency without its scheduler, guest "capped".
 *
 * `guestlink` is loaded from the tsc build in DIR (see `buildLibrary` in lib.ts). It prints
 * "ready" once listening, and stops when its stdin closes (so it never outlives the benchmark).
 */
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const WORKER_SCRIPT = fileURLToPath(new URL("./mediator-worker.mjs", import.meta.url));
export const FLAT_POOL = "flat";
export const TIERS_POOL = "tiers";
/** A pool whose work a function in the host process does (`Mediator.start`'s `workers`). */
export const INLINE_POOL = "inline";
export const TIER_WEIGHTS = [8, 3, 1];
export const RUN_METHOD = "bench.run";
/** Queued requests a pool (and a guest in it) may hold: flooding must never be refused. */
export const HOST_QUEUE_LIMIT = 1_000_000;

export const guestName = (i: number): string => `g${String(i).padStart(2, "0")}`;
export const guestAddress = (dir: string, i: number): string =>
  `unix:${join(dir, `${guestName(i)}.sock`)}`;
export const directAddress = (dir: string): string => `unix:${join(dir, "direct.sock")}`;
export const relayAddress = (dir: string): string => `unix:${join(dir, "relay.sock")}`;
export const cappedAddress = (dir: string): string => `unix:${join(dir, "capped.sock")}`;

interface Args {
  lib: string;
  dir: string;
  guests: number;
  slots: number;
}

function parseArgs(argv: readonly string[]): Args {
  const out: Partial<Args> = {};
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag}: no value`);
    if (flag === "--lib") out.lib = value;
    else if (flag === "--dir") out.dir = value;
    else if (flag === "--guests") out.guests = Number(value);
    else if (flag === "--slots") out.slots = Number(value);
    else throw new Error(`unknown option ${flag}`);
  }
  if (!out.lib || !out.dir || !(out.guests && out.guests > 0) || !(out.slots && out.slots > 0)) {
    throw new Error("usage: mediator-host.ts --lib DIR --dir SOCKDIR --guests N --slots S");
  }
  return out as Args;
}

async function main(args: Args): Promise<void> {
  const load = (path: string) => import(pathToFileURL(join(args.lib, path)).href);
  const { Mediator } = (await load(
    "controller/mediator/mediator.js",
  )) as typeof import("../src/controller/mediator/mediator.ts");
  const { readMediatorConfig } = (await load(
    "controller/mediator/config.js",
  )) as typeof import("../src/controller/mediator/config.ts");
  const { serveSessions } = (await load(
    "platform/session.js",
  )) as typeof import("../src/platform/session.ts");
  const { spawnHelpers } = (await load(
    "controller/helpers/pool.js",
  )) as typeof import("../src/controller/helpers/pool.ts");

  const worker = { helper: [process.execPath, WORKER_SCRIPT] };
  const limits = { queue_limit: HOST_QUEUE_LIMIT, guest_limit: HOST_QUEUE_LIMIT };
  const mediator = await Mediator.start(
    readMediatorConfig(
      {
        listen: Array.from({ length: args.guests }, (_, i) => ({
          address: guestAddress(args.dir, i),
          name: guestName(i),
        })),
        pools: [
          { name: FLAT_POOL, slots: args.slots, ...limits, worker },
          { name: INLINE_POOL, slots: args.slots, ...limits },
          {
            name: TIERS_POOL,
            slots: args.slots,
            priorities: TIER_WEIGHTS.length,
            weights: TIER_WEIGHTS,
            ...limits,
            worker,
          },
        ],
      },
      { workers: "optional" },
    ),
    {
      log: (level, message) => level === "warn" && process.stderr.write(`host: ${message}\n`),
      // The same trivial work as "direct", in process: what the mediator itself costs.
      workers: {
        [INLINE_POOL]: (input, ctx) => ({ input, guest: ctx.flow, priority: ctx.priority }),
      },
    },
  );

  interface RunCall {
    pool: string;
    input: unknown;
  }
  const direct = await serveSessions(directAddress(args.dir), (session) => {
    session.handle(RUN_METHOD, (params) => {
      const { input } = params as RunCall;
      return { input, guest: "direct", priority: 1 };
    });
  });

  const helpers = spawnHelpers(args.slots, {
    command: process.execPath,
    args: [WORKER_SCRIPT],
    protocol: "jsonrpc",
  });
  await helpers.ready();
  const relay = await serveSessions(relayAddress(args.dir), (session) => {
    session.handle(RUN_METHOD, (params, ctx) => {
      const { pool, input } = params as RunCall;
      return helpers.request(
        "run",
        { input, pool, priority: 1, guest: "relay", key: null },
        { signal: ctx.signal as AbortSignal, deadline: ctx.deadline },
      );
    });
  });

  // At most `slots` at the helpers at once; the rest wait their turn, first come first served.
  let running = 0;
  const waiting: (() => void)[] = [];
  const capped = await serveSessions(cappedAddress(args.dir), (session) => {
    session.handle(RUN_METHOD, async (params, ctx) => {
      const { pool, input } = params as RunCall;
      if (running >= args.slots) await new Promise<void>((resolve) => waiting.push(resolve));
      running++;
      try {
        return await helpers.request(
          "run",
          { input, pool, priority: 1, guest: "capped", key: null },
          { signal: ctx.signal as AbortSignal, deadline: ctx.deadline },
        );
      } finally {
        running--;
        waiting.shift()?.();
      }
    });
  });

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await Promise.all([
      mediator.close(),
      direct.close({ abort: true }),
      relay.close({ abort: true }),
      capped.close({ abort: true }),
      helpers.stop(),
    ]);
    process.exit(0);
  };
  process.stdin.on("end", () => void stop()).resume();
  process.once("SIGTERM", () => void stop());
  process.stdout.write("ready\n");
}

// Only when run as a program: the benchmark imports the names above.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(parseArgs(process.argv.slice(2))).catch((err: unknown) => {
    process.stderr.write(`mediator-host: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}

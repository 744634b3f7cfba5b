/**
 * The memory part of `mediator.bench.ts`, in a process of its own (a fresh heap, and node's
 * --expose-gc):
 *
 *   node --expose-gc --import tsx bench/mediator-memory.ts --lib DIR --queued N --slots S
 *        [--deadline-ms MS] [--flows F]
 *
 * A Scheduler (from the tsc build in DIR) on Node's real clock, one pool of S slots, one level:
 * S + N requests are submitted from F flows in turn (request n from flow n % F), so S run (held:
 * their runs do not finish until released) and N are queued. It measures the heap used after a
 * full GC before and after the submits, checks the pool's status (N queued, S running), then
 * releases the held runs — every later run answers at once — and checks that every request
 * started and completed in the order submitted (round robin over flows that were submitted
 * round robin is that order) with its own reply. With `--deadline-ms`, each request carries a
 * deadline that far ahead, as a session call does by default (a timer per request).
 *
 * Prints one line of JSON: {queued, slots, flows, heapBefore, heapQueued, bytesPerQueued,
 * submitMs, drainMs, inOrder, replies}.
 */
import { join } from "node:path";
import { pathToFileURL } from "node:url";

interface Args {
  lib: string;
  queued: number;
  slots: number;
  flows: number;
  deadlineMs: number | undefined;
}

function parseArgs(argv: readonly string[]): Args {
  const out: Args = { lib: "", queued: 100_000, slots: 4, flows: 16, deadlineMs: undefined };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag}: no value`);
    if (flag === "--lib") out.lib = value;
    else if (flag === "--queued") out.queued = Number(value);
    else if (flag === "--slots") out.slots = Number(value);
    else if (flag === "--flows") out.flows = Number(value);
    else if (flag === "--deadline-ms") out.deadlineMs = Number(value);
    else throw new Error(`unknown option ${flag}`);
  }
  if (!out.lib) throw new Error("--lib DIR is required");
  return out;
}

function fullGc(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run node with --expose-gc");
  // Twice: the first may leave what only a second full collection frees (weak maps, finalizers).
  gc();
  gc();
}

async function main(args: Args): Promise<void> {
  const load = (path: string) => import(pathToFileURL(join(args.lib, path)).href);
  const { Scheduler } = (await load(
    "controller/mediator/scheduler.js",
  )) as typeof import("../src/controller/mediator/scheduler.ts");
  const { nodeClock } = (await load(
    "platform/node.js",
  )) as typeof import("../src/platform/node.ts");

  const total = args.slots + args.queued;
  const started: number[] = [];
  const held: (() => void)[] = [];
  let holding = true;
  const sched = new Scheduler({
    clock: nodeClock,
    keepMs: 0,
    pools: [
      {
        name: "p",
        slots: args.slots,
        weights: [1],
        queueLimit: Number.POSITIVE_INFINITY,
        guestLimit: Number.POSITIVE_INFINITY,
        maxWaitMs: Number.POSITIVE_INFINITY,
      },
    ],
    run: (_pool, input) => {
      const n = (input as { n: number }).n;
      started.push(n);
      const reply = { n2: n * 2 };
      if (!holding) return Promise.resolve(reply);
      return new Promise((resolve) => held.push(() => resolve(reply)));
    },
  });

  // Everything the caller holds anyway (the inputs, the flows' names, room for the promises)
  // exists before the first measurement, so the difference is the scheduler's own.
  const flows = Array.from({ length: args.flows }, (_, f) => `guest-${f}`);
  const inputs = Array.from({ length: total }, (_, n) => ({ n }));
  const replies: Promise<unknown>[] = new Array(total).fill(undefined);
  fullGc();
  const heapBefore = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  for (let n = 0; n < total; n++) {
    replies[n] = sched.submit({
      pool: "p",
      priority: 1,
      flow: flows[n % args.flows] as string,
      input: inputs[n],
      deadline: args.deadlineMs === undefined ? undefined : nodeClock.now() + args.deadlineMs,
    });
  }
  const submitMs = performance.now() - t0;
  fullGc();
  const heapQueued = process.memoryUsage().heapUsed;

  const pool = sched.status({ maxQueued: 0 }).pools[0];
  if (pool?.queued !== args.queued || pool.running !== args.slots || held.length !== args.slots) {
    throw new Error(
      `expected ${args.queued} queued and ${args.slots} running, the status says ${pool?.queued} and ${pool?.running} (${held.length} runs held)`,
    );
  }

  const completed: number[] = [];
  let wrong = 0;
  replies.forEach((reply, n) => {
    reply.then((value) => {
      if ((value as { n2?: number }).n2 !== n * 2) wrong++;
      completed.push(n);
    });
  });
  const t1 = performance.now();
  holding = false;
  for (const release of held.splice(0)) release();
  await Promise.all(replies);
  const drainMs = performance.now() - t1;
  const inOrder = (list: number[]) => list.length === total && list.every((n, i) => n === i);
  process.stdout.write(
    `${JSON.stringify({
      queued: args.queued,
      slots: args.slots,
      flows: args.flows,
      deadlineMs: args.deadlineMs ?? null,
      heapBefore,
      heapQueued,
      bytesPerQueued: (heapQueued - heapBefore) / args.queued,
      submitMs,
      drainMs,
      startedInOrder: inOrder(started),
      completedInOrder: inOrder(completed),
      completed: completed.length,
      wrongReplies: wrong,
    })}\n`,
  );
  await sched.close();
}

main(parseArgs(process.argv.slice(2))).catch((err: unknown) => {
  process.stderr.write(`mediator-memory: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});

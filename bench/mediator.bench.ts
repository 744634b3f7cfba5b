/**
 * The mediator (issue 17): guests on their own Unix-socket channels submit trivial work to the
 * host's pools; the host (`bench/mediator-host.ts`, a process of its own, as `guestlink mediate`
 * is) runs it in JSON-RPC helpers (`bench/mediator-worker.mjs`, one per slot).
 *
 * 1. Fairness: 16 guests, each keeping 64 requests in flight in one pool at one level. Over a
 *    window in which every guest is backlogged (checked: each has requests queued at both ends),
 *    Jain's index of the requests the mediator served each guest (its own `status()` counts,
 *    taken at both ends of the window). Then the same guests flood three levels weighted 8:3:1
 *    (a third of each guest's lanes per level): each level's share of the dispatches against its
 *    weight's, and its wait p99 (queued → started, the mediator's `status()`), and the guests'
 *    round trip p99 per level.
 * 2. Throughput: requests/s with 64 in flight from one guest through the mediator, against the
 *    same guest process calling "direct": a session server in the same host process whose
 *    handler does the worker's trivial work itself (what a guest gets calling the host without a
 *    mediator; the aim). For information: "relay", a session server whose handler sends the same
 *    `run` request to a helper pool of the same size running the same worker (the mediator's hops
 *    without its scheduler), and the mediator with the 64 spread over 16 guests.
 * 3. Memory: 100,000 requests queued in a Scheduler on the real clock (`bench/mediator-memory.ts`,
 *    a fresh process with --expose-gc), the pool's slots held: heap used per queued request, and
 *    that all complete in the order submitted after release. Also with a deadline on each (as a
 *    session call carries by default: a timer each).
 *
 * Every reply is checked against its request (its input, its guest, its level), and the counts
 * must add up with the mediator's; a mismatch throws. guestlink is measured as shipped: `src/`
 * compiled by tsc (`buildLibrary`).
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { MediatorStatus } from "../src/controller/mediator/mediator.ts";
import type { PoolStatus } from "../src/controller/mediator/scheduler.ts";
import type { Session } from "../src/session/session.ts";
import {
  type BenchOptions,
  type BenchReport,
  buildLibrary,
  formatNumber,
  type Helper,
  measureRates,
  median,
  now,
  percentile,
  type Rate,
  round,
  startHelper,
  table,
  verdict,
} from "./lib.ts";
import {
  cappedAddress,
  directAddress,
  FLAT_POOL,
  guestAddress,
  guestName,
  INLINE_POOL,
  RUN_METHOD,
  relayAddress,
  TIER_WEIGHTS,
  TIERS_POOL,
} from "./mediator-host.ts";

const HOST_SCRIPT = "bench/mediator-host.ts";
const MEMORY_SCRIPT = "bench/mediator-memory.ts";
const GUESTS = 16;
const IN_FLIGHT = 64;
/** Slots per pool (JSON-RPC helpers, one per slot); the relay's helper pool has as many. */
const SLOTS = 4;
/** A session call's deadline when it gives none (DEFAULT_CALL_TIMEOUT_MS). */
const SESSION_DEADLINE_MS = 120_000;

/** Aims (informational: a miss does not fail the run). */
const AIM_JAIN = 0.98;
const AIM_THROUGHPUT_RATIO = 0.5;

interface Config {
  turns: number;
  floodWarmupMs: number;
  floodWindowMs: number;
  /** Requests per timed batch of the 64-deep pipeline. */
  pipelineBatch: number;
  pipelineRuns: number;
  pipelineMinMs: number;
  queued: number;
  memoryRuns: number;
  /** Queued in the deadline variant (bytes per request do not depend on it). */
  deadlineQueued: number;
}

const FULL: Config = {
  turns: 3,
  floodWarmupMs: 500,
  floodWindowMs: 2_000,
  pipelineBatch: 5_000,
  pipelineRuns: 7,
  pipelineMinMs: 500,
  queued: 100_000,
  memoryRuns: 3,
  deadlineQueued: 100_000,
};

const QUICK: Config = {
  turns: 1,
  floodWarmupMs: 150,
  floodWindowMs: 300,
  pipelineBatch: 1_000,
  pipelineRuns: 3,
  pipelineMinMs: 60,
  queued: 20_000,
  memoryRuns: 1,
  deadlineQueued: 5_000,
};

class CorrectnessError extends Error {
  override name = "CorrectnessError";
}

interface Lib {
  openSession: typeof import("../src/platform/session.ts").openSession;
  submitWork: typeof import("../src/controller/mediator/submit.ts").submitWork;
  mediatorStatus: typeof import("../src/controller/mediator/submit.ts").mediatorStatus;
}

async function loadLib(dir: string): Promise<Lib> {
  const load = (path: string) => import(pathToFileURL(join(dir, path)).href);
  const session = (await load(
    "platform/session.js",
  )) as typeof import("../src/platform/session.ts");
  const submit = (await load(
    "controller/mediator/submit.js",
  )) as typeof import("../src/controller/mediator/submit.ts");
  return {
    openSession: session.openSession,
    submitWork: submit.submitWork,
    mediatorStatus: submit.mediatorStatus,
  };
}

interface Reply {
  input?: { seq?: unknown };
  guest?: unknown;
  priority?: unknown;
}

function checkReply(
  label: string,
  value: unknown,
  seq: number,
  guest: string,
  priority: number,
): void {
  const r = value as Reply | null;
  if (r?.input?.seq !== seq || r.guest !== guest || r.priority !== priority) {
    throw new CorrectnessError(
      `${label}: request ${seq} of ${guest} at priority ${priority} came back as ${JSON.stringify(value)}`,
    );
  }
}

/** One guest: its session, and what it submitted and got back per pool over the whole run. */
interface Guest {
  name: string;
  session: Session;
  seq: number;
  /** Replies received per pool, over the whole run (checked against the mediator's counts). */
  answered: Map<string, number>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- 1: fairness ---------------------------------------------------------------------------

interface FloodTurn {
  /** Per guest (in order): requests the mediator served it in the window (status deltas). */
  served: number[];
  /** Per guest: replies the guest received in the window (its own count). */
  received: number[];
  /** Per level: jobs started... finished in the window (status `done` deltas). */
  levelDone: number[];
  /** Per level: the mediator's wait p99 (last 1024 waits) at the end of the window. */
  waitP99Ms: (number | null)[];
  waitP50Ms: (number | null)[];
  /** Per level: the guests' round trips (submit → reply) completed in the window. */
  roundTrips: number[][];
  windowMs: number;
  /** Guests with nothing queued at either end of the window (should be none). */
  notBacklogged: string[];
}

function poolOf(status: MediatorStatus, pool: string): PoolStatus {
  const found = status.pools.find((p) => p.name === pool);
  if (found === undefined) throw new CorrectnessError(`the status lists no pool ${pool}`);
  return found;
}

/**
 * Every guest keeps IN_FLIGHT requests in flight in `pool` (lane k at level k % levels + 1)
 * until the window ends; the window starts `warmupMs` in, when every guest is backlogged.
 */
async function flood(
  lib: Lib,
  guests: Guest[],
  pool: string,
  levels: number,
  cfg: Config,
): Promise<FloodTurn> {
  let phase: "warmup" | "window" | "stop" = "warmup";
  const received = guests.map(() => 0);
  const roundTrips: number[][] = Array.from({ length: levels }, () => []);
  const lane = async (g: number, k: number) => {
    const guest = guests[g] as Guest;
    const priority = (k % levels) + 1;
    while (phase !== "stop") {
      const seq = guest.seq++;
      const start = now();
      const value = await lib.submitWork(guest.session, pool, { seq }, { priority });
      const rtt = now() - start;
      checkReply(`flood ${pool}`, value, seq, guest.name, priority);
      guest.answered.set(pool, (guest.answered.get(pool) ?? 0) + 1);
      if (phase === "window") {
        received[g] = (received[g] as number) + 1;
        roundTrips[priority - 1]?.push(rtt);
      }
    }
  };
  const lanes = guests.flatMap((_, g) => Array.from({ length: IN_FLIGHT }, (_, k) => lane(g, k)));
  const status = () => lib.mediatorStatus((guests[0] as Guest).session);
  try {
    await sleep(cfg.floodWarmupMs);
    phase = "window";
    const t0 = now();
    const a = poolOf(await status(), pool);
    await sleep(cfg.floodWindowMs);
    const b = poolOf(await status(), pool);
    const windowMs = now() - t0;
    phase = "stop";
    await Promise.all(lanes);
    const flowOf = (s: PoolStatus, name: string) => s.flows.find((f) => f.flow === name);
    const notBacklogged = guests
      .filter(
        (g) => !((flowOf(a, g.name)?.queued ?? 0) > 0 && (flowOf(b, g.name)?.queued ?? 0) > 0),
      )
      .map((g) => g.name);
    return {
      served: guests.map(
        (g) => (flowOf(b, g.name)?.served ?? 0) - (flowOf(a, g.name)?.served ?? 0),
      ),
      received,
      levelDone: b.levels.map((l, i) => l.done - (a.levels[i]?.done ?? 0)),
      waitP99Ms: b.levels.map((l) => l.waitP99Ms),
      waitP50Ms: b.levels.map((l) => l.waitP50Ms),
      roundTrips,
      windowMs,
      notBacklogged,
    };
  } finally {
    phase = "stop";
    await Promise.allSettled(lanes);
  }
}

/** Jain's fairness index: (Σx)² / (n·Σx²); 1 when all are equal, 1/n when one gets everything. */
function jain(values: readonly number[]): number {
  const sum = values.reduce((a, b) => a + b, 0);
  const squares = values.reduce((a, b) => a + b * b, 0);
  return squares === 0 ? 0 : (sum * sum) / (values.length * squares);
}

/** The mediator's counts per guest and pool must be exactly what the guests got back. */
async function checkCounts(lib: Lib, guests: Guest[]): Promise<number> {
  const status = await lib.mediatorStatus((guests[0] as Guest).session);
  let total = 0;
  for (const pool of status.pools) {
    if (pool.queued !== 0 || pool.running !== 0) {
      throw new CorrectnessError(
        `pool ${pool.name} still has ${pool.queued} queued, ${pool.running} running`,
      );
    }
    for (const flow of pool.flows) {
      const guest = guests.find((g) => g.name === flow.flow);
      const got = guest?.answered.get(pool.name) ?? 0;
      if (flow.submitted !== got || flow.served !== got || flow.rejected !== 0) {
        throw new CorrectnessError(
          `pool ${pool.name}, guest ${flow.flow}: the mediator counts ${flow.submitted} submitted, ${flow.served} served, ${flow.rejected} rejected; the guest got ${got} replies`,
        );
      }
      total += got;
    }
  }
  for (const guest of guests) {
    for (const [pool, got] of guest.answered) {
      if (
        !status.pools.some((p) => p.name === pool && p.flows.some((f) => f.flow === guest.name))
      ) {
        throw new CorrectnessError(`guest ${guest.name} got ${got} replies from ${pool}, unseen`);
      }
    }
  }
  return total;
}

// ---- 2: throughput -------------------------------------------------------------------------

type Call = (seq: number) => Promise<unknown>;

/** `total` requests spread over `lanes`, each lane one at a time; resolves with `total`. */
async function pipeline(
  lanes: { call: Call; check(value: unknown, seq: number): void }[],
  total: number,
  seqs: { next: number },
): Promise<number> {
  let left = total;
  const run = async (lane: (typeof lanes)[number]) => {
    while (left > 0) {
      left--;
      const seq = seqs.next++;
      lane.check(await lane.call(seq), seq);
    }
  };
  await Promise.all(lanes.map(run));
  return total;
}

type RateCase = "mediator" | "inline" | "direct" | "relay" | "capped" | "mediator16";

async function measureThroughput(
  lib: Lib,
  guests: Guest[],
  direct: Session,
  relay: Session,
  capped: Session,
  cfg: Config,
): Promise<Record<RateCase, Rate>> {
  const g0 = guests[0] as Guest;
  const seqs = { next: 0 };
  const viaMediator = (g: Guest) => ({
    call: (seq: number) => {
      g.answered.set(FLAT_POOL, (g.answered.get(FLAT_POOL) ?? 0) + 1);
      return lib.submitWork(g.session, FLAT_POOL, { seq }, { priority: 1 });
    },
    check: (value: unknown, seq: number) => checkReply("mediator", value, seq, g.name, 1),
  });
  const viaInline = (g: Guest) => ({
    call: (seq: number) => {
      g.answered.set(INLINE_POOL, (g.answered.get(INLINE_POOL) ?? 0) + 1);
      return lib.submitWork(g.session, INLINE_POOL, { seq }, { priority: 1 });
    },
    check: (value: unknown, seq: number) => checkReply("inline", value, seq, g.name, 1),
  });
  const viaServer = (session: Session, name: string) => ({
    call: (seq: number) => session.call(RUN_METHOD, { pool: FLAT_POOL, input: { seq } }),
    check: (value: unknown, seq: number) => checkReply(name, value, seq, name, 1),
  });
  const lanes = (make: () => ReturnType<typeof viaServer>) =>
    Array.from({ length: IN_FLIGHT }, make);
  const one = lanes(() => viaMediator(g0));
  const spread = guests.flatMap((g) =>
    Array.from({ length: IN_FLIGHT / guests.length }, () => viaMediator(g)),
  );
  const inlineLanes = lanes(() => viaInline(g0));
  const directLanes = lanes(() => viaServer(direct, "direct"));
  const relayLanes = lanes(() => viaServer(relay, "relay"));
  const cappedLanes = lanes(() => viaServer(capped, "capped"));
  return measureRates(
    {
      mediator: () => pipeline(one, cfg.pipelineBatch, seqs),
      inline: () => pipeline(inlineLanes, cfg.pipelineBatch, seqs),
      direct: () => pipeline(directLanes, cfg.pipelineBatch, seqs),
      relay: () => pipeline(relayLanes, cfg.pipelineBatch, seqs),
      capped: () => pipeline(cappedLanes, cfg.pipelineBatch, seqs),
      mediator16: () => pipeline(spread, cfg.pipelineBatch, seqs),
    },
    { runs: cfg.pipelineRuns, warmupRuns: 1, minMs: cfg.pipelineMinMs },
  );
}

// ---- 3: memory -----------------------------------------------------------------------------

interface MemoryRun {
  queued: number;
  slots: number;
  flows: number;
  deadlineMs: number | null;
  heapBefore: number;
  heapQueued: number;
  bytesPerQueued: number;
  submitMs: number;
  drainMs: number;
  startedInOrder: boolean;
  completedInOrder: boolean;
  completed: number;
  wrongReplies: number;
}

function runMemory(libDir: string, queued: number, deadlineMs?: number): Promise<MemoryRun> {
  const args = [
    "--expose-gc",
    "--import",
    "tsx",
    MEMORY_SCRIPT,
    "--lib",
    libDir,
    "--queued",
    String(queued),
    "--slots",
    String(SLOTS),
    "--flows",
    String(GUESTS),
    ...(deadlineMs === undefined ? [] : ["--deadline-ms", String(deadlineMs)]),
  ];
  const cwd = new URL("..", import.meta.url);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`${MEMORY_SCRIPT} failed: ${err.message}\n${stderr}`));
        return;
      }
      const run = JSON.parse(String(stdout).trim().split("\n").pop() ?? "") as MemoryRun;
      if (
        !run.startedInOrder ||
        !run.completedInOrder ||
        run.wrongReplies !== 0 ||
        run.completed !== queued + SLOTS
      ) {
        reject(
          new CorrectnessError(
            `memory: after release ${run.completed} of ${queued + SLOTS} completed, ${run.wrongReplies} with the wrong reply; started in order ${run.startedInOrder}, completed in order ${run.completedInOrder}`,
          ),
        );
        return;
      }
      resolve(run);
    });
  });
}

// ---- the run and the report ----------------------------------------------------------------

interface Results {
  flat: FloodTurn[];
  tiers: FloodTurn[];
  rates: Record<RateCase, Rate>;
  memory: MemoryRun[];
  memoryDeadline: MemoryRun[];
  checked: number;
}

export async function run(opts: BenchOptions): Promise<BenchReport> {
  const cfg = opts.quick ? QUICK : FULL;
  const dir = await mkdtemp(join(os.tmpdir(), "guestlink-bench-mediator-"));
  let host: Helper | undefined;
  const sessions: Session[] = [];
  try {
    const build = await buildLibrary(dir);
    const lib = await loadLib(build.dir);
    host = await startHelper(HOST_SCRIPT, [
      "--lib",
      build.dir,
      "--dir",
      dir,
      "--guests",
      String(GUESTS),
      "--slots",
      String(SLOTS),
    ]);
    const open = async (address: string) => {
      const session = await lib.openSession(address);
      sessions.push(session);
      return session;
    };
    const guests: Guest[] = [];
    for (let i = 0; i < GUESTS; i++) {
      guests.push({
        name: guestName(i),
        session: await open(guestAddress(dir, i)),
        seq: 0,
        answered: new Map(),
      });
    }
    const direct = await open(directAddress(dir));
    const relay = await open(relayAddress(dir));
    const capped = await open(cappedAddress(dir));

    const flat: FloodTurn[] = [];
    const tiers: FloodTurn[] = [];
    for (let turn = 0; turn < cfg.turns; turn++) {
      flat.push(await flood(lib, guests, FLAT_POOL, 1, cfg));
      tiers.push(await flood(lib, guests, TIERS_POOL, TIER_WEIGHTS.length, cfg));
    }
    const rates = await measureThroughput(lib, guests, direct, relay, capped, cfg);
    const checked = await checkCounts(lib, guests);
    for (const s of sessions.splice(0)) await s.close();
    await host.stop();
    host = undefined;

    const memory: MemoryRun[] = [];
    const memoryDeadline: MemoryRun[] = [];
    for (let i = 0; i < cfg.memoryRuns; i++) {
      memory.push(await runMemory(build.dir, cfg.queued));
      memoryDeadline.push(await runMemory(build.dir, cfg.deadlineQueued, SESSION_DEADLINE_MS));
    }
    return report(
      opts,
      cfg,
      { flat, tiers, rates, memory, memoryDeadline, checked },
      build.warnings,
    );
  } finally {
    await Promise.allSettled(sessions.map((s) => s.close()));
    await host?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const f2 = (n: number): string => formatNumber(n, 2);
const f3 = (n: number): string => formatNumber(n, 3);
const ms = (n: number | null): string => (n === null ? "-" : formatNumber(n, 1));

function report(opts: BenchOptions, cfg: Config, r: Results, buildWarnings: string): BenchReport {
  // Fairness: Jain's index per turn over the mediator's own served counts.
  const jains = r.flat.map((t) => jain(t.served));
  const jainsClient = r.flat.map((t) => jain(t.received));
  const jainMedian = median(jains);
  const jainVerdict = verdict(jainMedian, AIM_JAIN);
  const notBacklogged = [...new Set([...r.flat, ...r.tiers].flatMap((t) => t.notBacklogged))];
  const flatRate = median(
    r.flat.map((t) => t.served.reduce((a, b) => a + b, 0) / (t.windowMs / 1000)),
  );

  // Levels: shares of the dispatches in each turn's window, against the weights'.
  const weightSum = TIER_WEIGHTS.reduce((a, b) => a + b, 0);
  const levelRows = TIER_WEIGHTS.map((weight, i) => {
    const shares = r.tiers.map(
      (t) => (t.levelDone[i] ?? 0) / t.levelDone.reduce((a, b) => a + b, 0),
    );
    const waitP99 = r.tiers.map((t) => t.waitP99Ms[i] ?? null).filter((v) => v !== null);
    const waitP50 = r.tiers.map((t) => t.waitP50Ms[i] ?? null).filter((v) => v !== null);
    const rtts = r.tiers.map((t) => t.roundTrips[i] ?? []).filter((v) => v.length > 0);
    return {
      priority: i + 1,
      weight,
      want: weight / weightSum,
      share: median(shares),
      waitP50Ms: waitP50.length > 0 ? median(waitP50) : null,
      waitP99Ms: waitP99.length > 0 ? median(waitP99) : null,
      rttP99Ms: rtts.length > 0 ? median(rtts.map((v) => percentile(v, 99))) : null,
      done: median(r.tiers.map((t) => t.levelDone[i] ?? 0)),
    };
  });

  // Throughput: each run's ratio, the cases having run back to back in that run.
  const { rates } = r;
  const runRatios = rates.mediator.samples.map((m, i) => m / (rates.direct.samples[i] as number));
  const ratio = median(runRatios);
  const rateVerdict = verdict(ratio, AIM_THROUGHPUT_RATIO);
  const inlineRatios = rates.inline.samples.map((m, i) => m / (rates.direct.samples[i] as number));
  const inlineRatio = median(inlineRatios);
  const relayRatios = rates.mediator.samples.map((m, i) => m / (rates.relay.samples[i] as number));
  const cappedRatios = rates.mediator.samples.map(
    (m, i) => m / (rates.capped.samples[i] as number),
  );

  const mem = median(r.memory.map((m) => m.bytesPerQueued));
  const memDeadline = median(r.memoryDeadline.map((m) => m.bytesPerQueued));
  const heapQueuedMiB = median(r.memory.map((m) => m.heapQueued - m.heapBefore)) / 2 ** 20;

  const rows: string[][] = [
    [
      `fairness: ${GUESTS} guests x ${IN_FLIGHT} in flight, one level, Jain's index`,
      f3(jainMedian),
      `>= ${AIM_JAIN}`,
      jainVerdict,
    ],
    [`  same, from the guests' own reply counts`, f3(median(jainsClient)), "", "(info)"],
    [`  dispatches/s while flooding`, formatNumber(flatRate), "", "(info)"],
    [
      `throughput: ${IN_FLIGHT} in flight from one guest, req/s (mediator / direct)`,
      `${formatNumber(rates.mediator.median)} / ${formatNumber(rates.direct.median)} = ${f2(ratio)}x`,
      `>= ${AIM_THROUGHPUT_RATIO}x`,
      rateVerdict,
    ],
    [
      `  the same with the work in process (a worker function; the mediator's own cost) / direct`,
      `${formatNumber(rates.inline.median)} / ${formatNumber(rates.direct.median)} = ${f2(inlineRatio)}x`,
      `>= ${AIM_THROUGHPUT_RATIO}x`,
      verdict(inlineRatio, AIM_THROUGHPUT_RATIO),
    ],
    [
      `  mediator / relay (session handler -> helper pool, same worker)`,
      `${formatNumber(rates.mediator.median)} / ${formatNumber(rates.relay.median)} = ${f2(median(relayRatios))}x`,
      "",
      "(info)",
    ],
    [
      `  mediator / capped (the same, at most ${SLOTS} at the helpers, as the slots)`,
      `${formatNumber(rates.mediator.median)} / ${formatNumber(rates.capped.median)} = ${f2(median(cappedRatios))}x`,
      "",
      "(info)",
    ],
    [
      `  mediator, ${IN_FLIGHT} spread over ${GUESTS} guests, req/s`,
      formatNumber(rates.mediator16.median),
      "",
      "(info)",
    ],
    [
      `memory: ${formatNumber(cfg.queued)} queued, heap bytes per queued request`,
      formatNumber(mem),
      "",
      "(info)",
    ],
    [
      `  same, each with a deadline (a timer), ${formatNumber(cfg.deadlineQueued)} queued`,
      formatNumber(memDeadline),
      "",
      "(info)",
    ],
  ];

  const levelTable = table(
    ["level", "weight", "want", "share", "dispatched", "wait p50 ms", "wait p99 ms", "rtt p99 ms"],
    levelRows.map((l) => [
      String(l.priority),
      String(l.weight),
      f3(l.want),
      f3(l.share),
      formatNumber(l.done),
      ms(l.waitP50Ms),
      ms(l.waitP99Ms),
      ms(l.rttP99Ms),
    ]),
  );

  const list = (values: readonly number[], fmt: (n: number) => string) => values.map(fmt).join(" ");
  const text = [
    `mediator: guests on Unix sockets -> host process (Mediator, tsc build of src/, node ${process.version}) -> ${SLOTS} JSON-RPC helper workers per pool${opts.quick ? "; QUICK: rough figures" : ""}`,
    "",
    table(["figure", "value", "aim", "verdict"], rows),
    "",
    `fairness: ${cfg.turns} turn(s); each floods for ${cfg.floodWarmupMs} ms, then a window of ${cfg.floodWindowMs} ms between two mediator.status snapshots;`,
    `  Jain's index of each guest's served delta per turn: ${list(jains, f3)} (the guests' counts: ${list(jainsClient, f3)}).`,
    `  served per guest in the last turn: ${(r.flat.at(-1)?.served ?? []).join(" ")}.`,
    `  guests not backlogged at a snapshot: ${notBacklogged.length === 0 ? "none" : notBacklogged.join(" ")}.`,
    `levels: the same ${GUESTS} guests, lane k of each at priority k % 3 + 1 (21-22 lanes per level per guest), pool weights ${TIER_WEIGHTS.join(":")};`,
    `  share = the level's dispatches in the window / all; wait = the mediator's (last 1024 waits, queued -> started); rtt = the guests' submit -> reply; medians over the turns.`,
    levelTable,
    `throughput: median of ${cfg.pipelineRuns} runs of >= ${cfg.pipelineMinMs} ms per case, batches of ${formatNumber(cfg.pipelineBatch)}, the cases taking turns;`,
    `  "direct" = the same guest process calling "${RUN_METHOD}" on a session server in the host process whose handler does the worker's work itself;`,
    `  "relay" = a session handler in the host process calling helpers.request("run") on ${SLOTS} helpers running the same worker (pipelined, no scheduler);`,
    `  "capped" = relay with at most ${SLOTS} requests at the helpers at once (a FIFO semaphore): the mediator's hops and concurrency, without its scheduler.`,
    `  req/s mediator ${list(rates.mediator.samples, (n) => formatNumber(n))}; direct ${list(rates.direct.samples, (n) => formatNumber(n))};`,
    `  relay ${list(rates.relay.samples, (n) => formatNumber(n))}; capped ${list(rates.capped.samples, (n) => formatNumber(n))}; mediator over ${GUESTS} guests ${list(rates.mediator16.samples, (n) => formatNumber(n))}.`,
    `  ratio: the median of each run's mediator/direct (${list(runRatios, f2)}); mediator/capped per run ${list(cappedRatios, f2)}.`,
    `memory: Scheduler on the real clock, ${SLOTS} slots held, ${GUESTS} flows; heap used after a full GC, before and after the submits`,
    `  (inputs made beforehand; what is counted: the job, its submitter, the promise and its resolvers); median of ${cfg.memoryRuns} run(s):`,
    `  ${list(
      r.memory.map((m) => m.bytesPerQueued),
      formatNumber,
    )} B/queued (${f2(heapQueuedMiB)} MiB for ${formatNumber(cfg.queued)}); with deadlines ${list(
      r.memoryDeadline.map((m) => m.bytesPerQueued),
      formatNumber,
    )} B/queued.`,
    `  queueing took ${list(
      r.memory.map((m) => m.submitMs),
      (n) => formatNumber(n),
    )} ms; after release all ${formatNumber(cfg.queued + SLOTS)} started and completed in the order submitted, in ${list(
      r.memory.map((m) => m.drainMs),
      (n) => formatNumber(n),
    )} ms.`,
    `checked: every reply against its request (input, guest, level); the mediator's submitted/served counts per guest and pool equal the ${formatNumber(r.checked)} replies the guests got.`,
    ...(buildWarnings
      ? [
          `note: tsc reported errors building src/ (figures are from what it emitted):\n${buildWarnings}`,
        ]
      : []),
    `load average (1 min) at the end: ${formatNumber(os.loadavg()[0] ?? 0, 2)} on ${os.cpus().length} CPUs.`,
  ].join("\n");

  const figures: Record<string, unknown> = {
    build: buildWarnings ? "tsc reported errors" : "clean",
    guests: GUESTS,
    inFlight: IN_FLIGHT,
    slots: SLOTS,
    fairness: {
      jain: round(jainMedian, 4),
      jainRuns: jains.map((j) => round(j, 4)),
      jainClientRuns: jainsClient.map((j) => round(j, 4)),
      dispatchesPerSecond: round(flatRate),
      notBacklogged,
      aim: AIM_JAIN,
      pass: jainVerdict === "PASS",
    },
    levels: levelRows.map((l) => ({
      priority: l.priority,
      weight: l.weight,
      want: round(l.want, 3),
      share: round(l.share, 3),
      waitP50Ms: l.waitP50Ms === null ? null : round(l.waitP50Ms, 1),
      waitP99Ms: l.waitP99Ms === null ? null : round(l.waitP99Ms, 1),
      rttP99Ms: l.rttP99Ms === null ? null : round(l.rttP99Ms, 1),
    })),
    throughput: {
      perSecond: round(rates.mediator.median),
      directPerSecond: round(rates.direct.median),
      relayPerSecond: round(rates.relay.median),
      spreadPerSecond: round(rates.mediator16.median),
      ratio: round(ratio, 3),
      runRatios: runRatios.map((v) => round(v, 3)),
      relayRatio: round(median(relayRatios), 3),
      cappedPerSecond: round(rates.capped.median),
      cappedRatio: round(median(cappedRatios), 3),
      aimRatio: AIM_THROUGHPUT_RATIO,
      pass: rateVerdict === "PASS",
    },
    memory: {
      queued: cfg.queued,
      bytesPerQueued: round(mem),
      runs: r.memory.map((m) => round(m.bytesPerQueued)),
      withDeadlineBytesPerQueued: round(memDeadline),
      drainMs: r.memory.map((m) => round(m.drainMs)),
      inOrder: true,
    },
    checkedReplies: r.checked,
  };
  return { text, figures };
}

/**
 * A flood from a client that never reads, against a real agent process:
 *
 *   npx tsx bench/flood.ts [--calls N] [--param-bytes B] [--max-seconds S] [--hold-seconds S]
 *
 * Starts `guestlink agent --listen unix:…` in a temporary folder (the build, as bin/guestlink
 * runs it; `npm run build` first), then the hostile client of test/fixtures/flood-client.ts in a process of its own: it
 * does the handshake, stops reading, and sends N `ping` calls (default 60,000) with a param of
 * B bytes (default 16 KiB) each, as fast as its socket takes them. Meanwhile a well-behaved
 * host, on a session of its own, pings the agent every 200 ms. Every 250 ms the agent's resident
 * memory is read from /proc.
 *
 * Prints a row per second (the agent's memory, the calls the flood has written, the other
 * host's round trips), then a summary, then the figures as one line of JSON (the last line).
 * The flood ends when every call is written, when the socket has taken nothing for 2 s, or at
 * --max-seconds (default 60) after it began; the run then watches for --hold-seconds more
 * (default 5) with the hostile connection still open and unread, and stops everything it
 * started.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { openSession } from "../src/platform/session.ts";
import type { Session } from "../src/session/session.ts";
import { type AgentProcess, residentBytes, startAgent } from "../test/helpers/agent-process.ts";
import { formatNumber, median, round, table } from "./lib.ts";

const FLOOD_CLIENT = fileURLToPath(new URL("../test/fixtures/flood-client.ts", import.meta.url));
const USAGE =
  "usage: npx tsx bench/flood.ts [--calls N] [--param-bytes B] [--max-seconds S] [--hold-seconds S]";

const SAMPLE_EVERY_MS = 250;
const PING_EVERY_MS = 200;
/** A ping of the other host that takes longer than this counts as failed. */
const PING_DEADLINE_MS = 10_000;
/** The flood client gives up when its socket has taken nothing for this long. */
const STALL_MS = 2_000;

interface Options {
  calls: number;
  paramBytes: number;
  maxSeconds: number;
  holdSeconds: number;
}

function parseArgs(argv: readonly string[]): Options {
  const options: Options = {
    calls: 60_000,
    paramBytes: 16 * 1024,
    maxSeconds: 60,
    holdSeconds: 5,
  };
  const numeric = {
    "--calls": "calls",
    "--param-bytes": "paramBytes",
    "--max-seconds": "maxSeconds",
    "--hold-seconds": "holdSeconds",
  } as const;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--help" || arg === "-h") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (arg in numeric) {
      const value = Number(argv[++i]);
      if (!Number.isFinite(value) || value < 0) usageError(`${arg} needs a number`);
      options[numeric[arg as keyof typeof numeric]] = value;
    } else usageError(`unknown option ${arg}`);
  }
  return options;
}

function usageError(message: string): never {
  process.stderr.write(`flood: ${message}\n${USAGE}\n`);
  process.exit(2);
}

interface RssSample {
  t: number;
  bytes: number;
}

interface Ping {
  t: number;
  ms: number;
  ok: boolean;
}

interface FloodDone {
  outcome: string;
  written: number;
  queuedBytes: number;
  error?: string;
}

const MiB = 1024 * 1024;
const mib = (bytes: number) => formatNumber(bytes / MiB);

/** The hostile client in its own process, its JSON lines turned into progress and an end. */
function startFlood(path: string, options: Options, progress: (written: number) => void) {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      FLOOD_CLIENT,
      path,
      "--calls",
      String(options.calls),
      "--param-bytes",
      String(options.paramBytes),
      "--stall-ms",
      String(STALL_MS),
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const done = new Promise<FloodDone>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const event = JSON.parse(line) as { event: string; written?: number } & FloodDone;
      if (event.event === "progress" || event.event === "done") progress(event.written ?? 0);
      if (event.event === "done") resolve(event);
    });
    child.once("exit", (code, signal) =>
      reject(new Error(`the flood client exited early (${signal ?? code})`)),
    );
  });
  // Nothing waits on it when the run ends at --max-seconds first.
  done.catch(() => {});
  return { child, done };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = once(child, "exit");
  child.kill("SIGKILL");
  await gone;
}

/** The other host: a ping every PING_EVERY_MS, one at a time, until `stop()`. */
function pingEvery(session: Session, origin: number) {
  const pings: Ping[] = [];
  let stopped = false;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    for (let seq = 0; !stopped; seq++) {
      const start = performance.now();
      let ok = true;
      try {
        await session.call("ping", { seq }, { deadline: Date.now() + PING_DEADLINE_MS });
      } catch {
        ok = false;
      }
      const end = performance.now();
      if (stopped) break;
      pings.push({ t: start - origin, ms: end - start, ok });
      const pause = Math.max(0, start + PING_EVERY_MS - end);
      // A steady rate, not a backlog: the next ping goes when this one is back or its turn comes.
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, pause);
      });
    }
  })();
  return {
    pings,
    async stop() {
      stopped = true;
      wake?.();
      await loop;
    },
  };
}

function report(
  options: Options,
  baseline: number,
  samples: readonly RssSample[],
  pings: readonly Ping[],
  written: readonly { t: number; written: number }[],
  flood: FloodDone | undefined,
  floodSeconds: number,
  peakHwm: number,
  events: readonly string[],
): string {
  const seconds = Math.ceil(Math.max(...samples.map((s) => s.t), 0) / 1000);
  const rows: string[][] = [];
  for (let s = 0; s < seconds; s++) {
    const inSecond = <T extends { t: number }>(xs: readonly T[]) =>
      xs.filter((x) => x.t >= s * 1000 && x.t < (s + 1) * 1000);
    const rss = inSecond(samples).map((x) => x.bytes);
    const p = inSecond(pings);
    const ms = p.filter((x) => x.ok).map((x) => x.ms);
    const calls = written.filter((w) => w.t < (s + 1) * 1000).at(-1)?.written ?? 0;
    rows.push([
      `${s}-${s + 1}`,
      rss.length ? mib(Math.max(...rss)) : "",
      formatNumber(calls),
      String(p.length),
      ms.length ? formatNumber(median(ms), 1) : "",
      ms.length ? formatNumber(Math.max(...ms), 1) : "",
      String(p.length - ms.length),
    ]);
  }
  const peak = Math.max(...samples.map((s) => s.bytes));
  const ok = pings.filter((p) => p.ok).map((p) => p.ms);
  const failed = pings.length - ok.length;
  const lines = [
    `flood: ${formatNumber(options.calls)} ping calls of ${formatNumber(options.paramBytes)} B params from a client that never reads`,
    "",
    table(
      [
        "t (s)",
        "agent RSS (MiB)",
        "flood calls written",
        "other pings",
        "RTT median (ms)",
        "RTT max (ms)",
        "failed",
      ],
      rows,
    ),
    "",
    `flood: ${flood ? `${flood.outcome} after ${formatNumber(flood.written)} calls in ${formatNumber(floodSeconds, 1)} s, ${formatNumber(flood.queuedBytes)} B of them still in its own socket buffer${flood.error ? ` (${flood.error})` : ""}` : `still going at the ${options.maxSeconds} s limit`}`,
    `summary: agent RSS ${mib(baseline)} MiB before, peak ${mib(peak)} MiB (VmHWM ${mib(peakHwm)} MiB), growth ${mib(peak - baseline)} MiB; other host: ${pings.length} pings, RTT median ${ok.length ? formatNumber(median(ok), 1) : "-"} ms, max ${ok.length ? formatNumber(Math.max(...ok), 1) : "-"} ms, ${failed === 0 ? "all succeeded" : `${failed} FAILED`}${events.length ? `; its session events: ${events.join(", ")}` : ""}`,
  ];
  return lines.join("\n");
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const dir = await mkdtemp(join(tmpdir(), "gl-flood-"));
  const path = join(dir, "agent.sock");
  let agent: AgentProcess | undefined;
  let floodChild: ChildProcess | undefined;
  let session: Session | undefined;
  const cleanup = async () => {
    session?.abort();
    if (floodChild) await stopChild(floodChild);
    await agent?.kill();
    await rm(dir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => {
    void cleanup().finally(() => process.exit(130));
  });
  try {
    agent = await startAgent(path);
    const pid = agent.pid;
    session = await openSession(agent.address);
    const events: string[] = [];
    session.onEvent((e) => events.push(e.type));
    // The other host's session is open and warm before the baseline, so the growth is the flood's.
    for (let i = 0; i < 20; i++) await session.call("ping", { warmup: i });
    const baseline = residentBytes(pid);

    const origin = performance.now();
    const samples: RssSample[] = [{ t: 0, bytes: baseline }];
    const sampler = setInterval(() => {
      try {
        samples.push({ t: performance.now() - origin, bytes: residentBytes(pid) });
      } catch {
        // The agent is gone (it would show in the summary as a stop in the samples).
      }
    }, SAMPLE_EVERY_MS);
    const pinger = pingEvery(session, origin);
    const written: { t: number; written: number }[] = [];
    const flood = startFlood(path, options, (n) =>
      written.push({ t: performance.now() - origin, written: n }),
    );
    floodChild = flood.child;

    const limit = origin + options.maxSeconds * 1000;
    let timer: NodeJS.Timeout | undefined;
    const atLimit = (at: number) =>
      new Promise<undefined>((resolve) => {
        timer = setTimeout(resolve, Math.max(0, at - performance.now()), undefined);
      });
    const done = await Promise.race([flood.done, atLimit(limit)]);
    clearTimeout(timer);
    const floodSeconds = (performance.now() - origin) / 1000;
    // Watch what the agent does with what it holds while the hostile connection stays open.
    await atLimit(Math.min(limit, performance.now() + options.holdSeconds * 1000));
    clearTimeout(timer);

    clearInterval(sampler);
    await pinger.stop();
    const peakHwm = residentBytes(pid, "VmHWM");
    process.stdout.write(
      `${report(options, baseline, samples, pinger.pings, written, done, floodSeconds, peakHwm, events)}\n`,
    );
    const ok = pinger.pings.filter((p) => p.ok).map((p) => p.ms);
    const peak = Math.max(...samples.map((s) => s.bytes));
    process.stdout.write(
      `${JSON.stringify({
        calls: options.calls,
        paramBytes: options.paramBytes,
        flood: done ?? { outcome: "limit" },
        floodSeconds: round(floodSeconds, 1),
        baselineMiB: round(baseline / MiB, 1),
        peakMiB: round(peak / MiB, 1),
        growthMiB: round((peak - baseline) / MiB, 1),
        rssMiB: samples.map((s) => [round(s.t / 1000, 2), round(s.bytes / MiB, 1)]),
        otherPings: pinger.pings.length,
        otherFailed: pinger.pings.length - ok.length,
        otherRttMedianMs: ok.length ? round(median(ok), 2) : null,
        otherRttMaxMs: ok.length ? round(Math.max(...ok), 2) : null,
      })}\n`,
    );
  } finally {
    await cleanup();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(
    `flood: failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});

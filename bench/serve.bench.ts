/**
 * `guestlink serve` (src/daemon/) holding many agents, and exec through it (`@ID`) against the
 * same agent reached directly, in the same run:
 *
 * 1. One daemon holding N agents (200; `--quick` 20), in its own process (bench/serve-daemon.mjs,
 *    plain node, the library compiled as shipped): its RSS and heap (after a full GC) per agent,
 *    as the difference from an empty daemon's (another process, started and measured alongside)
 *    divided by N; its CPU time per agent over an idle window with all N up (utime+stime, read
 *    as process.cpuUsage() in the daemon for µs rather than /proc's 10 ms ticks, the empty
 *    daemon's subtracted: keepalive and the liveness checks); and the time
 *    from `Daemon.start` until all N are `up`. The agents are a few processes
 *    (bench/serve-agents.mjs), each one `Agent` listening on many Unix sockets: every socket is a
 *    session of its own to the daemon, as a separate agent's would be, without the memory of 200
 *    Node processes on the machine.
 * 2. `GET /metrics` on the daemon's HTTP API with N agents: median of many scrapes over one
 *    keep-alive connection ("n/a" while the daemon has no such route), and `GET /v1/agents`
 *    beside it for information.
 * 3. exec through the daemon against a direct session to the same agent, the cases taking turns:
 *    (a) `remoteExec` of `true`, a session from `openDaemonSession` against one from
 *    `openSession("unix:…")`, median of many (and a "ping" call, the protocol's floor); (b) MB/s
 *    of `head -c SIZE /dev/zero` streamed through each into a counting sink, with the CPU time of
 *    each process, and the daemon's peak RSS before and after (forwarding must not buffer).
 *
 * To profile the daemon: GUESTLINK_BENCH_DAEMON_NODE_OPTIONS="--cpu-prof --cpu-prof-dir=DIR".
 *
 * Every figure that is compared is compared within the run. Correctness checks throw: all N up
 * as the API reports them, exit statuses, byte counts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { Agent as HttpAgent, request } from "node:http";
import os from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Session } from "../src/session/session.ts";
import {
  type BenchOptions,
  type BenchReport,
  buildLibrary,
  formatNumber,
  median,
  now,
  round,
  type Summary,
  sampleDurations,
  summarize,
  table,
  verdict,
} from "./lib.ts";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const AGENTS_SCRIPT = join(REPO_ROOT, "bench", "serve-agents.mjs");
const DAEMON_SCRIPT = join(REPO_ROOT, "bench", "serve-daemon.mjs");

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const MB = 1e6;
const CLOCK_TICKS = 100; // USER_HZ on Linux

/** Aims (informational: a miss does not fail the run). */
const AIM_LATENCY_RATIO = 1.5;
const AIM_THROUGHPUT_RATIO = 0.8;

/** Calls of one case in a row before the next case takes its turn. */
const LATENCY_BLOCK = 25;
const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 5_000;

interface Config {
  agents: number;
  agentProcesses: number;
  /** After all are up, before measuring: the first keepalives and info calls are done. */
  settleMs: number;
  idleMs: number;
  scrapes: number;
  callSamples: number;
  callWarmup: number;
  streamBytes: number;
  streamRuns: number;
  warmupStreamBytes: number;
}

const FULL: Config = {
  agents: 200,
  agentProcesses: 4,
  settleMs: 3_000,
  idleMs: 10_000,
  scrapes: 50,
  callSamples: 300,
  callWarmup: 30,
  streamBytes: 1 * GiB,
  streamRuns: 3,
  warmupStreamBytes: 64 * MiB,
};

const QUICK: Config = {
  agents: 20,
  agentProcesses: 2,
  settleMs: 1_000,
  idleMs: 3_000,
  scrapes: 10,
  callSamples: 50,
  callWarmup: 10,
  streamBytes: 64 * MiB,
  streamRuns: 2,
  warmupStreamBytes: 16 * MiB,
};

class CorrectnessError extends Error {
  override name = "CorrectnessError";
}

// ---- the library, as shipped (compiled by tsc) ---------------------------------------------

interface Lib {
  openSession: typeof import("../src/platform/session.ts").openSession;
  remoteExec: typeof import("../src/controller/exec.ts").remoteExec;
  openDaemonSession: typeof import("../src/daemon/client.ts").openDaemonSession;
}

async function loadLib(dir: string): Promise<Lib> {
  const load = (path: string) => import(pathToFileURL(join(dir, path)).href);
  const session = (await load(
    "platform/session.js",
  )) as typeof import("../src/platform/session.ts");
  const exec = (await load("controller/exec.js")) as typeof import("../src/controller/exec.ts");
  const client = (await load("daemon/client.js")) as typeof import("../src/daemon/client.ts");
  return {
    openSession: session.openSession,
    remoteExec: exec.remoteExec,
    openDaemonSession: client.openDaemonSession,
  };
}

// ---- processes -----------------------------------------------------------------------------

/** CPU seconds (user + system) of a process so far, from /proc/PID/stat. */
function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may hold spaces.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}

/** A memory figure of a running process from /proc/PID/status, in bytes. */
function procMemory(pid: number, field: "VmHWM" | "VmRSS"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m").exec(status);
  if (!m) throw new Error(`/proc/${pid}/status has no ${field}`);
  return Number(m[1]) * KiB;
}

/**
 * A plain-node helper process that speaks in lines on stdout and stops when its stdin closes
 * (bench/serve-agents.mjs, bench/serve-daemon.mjs); its stderr goes to ours.
 */
class LineProcess {
  readonly #child: ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #exited: Promise<void>;
  readonly #name: string;

  constructor(name: string, args: readonly string[]) {
    this.#name = name;
    this.#child = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.#child.on("error", () => {});
    this.#child.stderr?.setEncoding("utf8").on("data", (text: string) => {
      process.stderr.write(`${name}: ${text}`);
    });
    this.#exited = new Promise((resolve) => this.#child.once("exit", () => resolve()));
    this.#lines = createInterface({ input: this.#child.stdout as NodeJS.ReadableStream })[
      Symbol.asyncIterator
    ]();
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  /** The next line it prints, within `timeoutMs`. */
  async next(timeoutMs = READY_TIMEOUT_MS): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.#name}: no answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const line = await Promise.race([this.#lines.next(), timeout]);
      if (line.done) throw new Error(`${this.#name} exited (${this.#child.exitCode})`);
      return line.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The next line, which must start with `word`; what follows it. */
  async expect(word: string, timeoutMs?: number): Promise<string> {
    const line = await this.next(timeoutMs);
    if (line !== word && !line.startsWith(`${word} `)) {
      throw new Error(`${this.#name}: expected "${word}", got ${JSON.stringify(line)}`);
    }
    return line.slice(word.length + 1);
  }

  send(line: string): void {
    this.#child.stdin?.write(`${line}\n`);
  }

  async stop(): Promise<void> {
    this.#child.stdin?.end();
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), STOP_GRACE_MS);
    await this.#exited;
    clearTimeout(timer);
  }
}

/** Cleanups, run in reverse order of creation. */
class Resources {
  readonly #cleanups: (() => Promise<unknown>)[] = [];

  add(cleanup: () => Promise<unknown>): void {
    this.#cleanups.push(cleanup);
  }

  process(name: string, args: readonly string[]): LineProcess {
    const p = new LineProcess(name, args);
    this.add(() => p.stop());
    return p;
  }

  async release(): Promise<void> {
    for (const cleanup of this.#cleanups.splice(0).reverse()) {
      await cleanup().catch(() => {});
    }
  }
}

interface MemoryUsage {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

/**
 * Extra node options for the daemon holding the agents, from $GUESTLINK_BENCH_DAEMON_NODE_OPTIONS
 * (space-separated), to profile it: `--cpu-prof --cpu-prof-dir=DIR` writes its profile at exit.
 */
function daemonNodeOptions(): string[] {
  return (process.env.GUESTLINK_BENCH_DAEMON_NODE_OPTIONS ?? "").split(" ").filter(Boolean);
}

/** The daemon's CPU seconds so far (process.cpuUsage(): /proc's utime+stime in microseconds). */
async function daemonCpu(daemon: LineProcess): Promise<number> {
  daemon.send("cpu");
  const { user, system } = JSON.parse(await daemon.next()) as { user: number; system: number };
  return (user + system) / 1e6;
}

async function daemonMemory(daemon: LineProcess): Promise<MemoryUsage> {
  daemon.send("mem");
  return JSON.parse(await daemon.next()) as MemoryUsage;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- HTTP ----------------------------------------------------------------------------------

interface Got {
  status: number;
  bytes: number;
  body: string;
}

function httpGet(agent: HttpAgent, address: string, path: string, keepBody: boolean): Promise<Got> {
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(address.slice(at + 1));
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, agent }, (res) => {
      let bytes = 0;
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
        if (keepBody) chunks.push(chunk);
      });
      res.once("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          bytes,
          body: Buffer.concat(chunks).toString("utf8"),
        }),
      );
      res.once("error", reject);
    });
    req.once("error", reject);
    req.end();
  });
}

interface Scrape {
  /** Undefined when the route answers 404. */
  ms?: Summary;
  bytes: number;
}

/** Median (and the rest) of `count` GETs of `path`, one at a time on one keep-alive connection. */
async function scrape(address: string, path: string, count: number): Promise<Scrape> {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  try {
    const first = await httpGet(agent, address, path, false);
    if (first.status === 404) return { bytes: 0 };
    if (first.status !== 200 || first.bytes === 0) {
      throw new CorrectnessError(`GET ${path}: HTTP ${first.status}, ${first.bytes} bytes`);
    }
    let bytes = first.bytes;
    const samples = await sampleDurations(count, async () => {
      const got = await httpGet(agent, address, path, false);
      if (got.status !== 200) throw new CorrectnessError(`GET ${path}: HTTP ${got.status}`);
      bytes = got.bytes;
    });
    return { ms: summarize(samples), bytes };
  } finally {
    agent.destroy();
  }
}

// ---- exec ----------------------------------------------------------------------------------

/** A writable that counts what it takes and keeps nothing. */
class CountingSink extends Writable {
  bytes = 0;
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.bytes += chunk.length;
    callback();
  }
  override _writev(chunks: { chunk: Buffer }[], callback: () => void): void {
    for (const { chunk } of chunks) this.bytes += chunk.length;
    callback();
  }
}

function execTrue(lib: Lib, session: Session, label: string): () => Promise<void> {
  const io = { stdout: new CountingSink(), stderr: new CountingSink() };
  return async () => {
    const result = await lib.remoteExec(session, { argv: ["true"] }, io).catch((err: unknown) => {
      throw new CorrectnessError(`${label}: exec true failed: ${describe(err)}`, { cause: err });
    });
    if (result.status !== 0 || result.reason !== "exited") {
      throw new CorrectnessError(`${label}: exec true: ${JSON.stringify(result)}`);
    }
  };
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return `${typeof code === "string" ? `${code}: ` : ""}${err.message}`;
}

function ping(session: Session, label: string): () => Promise<void> {
  let seq = 0;
  return async () => {
    const mine = seq++;
    const back = (await session.call("ping", { seq: mine })) as { seq?: unknown } | null;
    if (back?.seq !== mine) {
      throw new CorrectnessError(`${label}: ping ${mine} got ${JSON.stringify(back)}`);
    }
  };
}

/** Durations (ms) of each case, the cases taking turns in blocks of `block`. */
async function interleaved<K extends string>(
  cases: Record<K, () => Promise<void>>,
  samples: number,
  warmup: number,
  block: number,
): Promise<Record<K, number[]>> {
  const names = Object.keys(cases) as K[];
  for (const name of names) await sampleDurations(warmup, cases[name], 0);
  const out = new Map<K, number[]>(names.map((name) => [name, []]));
  for (let done = 0; done < samples; done += block) {
    for (const name of names) {
      out
        .get(name)
        ?.push(...(await sampleDurations(Math.min(block, samples - done), cases[name], 0)));
    }
  }
  return Object.fromEntries(names.map((name) => [name, out.get(name) ?? []])) as Record<
    K,
    number[]
  >;
}

interface Transfer {
  mbps: number;
  /** CPU seconds of each process over the transfer. */
  cpu: Record<string, number>;
}

async function streamZeros(
  lib: Lib,
  session: Session,
  label: string,
  bytes: number,
  pids: Record<string, number>,
): Promise<Transfer> {
  const before = Object.fromEntries(
    Object.entries(pids).map(([k, pid]) => [k, procCpuSeconds(pid)]),
  );
  const self = process.cpuUsage();
  const stdout = new CountingSink();
  const stderr = new CountingSink();
  const start = now();
  const result = await lib
    // The sinks keep nothing once a write is done: the session may read into its buffers again
    // (recycle), as the CLI's stdout does; else the reader's garbage would be the figure.
    .remoteExec(
      session,
      { argv: ["head", "-c", String(bytes), "/dev/zero"] },
      { stdout, stderr, recycle: true },
    )
    .catch((err: unknown) => {
      throw new CorrectnessError(
        `${label}: head -c ${bytes} failed after ${stdout.bytes} bytes: ${describe(err)}`,
        { cause: err },
      );
    });
  const ms = now() - start;
  const selfUsed = process.cpuUsage(self);
  if (result.status !== 0 || result.reason !== "exited" || stdout.bytes !== bytes) {
    throw new CorrectnessError(
      `${label}: head -c ${bytes}: ${JSON.stringify(result)}, ${stdout.bytes} bytes on stdout, ${stderr.bytes} on stderr`,
    );
  }
  const cpu: Record<string, number> = {};
  for (const [k, pid] of Object.entries(pids)) cpu[k] = procCpuSeconds(pid) - (before[k] ?? 0);
  cpu["bench (reader)"] = (selfUsed.user + selfUsed.system) / 1e6;
  return { mbps: bytes / MB / (ms / 1000), cpu };
}

// ---- the run -------------------------------------------------------------------------------

interface Measured {
  agents: number;
  agentProcesses: number;
  upMs: number;
  upFromSpawnMs: number;
  mem: { full: MemoryUsage; empty: MemoryUsage; fullVmRss: number; emptyVmRss: number };
  idle: { seconds: number; full: number; empty: number; agentProcesses: number };
  metrics: Scrape;
  agentsList: Scrape;
  call: { direct: Summary; daemon: Summary; pingDirect: Summary; pingDaemon: Summary };
  streams: {
    direct: Transfer[];
    daemon: Transfer[];
    hwmBefore: number;
    hwmAfter: number;
  };
  libWarnings: string;
  loadAtEnd: number;
}

export async function run(opts: BenchOptions): Promise<BenchReport> {
  const cfg = opts.quick ? QUICK : FULL;
  const dir = await mkdtemp(join(os.tmpdir(), "guestlink-serve-bench-"));
  const res = new Resources();
  res.add(() => rm(dir, { recursive: true, force: true }));
  try {
    const built = await buildLibrary(dir);
    const lib = await loadLib(built.dir);

    // ---- the agents: a few processes, many sockets each ----
    const agentDir = join(dir, "agents");
    await mkdir(agentDir);
    const agentProcs: LineProcess[] = [];
    const per = Math.ceil(cfg.agents / cfg.agentProcesses);
    for (let first = 0; first < cfg.agents; first += per) {
      const count = Math.min(per, cfg.agents - first);
      agentProcs.push(
        res.process(`agents-${first}`, [
          AGENTS_SCRIPT,
          built.dir,
          agentDir,
          String(first),
          String(count),
        ]),
      );
    }
    for (const p of agentProcs) await p.expect("ready");
    const agentPath = (i: number) => join(agentDir, `agent-${i}.sock`);
    const ids = Array.from({ length: cfg.agents }, (_, i) => `vm-${i}`);

    // ---- the daemons: one holding them all, one empty (the baseline of memory and CPU) ----
    const configFor = async (name: string, agents: number) => {
      const path = join(dir, `${name}.json`);
      const config = {
        agents: ids.slice(0, agents).map((id, i) => ({ id, address: `unix:${agentPath(i)}` })),
        socket: join(dir, `${name}.sock`),
        http: "127.0.0.1:0",
      };
      await writeFile(path, JSON.stringify(config));
      return config.socket;
    };
    await configFor("empty", 0);
    const fullSocket = await configFor("full", cfg.agents);
    const empty = res.process("daemon (empty)", [
      "--expose-gc",
      DAEMON_SCRIPT,
      built.dir,
      join(dir, "empty.json"),
    ]);
    await empty.expect("ready");
    await empty.expect("up");
    const spawnedAt = now();
    const daemon = res.process("daemon", [
      "--expose-gc",
      ...daemonNodeOptions(),
      DAEMON_SCRIPT,
      built.dir,
      join(dir, "full.json"),
    ]);
    const httpAddress = await daemon.expect("ready");
    const upMs = Number(await daemon.expect("up"));
    const upFromSpawnMs = now() - spawnedAt;
    await checkAllUp(httpAddress, ids);

    // ---- 1: idle CPU and memory ----
    await sleep(cfg.settleMs);
    const cpuAt = async () => ({
      full: await daemonCpu(daemon),
      empty: await daemonCpu(empty),
      agents: agentProcs.reduce((sum, p) => sum + procCpuSeconds(p.pid), 0),
      t: now(),
    });
    const idleStart = await cpuAt();
    await sleep(cfg.idleMs);
    const idleEnd = await cpuAt();
    const idle = {
      seconds: (idleEnd.t - idleStart.t) / 1000,
      full: idleEnd.full - idleStart.full,
      empty: idleEnd.empty - idleStart.empty,
      agentProcesses: idleEnd.agents - idleStart.agents,
    };
    const mem = {
      full: await daemonMemory(daemon),
      empty: await daemonMemory(empty),
      fullVmRss: procMemory(daemon.pid, "VmRSS"),
      emptyVmRss: procMemory(empty.pid, "VmRSS"),
    };

    // ---- 2: scrapes ----
    const metrics = await scrape(httpAddress, "/metrics", cfg.scrapes);
    const agentsList = await scrape(httpAddress, "/v1/agents", cfg.scrapes);

    // ---- 3: exec through the daemon against direct, to the same agent ----
    const target = 0;
    const direct = await lib.openSession(`unix:${agentPath(target)}`);
    res.add(() => direct.close());
    const viaDaemon = await lib.openDaemonSession(ids[target] as string, {
      socketPath: fullSocket,
    });
    res.add(() => viaDaemon.close());
    const calls = await interleaved(
      {
        direct: execTrue(lib, direct, "direct"),
        daemon: execTrue(lib, viaDaemon, "@ID"),
        pingDirect: ping(direct, "direct"),
        pingDaemon: ping(viaDaemon, "@ID"),
      },
      cfg.callSamples,
      cfg.callWarmup,
      LATENCY_BLOCK,
    );

    const pids = {
      daemon: daemon.pid,
      agent: (agentProcs[0] as LineProcess).pid,
    };
    const hwmBefore = procMemory(daemon.pid, "VmHWM");
    const transfers = { direct: [] as Transfer[], daemon: [] as Transfer[] };
    const sessions = { direct, daemon: viaDaemon };
    for (const name of ["direct", "daemon"] as const) {
      await streamZeros(lib, sessions[name], name, cfg.warmupStreamBytes, pids);
    }
    for (let turn = 0; turn < cfg.streamRuns; turn++) {
      // The cases take turns, starting with a different one each turn.
      const order =
        turn % 2 === 0 ? (["direct", "daemon"] as const) : (["daemon", "direct"] as const);
      for (const name of order) {
        transfers[name].push(await streamZeros(lib, sessions[name], name, cfg.streamBytes, pids));
      }
    }
    const hwmAfter = procMemory(daemon.pid, "VmHWM");

    return report(opts, cfg, {
      agents: cfg.agents,
      agentProcesses: agentProcs.length,
      upMs,
      upFromSpawnMs,
      mem,
      idle,
      metrics,
      agentsList,
      call: {
        direct: summarize(calls.direct),
        daemon: summarize(calls.daemon),
        pingDirect: summarize(calls.pingDirect),
        pingDaemon: summarize(calls.pingDaemon),
      },
      streams: { ...transfers, hwmBefore, hwmAfter },
      libWarnings: built.warnings,
      loadAtEnd: os.loadavg()[0] ?? 0,
    });
  } finally {
    await res.release();
  }
}

/** Every agent is `up` as the daemon's API reports it. */
async function checkAllUp(httpAddress: string, ids: readonly string[]): Promise<void> {
  const agent = new HttpAgent();
  try {
    const got = await httpGet(agent, httpAddress, "/v1/agents", true);
    const agents = (JSON.parse(got.body) as { agents: { id: string; state: string }[] }).agents;
    const up = new Set(agents.filter((a) => a.state === "up").map((a) => a.id));
    const missing = ids.filter((id) => !up.has(id));
    if (got.status !== 200 || missing.length > 0 || agents.length !== ids.length) {
      throw new CorrectnessError(
        `/v1/agents: HTTP ${got.status}, ${agents.length} agents, not up: ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`,
      );
    }
  } finally {
    agent.destroy();
  }
}

// ---- the report ----------------------------------------------------------------------------

function sizeLabel(bytes: number): string {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`;
  return `${bytes / MiB} MiB`;
}

function medianCpu(transfers: readonly Transfer[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const key of Object.keys(transfers[0]?.cpu ?? {})) {
    out[key] = median(transfers.map((t) => t.cpu[key] ?? Number.NaN));
  }
  return out;
}

function report(opts: BenchOptions, cfg: Config, m: Measured): BenchReport {
  const n = m.agents;
  const f1 = (x: number) => formatNumber(x, 1);
  const f2 = (x: number) => formatNumber(x, 2);
  const f3 = (x: number) => formatNumber(x, 3);
  const kib = (bytes: number) => formatNumber(bytes / KiB, 1);
  const mib = (bytes: number) => formatNumber(bytes / MiB, 1);

  const rssPerAgent = (m.mem.full.rss - m.mem.empty.rss) / n;
  const heapPerAgent = (m.mem.full.heapUsed - m.mem.empty.heapUsed) / n;
  const externalPerAgent =
    (m.mem.full.external +
      m.mem.full.arrayBuffers -
      m.mem.empty.external -
      m.mem.empty.arrayBuffers) /
    n;
  // CPU microseconds per second of wall time, per agent (1 µs/s = 0.0001% of one CPU).
  const idlePerAgentUsPerS = ((m.idle.full - m.idle.empty) / n / m.idle.seconds) * 1e6;
  const idleFullPct = (m.idle.full / m.idle.seconds) * 100;
  const idleEmptyPct = (m.idle.empty / m.idle.seconds) * 100;
  const idleAgentsPct = (m.idle.agentProcesses / m.idle.seconds) * 100;

  const latencyRatio = m.call.daemon.median / m.call.direct.median;
  const pingRatio = m.call.pingDaemon.median / m.call.pingDirect.median;
  const directMbps = median(m.streams.direct.map((t) => t.mbps));
  const daemonMbps = median(m.streams.daemon.map((t) => t.mbps));
  const throughputRatio = daemonMbps / directMbps;
  const latencyVerdict = verdict(latencyRatio, AIM_LATENCY_RATIO, false);
  const throughputVerdict = verdict(throughputRatio, AIM_THROUGHPUT_RATIO);
  const streamLabel = sizeLabel(cfg.streamBytes);

  const metricsCell = m.metrics.ms ? f2(m.metrics.ms.median) : "n/a (no /metrics yet)";
  const rows: string[][] = [
    [
      `daemon RSS per agent (${n} held, minus empty)`,
      kib(rssPerAgent),
      "",
      "KiB",
      "",
      "",
      "(info)",
    ],
    ["daemon heap used per agent (after GC)", kib(heapPerAgent), "", "KiB", "", "", "(info)"],
    ["  external + array buffers per agent", kib(externalPerAgent), "", "KiB", "", "", "(info)"],
    [
      `daemon idle CPU per agent (${f1(m.idle.seconds)} s, minus empty)`,
      f1(idlePerAgentUsPerS),
      "",
      "µs/s",
      "",
      "",
      "(info)",
    ],
    [
      `  whole daemon idle CPU  vs empty daemon`,
      f2(idleFullPct),
      f2(idleEmptyPct),
      "% CPU",
      "",
      "",
      "(info)",
    ],
    [`time until all ${n} up, from Daemon.start`, formatNumber(m.upMs), "", "ms", "", "", "(info)"],
    [
      "  same, from spawning the daemon process",
      formatNumber(m.upFromSpawnMs),
      "",
      "ms",
      "",
      "",
      "(info)",
    ],
    [
      `GET /metrics, median (${n} agents)`,
      metricsCell,
      "",
      m.metrics.ms ? "ms" : "",
      "",
      "",
      "(info)",
    ],
    [
      `  GET /v1/agents, median (${kib(m.agentsList.bytes)} KiB)`,
      m.agentsList.ms ? f2(m.agentsList.ms.median) : "n/a",
      "",
      "ms",
      "",
      "",
      "(info)",
    ],
  ];
  for (const stat of ["median", "p90"] as const) {
    rows.push([
      `exec true via @ID, ${stat}  vs direct`,
      f3(m.call.daemon[stat]),
      f3(m.call.direct[stat]),
      "ms",
      f2(m.call.daemon[stat] / m.call.direct[stat]),
      stat === "median" ? `<= ${AIM_LATENCY_RATIO}x` : "",
      stat === "median" ? latencyVerdict : "(info)",
    ]);
  }
  rows.push(
    [
      "  ping via @ID, median  vs direct",
      f3(m.call.pingDaemon.median),
      f3(m.call.pingDirect.median),
      "ms",
      f2(pingRatio),
      "",
      "(info)",
    ],
    [
      `exec head -c ${streamLabel} via @ID  vs direct`,
      formatNumber(daemonMbps),
      formatNumber(directMbps),
      "MB/s",
      f2(throughputRatio),
      `>= ${AIM_THROUGHPUT_RATIO}x`,
      throughputVerdict,
    ],
    [
      "  daemon peak RSS (VmHWM) after the streams  vs before",
      mib(m.streams.hwmAfter),
      mib(m.streams.hwmBefore),
      "MiB",
      f2(m.streams.hwmAfter / m.streams.hwmBefore),
      "",
      "(info)",
    ],
  );

  const cpuRows: string[][] = [];
  const gib = cfg.streamBytes / GiB;
  for (const name of ["direct", "daemon"] as const) {
    const cpu = medianCpu(m.streams[name]);
    for (const [proc, seconds] of Object.entries(cpu)) {
      if (name === "direct" && proc === "daemon") continue;
      cpuRows.push([
        `${name === "daemon" ? "via @ID" : "direct"}: ${proc}`,
        f2(seconds),
        formatNumber((seconds / gib) * 1000),
      ]);
    }
  }

  const runs = (ts: readonly Transfer[]) => ts.map((t) => formatNumber(t.mbps)).join(" ");
  const text = [
    `serve: one daemon process holding ${n} agents (${m.agentProcesses} agent processes, one Agent each listening on ${n / m.agentProcesses} Unix sockets),` +
      ` the library compiled by tsc, node ${process.version}${opts.quick ? "; QUICK: rough figures" : ""}`,
    "",
    table(["figure", "value", "baseline", "unit", "ratio", "aim", "verdict"], rows),
    "",
    `memory: process.memoryUsage() after two full GCs, after ${f1(m.idle.seconds)} s idle; RSS ${mib(m.mem.full.rss)} MiB` +
      ` (empty daemon ${mib(m.mem.empty.rss)} MiB), heap used ${mib(m.mem.full.heapUsed)} MiB (empty ${mib(m.mem.empty.heapUsed)} MiB).`,
    `idle CPU: the daemons' process.cpuUsage() (user+system, as /proc/PID/stat's utime+stime, in µs) over ${f1(m.idle.seconds)} s with all ${n} up (${f1(cfg.settleMs / 1000)} s after they were):` +
      ` daemon ${f2(m.idle.full)} s, empty daemon ${f2(m.idle.empty)} s; the agent processes (/proc, 10 ms ticks) ${f2(idleAgentsPct)}% CPU together.`,
    `  Each held session sends a keepalive every 5 s and the daemon checks each agent's liveness every 1 s.`,
    `exec true: ${m.call.direct.n} calls per case on one session each (openSession("unix:…") directly; openDaemonSession("vm-0")),` +
      ` taking turns in blocks of ${LATENCY_BLOCK} with ping calls on each; min direct ${f3(m.call.direct.min)} ms, @ID ${f3(m.call.daemon.min)} ms.`,
    `streaming: median of ${cfg.streamRuns} transfers of ${streamLabel} per case into a counting sink, the cases taking turns` +
      ` (MB/s direct ${runs(m.streams.direct)}; via @ID ${runs(m.streams.daemon)}). MB = 10^6 bytes.`,
    "",
    `CPU seconds per process per transfer (median; ${os.cpus().length} CPUs):`,
    "",
    table(["process", "CPU s", "CPU ms/GiB"], cpuRows),
    "",
    `load average (1 min) when measuring finished: ${f2(m.loadAtEnd)}.`,
    ...(m.libWarnings ? [`note: tsc reported errors building the library:\n${m.libWarnings}`] : []),
  ].join("\n");

  const ms = (s: Summary) => ({
    n: s.n,
    minMs: round(s.min, 3),
    medianMs: round(s.median, 3),
    p90Ms: round(s.p90, 3),
    p99Ms: round(s.p99, 3),
    maxMs: round(s.max, 3),
  });
  const figures: Record<string, unknown> = {
    agents: n,
    agentProcesses: m.agentProcesses,
    daemon: {
      rssPerAgentKiB: round(rssPerAgent / KiB, 1),
      heapUsedPerAgentKiB: round(heapPerAgent / KiB, 1),
      externalPerAgentKiB: round(externalPerAgent / KiB, 1),
      rssMiB: round(m.mem.full.rss / MiB, 1),
      emptyRssMiB: round(m.mem.empty.rss / MiB, 1),
      heapUsedMiB: round(m.mem.full.heapUsed / MiB, 2),
      emptyHeapUsedMiB: round(m.mem.empty.heapUsed / MiB, 2),
      idleSeconds: round(m.idle.seconds, 2),
      idleCpuSeconds: round(m.idle.full, 2),
      emptyIdleCpuSeconds: round(m.idle.empty, 2),
      idleCpuPerAgentUsPerS: round(idlePerAgentUsPerS, 1),
      upMs: round(m.upMs),
      upFromSpawnMs: round(m.upFromSpawnMs),
    },
    metrics: m.metrics.ms ? { ...ms(m.metrics.ms), bytes: m.metrics.bytes } : null,
    agentsList: m.agentsList.ms ? { ...ms(m.agentsList.ms), bytes: m.agentsList.bytes } : null,
    execTrue: {
      direct: ms(m.call.direct),
      viaDaemon: ms(m.call.daemon),
      ratio: round(latencyRatio, 3),
      pingDirect: ms(m.call.pingDirect),
      pingViaDaemon: ms(m.call.pingDaemon),
      pingRatio: round(pingRatio, 3),
      aimRatio: AIM_LATENCY_RATIO,
      pass: latencyVerdict === "PASS",
    },
    execStream: {
      bytes: cfg.streamBytes,
      directMbps: round(directMbps),
      viaDaemonMbps: round(daemonMbps),
      ratio: round(throughputRatio, 3),
      directRuns: m.streams.direct.map((t) => round(t.mbps)),
      viaDaemonRuns: m.streams.daemon.map((t) => round(t.mbps)),
      cpuSeconds: {
        direct: Object.fromEntries(
          Object.entries(medianCpu(m.streams.direct)).map(([k, v]) => [k, round(v, 2)]),
        ),
        viaDaemon: Object.fromEntries(
          Object.entries(medianCpu(m.streams.daemon)).map(([k, v]) => [k, round(v, 2)]),
        ),
      },
      daemonHwmBeforeMiB: round(m.streams.hwmBefore / MiB, 1),
      daemonHwmAfterMiB: round(m.streams.hwmAfter / MiB, 1),
      aimRatio: AIM_THROUGHPUT_RATIO,
      pass: throughputVerdict === "PASS",
    },
    loadAverageAtEnd: round(m.loadAtEnd, 2),
  };
  return { text, figures };
}

/**
 * exec, get and put through the shipped CLI (`bin/guestlink`, i.e. dist/ as `npm run build` made
 * it) against a real agent process (`guestlink agent --listen unix:PATH`), each figure beside
 * baselines measured in the same run, the cases taking turns:
 *
 * - `guestlink exec ADDR -- head -c 1G /dev/zero`, the CLI's stdout a pipe that this process
 *   drains and counts (like `| wc -c`): MB/s from spawn to exit, against a bare Node Unix-socket
 *   stream of the same bytes (a helper process writes them, this process counts them) and a local
 *   `head -c 1G /dev/zero` piped straight into this process (the ceiling of the pipe and reader);
 *   when socat is installed, socat at both ends doing the same job (`socatStream`), head on real
 *   pipes as the agent has it and on socat's default socketpair; and the same command through the
 *   library (`remoteExec` into a sink in this process). The CPU time of every process involved is
 *   recorded, to say where the time goes.
 * - `exec -- true`: (a) per call through the library (`openSession` once, `remoteExec` again and
 *   again) against (c) `child_process.spawn("true")` in a plain node process, and a "ping" call on
 *   the same session (the protocol's floor); (b) the whole CLI invocation, against `node -e 0`
 *   (Node's own startup), `guestlink --version` (bin/guestlink answers it alone) and
 *   `guestlink --help` (startup plus loading the CLI: its commands' options and help, not their
 *   implementations).
 * - `guestlink get` / `guestlink put` of a 1 GiB file of random bytes: MB/s against `cp` of the
 *   same file, `cp` followed by `sync FILE` (guestlink fsyncs what it writes; cp does not), and
 *   `cat | dd conv=fsync` (streamed through a pipe between two processes, then fsynced).
 * - peak RSS of a fresh agent and of the CLI while 4 GiB stream through `exec`.
 * - beside qemu-guest-agent, when `qemu-ga` is installed (else one line says so and the rest
 *   runs): `qemu-ga -m unix-listen` on a temporary socket (`qemu-ga.ts`), the same commands
 *   through the library and through guest-exec, taking turns: `true` (per call; qemu-ga's
 *   guest-exec, then guest-exec-status polled back to back until it exited) and
 *   `head -c N /dev/zero` for 1, 16 and 64 MiB, timed until the whole output is in hand (one
 *   Buffer). qemu-ga keeps at most 16 MiB of a command's output: a size it truncates is n/a.
 *
 * The CLI and the library are a copy of bin/ and dist/ taken at the start (build first: `npm run
 * build`); a note says when src/ is newer than that build. The CLI's stdout is a real pipe (a
 * FIFO), as a shell's `| wc -c` gives. MB = 10^6 bytes. The machine's other work matters: the load
 * average is printed for the start and the end.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { closeSync, constants, existsSync, openSync, readFileSync, statSync } from "node:fs";
import {
  cp,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { ExecResult } from "../src/agent/exec.ts";
import type { Session } from "../src/session/session.ts";
import {
  type BenchOptions,
  type BenchReport,
  formatNumber,
  type Helper,
  median,
  now,
  round,
  type Summary,
  sampleDurations,
  startHelper,
  summarize,
  table,
  verdict,
} from "./lib.ts";
import { findQemuGa, QemuGa, QemuGaError } from "./qemu-ga.ts";
import { RAW_STREAM } from "./session-server.ts";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DIST = join(REPO_ROOT, "dist");

/**
 * The CLI the benchmark runs: a copy of bin/ and dist/ taken when it starts (see
 * `snapshotCli`), so that a rebuild of dist/ while it runs cannot mix two builds.
 */
const shipped = { bin: join(REPO_ROOT, "bin", "guestlink"), dist: DIST };
const SRC = join(REPO_ROOT, "src");

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const MB = 1e6;

/** Aims (informational: a miss does not fail the run). */
const AIM_EXEC_MBPS = 1000;
const AIM_EXEC_RATIO = 0.5;
/** The CLI against socat at both ends, doing the same job (issue 19). */
const AIM_SOCAT_RATIO = 0.8;
const AIM_EXEC_CALL_MS = 1.5;
const AIM_RSS_BYTES = 100 * MiB;

/** Latency samples of one side before the other takes its turn. */
const LATENCY_BLOCK = 25;
const AGENT_READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 3_000;

interface Config {
  streamBytes: number;
  streamRuns: number;
  /** One untimed transfer of this size per case first. */
  warmupStreamBytes: number;
  callSamples: number;
  callWarmup: number;
  cliRuns: number;
  fileBytes: number;
  fileRuns: number;
  rssBytes: number;
  /** Beside qemu-ga: exec true calls per side, and output sizes with their timed runs. */
  qgaCallSamples: number;
  qgaOutputs: { bytes: number; runs: number }[];
}

const FULL: Config = {
  streamBytes: 1 * GiB,
  streamRuns: 3,
  warmupStreamBytes: 256 * MiB,
  callSamples: 300,
  callWarmup: 30,
  cliRuns: 20,
  fileBytes: 1 * GiB,
  fileRuns: 3,
  rssBytes: 4 * GiB,
  qgaCallSamples: 300,
  qgaOutputs: [
    { bytes: 1 * MiB, runs: 15 },
    { bytes: 16 * MiB, runs: 7 },
    { bytes: 64 * MiB, runs: 5 },
  ],
};

const QUICK: Config = {
  streamBytes: 128 * MiB,
  streamRuns: 1,
  warmupStreamBytes: 16 * MiB,
  callSamples: 50,
  callWarmup: 10,
  cliRuns: 5,
  fileBytes: 64 * MiB,
  fileRuns: 1,
  rssBytes: 256 * MiB,
  qgaCallSamples: 50,
  qgaOutputs: [
    { bytes: 1 * MiB, runs: 3 },
    { bytes: 16 * MiB, runs: 1 },
    { bytes: 64 * MiB, runs: 1 },
  ],
};

class CorrectnessError extends Error {
  override name = "CorrectnessError";
}

// ---- the library, as shipped (dist/) ------------------------------------------------------

interface Lib {
  openSession: typeof import("../src/platform/session.ts").openSession;
  remoteExec: typeof import("../src/controller/exec.ts").remoteExec;
}

async function loadDist(): Promise<Lib> {
  const load = (path: string) => import(pathToFileURL(join(shipped.dist, path)).href);
  const session = (await load(
    "platform/session.js",
  )) as typeof import("../src/platform/session.ts");
  const exec = (await load("controller/exec.js")) as typeof import("../src/controller/exec.ts");
  return { openSession: session.openSession, remoteExec: exec.remoteExec };
}

/** Files under `dir` (recursively) with the newest modification time, and that time. */
async function newest(dir: string, suffix: string): Promise<{ path: string; mtimeMs: number }> {
  let best = { path: "", mtimeMs: 0 };
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith(suffix)) continue;
    const path = join(entry.parentPath, entry.name);
    const { mtimeMs } = await stat(path);
    if (mtimeMs > best.mtimeMs) best = { path, mtimeMs };
  }
  return best;
}

/** A note when src/ changed after dist/ was built (the CLI runs dist/). */
async function staleBuildNote(): Promise<string | undefined> {
  const entry = join(DIST, "cli", "main.js");
  if (!existsSync(entry)) {
    throw new Error("dist/ is missing: run `npm run build` first (the CLI runs the build)");
  }
  const built = statSync(entry).mtimeMs;
  const src = await newest(SRC, ".ts");
  if (src.mtimeMs <= built) return undefined;
  return `note: ${src.path.slice(REPO_ROOT.length)} changed after dist/ was built; these figures are of dist/`;
}

/** Copies bin/ and dist/ into `dir`, with the repository's node_modules linked, and runs that. */
async function snapshotCli(dir: string): Promise<void> {
  const root = join(dir, "guestlink");
  await cp(DIST, join(root, "dist"), { recursive: true });
  await cp(join(REPO_ROOT, "bin"), join(root, "bin"), { recursive: true });
  await writeFile(join(root, "package.json"), '{ "type": "module" }\n');
  await symlink(join(REPO_ROOT, "node_modules"), join(root, "node_modules"), "dir");
  shipped.bin = join(root, "bin", "guestlink");
  shipped.dist = join(root, "dist");
}

// ---- processes -----------------------------------------------------------------------------

/** CPU seconds (user, system) of a process and of its children it has waited for. */
interface Cpu {
  user: number;
  system: number;
  childUser: number;
  childSystem: number;
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

function procCpu(pid: number | "self"): Cpu | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may hold spaces.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const tick = (i: number) => Number(f[i]) / CLOCK_TICKS;
    // utime, stime, cutime, cstime: fields 14-17 of the whole line, indexes 11-14 here.
    return { user: tick(11), system: tick(12), childUser: tick(13), childSystem: tick(14) };
  } catch {
    return undefined;
  }
}

function cpuDelta(before: Cpu | undefined, after: Cpu | undefined): Cpu | undefined {
  if (!before || !after) return undefined;
  return {
    user: after.user - before.user,
    system: after.system - before.system,
    childUser: after.childUser - before.childUser,
    childSystem: after.childSystem - before.childSystem,
  };
}

/** A memory figure of a running process from /proc/PID/status, in bytes. */
function procMemory(pid: number, field: "VmHWM" | "VmRSS"): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m").exec(status);
    return m ? Number(m[1]) * KiB : undefined;
  } catch {
    return undefined;
  }
}

/** VmHWM (peak resident set) of a running process, in bytes. */
const peakRss = (pid: number): number | undefined => procMemory(pid, "VmHWM");

/** What a hooked CLI process reports of itself when it exits (process.resourceUsage()). */
interface SelfUsage {
  maxRssBytes: number;
  user: number;
  system: number;
}

/**
 * A module loaded with `node --import` into the CLI: at exit it writes its own peak RSS (VmHWM
 * from /proc/self/status) and CPU time to $GUESTLINK_BENCH_USAGE. Not getrusage's ru_maxrss:
 * Linux keeps that across exec, so a CLI spawned (forked) from this large bench process reported
 * the bench's own RSS (145 MiB for exec true, which peaks at 56 MiB).
 */
const USAGE_HOOK = `import { readFileSync, writeFileSync } from "node:fs";
const out = process.env.GUESTLINK_BENCH_USAGE;
if (out) process.on("exit", () => {
  const u = process.resourceUsage();
  const hwm = /VmHWM:\\s+(\\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  const maxRssBytes = hwm ? Number(hwm[1]) * 1024 : u.maxRSS * 1024;
  writeFileSync(out, JSON.stringify({ maxRssBytes, user: u.userCPUTime / 1e6, system: u.systemCPUTime / 1e6 }));
});
`;

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Bytes read from its stdout (counted, not kept, unless `keepStdout`). */
  stdoutBytes: number;
  stdout: string;
  stderr: string;
  /** From spawn until it exited and its stdout closed. */
  ms: number;
  /** From spawn until its first stdout byte (NaN without any). */
  firstByteMs: number;
}

/**
 * Runs `file args`, draining and counting its stdout (kept as text with `keepStdout`) as a
 * `| wc -c` would; resolves once it exited and its stdout closed.
 */
function runCounted(
  file: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; keepStdout?: boolean; onSpawn?: (pid: number) => void } = {},
): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const start = now();
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        cwd: REPO_ROOT,
        env: options.env ?? process.env,
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch (err) {
      reject(err);
      return;
    }
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
    let stdoutBytes = 0;
    let firstByteMs = Number.NaN;
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      if (stdoutBytes === 0) firstByteMs = now() - start;
      stdoutBytes += chunk.length;
      if (options.keepStdout && stdout.length < 65_536) stdout += chunk.toString("utf8");
    });
    child.stderr?.setEncoding("utf8").on("data", (text: string) => {
      if (stderr.length < 16_384) stderr += text;
    });
    child.once("error", reject);
    child.once("close", (code, signal) =>
      resolve({ code, signal, stdoutBytes, stdout, stderr, ms: now() - start, firstByteMs }),
    );
  });
}

/** What the streams below are read into (the bytes are counted, not kept). */
const READ_BUFFER = Buffer.allocUnsafe(1 * MiB);

/**
 * Counts the bytes of a socket or pipe read into one buffer again and again (`onread`), as
 * `wc -c` does: a new buffer per read would make this reader, not what it measures, the limit.
 */
class ReadCount {
  bytes = 0;
  firstByteMs = Number.NaN;
  readonly #start: number;
  readonly onread: net.OnReadOpts = {
    buffer: READ_BUFFER,
    callback: (nread: number) => {
      if (this.bytes === 0) this.firstByteMs = now() - this.#start;
      this.bytes += nread;
      return true;
    },
  };

  constructor(start: number) {
    this.#start = start;
  }
}

/**
 * Runs `file args` with its stdout a real pipe (a FIFO in the temporary folder, as `| wc -c` in a
 * shell gives; Node's own `stdio: "pipe"` is a socketpair) that this process drains and counts.
 */
function runIntoPipe(
  fifo: string,
  file: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Finished> {
  // The reader first (non-blocking, so the open does not wait for a writer), then the writer.
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  let writeFd: number;
  try {
    writeFd = openSync(fifo, constants.O_WRONLY);
  } catch (err) {
    closeSync(readFd);
    throw err;
  }
  const start = now();
  const count = new ReadCount(start);
  const reader = new net.Socket({
    fd: readFd,
    readable: true,
    writable: false,
    onread: count.onread,
  } as net.SocketConstructorOpts);
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(file, args, { cwd: REPO_ROOT, env, stdio: ["ignore", writeFd, "pipe"] });
    } catch (err) {
      reader.destroy();
      reject(err);
      return;
    } finally {
      // Only the child holds the write end now: the reader sees the end when the child exits.
      closeSync(writeFd);
    }
    let stderr = "";
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let ended = false;
    const finish = () => {
      if (!exit || !ended) return;
      resolve({
        ...exit,
        stdoutBytes: count.bytes,
        stdout: "",
        stderr,
        ms: now() - start,
        firstByteMs: count.firstByteMs,
      });
    };
    reader.once("end", () => {
      ended = true;
      finish();
    });
    reader.once("error", (err) => {
      child.kill("SIGKILL");
      reject(err);
    });
    child.stderr?.setEncoding("utf8").on("data", (text: string) => {
      if (stderr.length < 16_384) stderr += text;
    });
    child.once("error", (err) => {
      reader.destroy();
      reject(err);
    });
    child.once("close", (code, signal) => {
      exit = { code, signal };
      finish();
    });
  });
}

function mkfifo(path: string): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile("mkfifo", ["-m", "600", path], (err) => (err ? reject(err) : resolve())),
  );
}

function expectSuccess(what: string, done: Finished, stdoutBytes?: number): void {
  const ok = done.code === 0 && (stdoutBytes === undefined || done.stdoutBytes === stdoutBytes);
  if (!ok) {
    throw new CorrectnessError(
      `${what}: exit ${done.signal ?? done.code}, ${done.stdoutBytes} bytes on stdout` +
        `${stdoutBytes === undefined ? "" : ` (expected ${stdoutBytes})`}${done.stderr ? `; stderr: ${done.stderr.trim()}` : ""}`,
    );
  }
}

interface AgentOptions {
  /** A module node loads first (`--import`): the ballast that grows the agent's memory. */
  preload?: string;
  env?: Record<string, string>;
}

/** A `guestlink agent --listen unix:PATH --log-level warn` process. */
class Agent {
  readonly address: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  #stderr = "";

  private constructor(path: string, options: AgentOptions) {
    this.address = `unix:${path}`;
    this.#child = spawn(
      process.execPath,
      [
        ...(options.preload ? ["--import", pathToFileURL(options.preload).href] : []),
        shipped.bin,
        "agent",
        "--listen",
        this.address,
        "--log-level",
        "warn",
      ],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, ...options.env },
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    this.#child.stderr?.setEncoding("utf8").on("data", (text: string) => {
      if (this.#stderr.length < 16_384) this.#stderr += text;
      process.stderr.write(`agent: ${text}`);
    });
    this.#exited = new Promise((resolve) => {
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) resolve();
      else this.#child.once("exit", () => resolve());
    });
    this.#child.on("error", () => {});
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  /** Starts an agent at `path` and waits until it accepts connections. */
  static async start(path: string, options: AgentOptions = {}): Promise<Agent> {
    const agent = new Agent(path, options);
    const deadline = now() + AGENT_READY_TIMEOUT_MS;
    for (;;) {
      if (agent.#child.exitCode !== null || agent.#child.signalCode !== null) {
        throw new Error(`the agent exited before it listened: ${agent.#stderr.trim()}`);
      }
      if (await canOpenSession(agent.address)) return agent;
      if (now() > deadline) {
        await agent.stop();
        throw new Error(`the agent did not listen on ${path} in time: ${agent.#stderr.trim()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill("SIGTERM");
    }
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), STOP_GRACE_MS);
    await this.#exited;
    clearTimeout(timer);
  }
}

/**
 * Whether a session opens (and closes again) at `address`: a handshake, so the agent does not log
 * a connection that went away unannounced.
 */
async function canOpenSession(address: string): Promise<boolean> {
  const { openSession } = await loadDist();
  try {
    const session = await openSession(address, { deadline: now() + 1_000 });
    await session.close();
    return true;
  } catch {
    return false;
  }
}

/** Cleanups, run in reverse order of creation. */
class Resources {
  readonly #cleanups: (() => Promise<unknown>)[] = [];

  add(cleanup: () => Promise<unknown>): void {
    this.#cleanups.push(cleanup);
  }

  async agent(path: string, options: AgentOptions = {}): Promise<Agent> {
    const agent = await Agent.start(path, options);
    this.add(() => agent.stop());
    return agent;
  }

  async helper(script: string, args: string[]): Promise<Helper> {
    const helper = await startHelper(script, args);
    this.add(() => helper.stop());
    return helper;
  }

  async release(): Promise<void> {
    for (const cleanup of this.#cleanups.splice(0).reverse()) {
      await cleanup().catch(() => {});
    }
  }
}

// ---- 1: exec -- head -c N /dev/zero ------------------------------------------------------

/** One transfer: its rate and the CPU seconds each process spent on it. */
interface Transfer {
  mbps: number;
  /** From the first byte to the last (start-up excluded). */
  streamingMbps: number;
  cpu: Record<string, number>;
}

function totalCpu(c: Cpu | undefined, children = false): number {
  if (!c) return Number.NaN;
  return children ? c.childUser + c.childSystem : c.user + c.system;
}

/** The CLI, hooked to report its own usage: `node --import HOOK bin/guestlink ARGS`. */
function cliArgs(hook: string, args: readonly string[]): string[] {
  return ["--import", pathToFileURL(hook).href, shipped.bin, ...args];
}

async function readUsage(path: string): Promise<SelfUsage> {
  const usage = JSON.parse(await readFile(path, "utf8")) as SelfUsage;
  await rm(path, { force: true });
  return usage;
}

/** `head -c N /dev/zero` (8 KiB writes), or the same bytes in 1 MiB writes (`dd bs=1M`). */
function zeroCommand(bytes: number, bigWrites: boolean): string[] {
  return bigWrites
    ? ["dd", "if=/dev/zero", "bs=1M", `count=${bytes}`, "iflag=count_bytes", "status=none"]
    : ["head", "-c", String(bytes), "/dev/zero"];
}

async function cliExecStream(
  agent: Agent,
  files: { hook: string; usage: string; fifo: string },
  bytes: number,
  bigWrites = false,
): Promise<Transfer> {
  const agentBefore = procCpu(agent.pid);
  const selfBefore = process.cpuUsage();
  const done = await runIntoPipe(
    files.fifo,
    process.execPath,
    cliArgs(files.hook, ["exec", agent.address, "--", ...zeroCommand(bytes, bigWrites)]),
    { ...process.env, GUESTLINK_BENCH_USAGE: files.usage },
  );
  const self = process.cpuUsage(selfBefore);
  const agentCpu = cpuDelta(agentBefore, procCpu(agent.pid));
  expectSuccess(`guestlink exec ${bigWrites ? "dd" : "head"}`, done, bytes);
  const cli = await readUsage(files.usage);
  return {
    mbps: bytes / MB / (done.ms / 1000),
    streamingMbps: bytes / MB / ((done.ms - done.firstByteMs) / 1000),
    cpu: {
      [bigWrites ? "dd (in the agent)" : "head (in the agent)"]: totalCpu(agentCpu, true),
      agent: totalCpu(agentCpu),
      "guestlink CLI": cli.user + cli.system,
      "bench (reader)": (self.user + self.system) / 1e6,
    },
  };
}

async function localPipeStream(fifo: string, bytes: number): Promise<Transfer> {
  const before = procCpu("self");
  const selfBefore = process.cpuUsage();
  const done = await runIntoPipe(fifo, "head", ["-c", String(bytes), "/dev/zero"]);
  const self = process.cpuUsage(selfBefore);
  const children = cpuDelta(before, procCpu("self"));
  expectSuccess("head", done, bytes);
  return {
    mbps: bytes / MB / (done.ms / 1000),
    streamingMbps: bytes / MB / ((done.ms - done.firstByteMs) / 1000),
    cpu: { head: totalCpu(children, true), "bench (reader)": (self.user + self.system) / 1e6 },
  };
}

/** Receives `bytes` from the bare server in the helper; MB/s from the request to the last byte. */
async function rawSocketStream(path: string, helperPid: number, bytes: number): Promise<Transfer> {
  const helperBefore = procCpu(helperPid);
  const selfBefore = process.cpuUsage();
  const start = now();
  const count = new ReadCount(start);
  const socket = net.connect({ path, onread: count.onread });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const request = Buffer.alloc(9);
  request[0] = RAW_STREAM;
  request.writeBigUInt64BE(BigInt(bytes), 1);
  socket.write(request);
  await new Promise<void>((resolve, reject) => {
    socket.once("end", resolve);
    socket.once("error", reject);
  });
  socket.destroy();
  const ms = now() - start;
  const self = process.cpuUsage(selfBefore);
  const helper = cpuDelta(helperBefore, procCpu(helperPid));
  if (count.bytes !== bytes) {
    throw new CorrectnessError(`raw socket: asked for ${bytes} bytes, got ${count.bytes}`);
  }
  return {
    mbps: bytes / MB / (ms / 1000),
    streamingMbps: bytes / MB / ((ms - count.firstByteMs) / 1000),
    cpu: { "writer (helper)": totalCpu(helper), "bench (reader)": (self.user + self.system) / 1e6 },
  };
}

/**
 * The same command through the library: `remoteExec` on a session this process holds, its stdout
 * a sink that counts (and keeps nothing, so the session's buffers are recycled). MB/s from the
 * call to its result.
 */
async function libraryExecStream(
  lib: Lib,
  session: Session,
  agent: Agent,
  bytes: number,
): Promise<Transfer> {
  const agentBefore = procCpu(agent.pid);
  const selfBefore = process.cpuUsage();
  let received = 0;
  let firstByteMs = Number.NaN;
  const start = now();
  const stdout = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (received === 0) firstByteMs = now() - start;
      received += chunk.length;
      callback();
    },
  });
  const result = await lib.remoteExec(
    session,
    { argv: zeroCommand(bytes, false) },
    { stdout, stderr: sink(), recycle: true },
  );
  const ms = now() - start;
  const self = process.cpuUsage(selfBefore);
  const agentCpu = cpuDelta(agentBefore, procCpu(agent.pid));
  if (result.status !== 0 || received !== bytes) {
    throw new CorrectnessError(
      `exec head through the library: ${JSON.stringify(result)}, ${received} of ${bytes} bytes`,
    );
  }
  return {
    mbps: bytes / MB / (ms / 1000),
    streamingMbps: bytes / MB / ((ms - firstByteMs) / 1000),
    cpu: {
      "head (in the agent)": totalCpu(agentCpu, true),
      agent: totalCpu(agentCpu),
      "bench (library)": (self.user + self.system) / 1e6,
    },
  };
}

/** socat's buffer in the chain below: `-b 131072`, as the issue's figure was measured. */
const SOCAT_BUFFER_BYTES = 128 * KiB;

/** Why the socat chain is not measured (socat is not installed), or undefined. */
function socatMissing(): string | undefined {
  const probe = spawnSync("socat", ["-V"], { stdio: "ignore" });
  return probe.status === 0 ? undefined : "socat is not installed (Debian: apt-get install socat)";
}

/**
 * The same job done by socat at both ends: one socat runs `head -c N /dev/zero` and sends its
 * output into a Unix socket (the agent's part), another connects and copies it to its stdout, a
 * real pipe this process drains (the CLI's part). `pipes`: socat talks to head over real pipes,
 * as the agent does; else over a socketpair, socat's default. MB/s from the client's spawn to
 * its exit; the server is listening before.
 */
async function socatStream(
  dir: string,
  fifo: string,
  bytes: number,
  pipes: boolean,
): Promise<Transfer> {
  const path = join(dir, "socat.sock");
  await rm(path, { force: true });
  const buffer = ["-b", String(SOCAT_BUFFER_BYTES)];
  const before = procCpu("self");
  const selfBefore = process.cpuUsage();
  const server = spawn(
    "socat",
    [...buffer, `UNIX-LISTEN:${path}`, `EXEC:head -c ${bytes} /dev/zero${pipes ? ",pipes" : ""}`],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let serverErr = "";
  server.stderr?.setEncoding("utf8").on("data", (text: string) => {
    serverErr += text;
  });
  const served = new Promise<number | null>((resolve) => server.once("close", resolve));
  const deadline = now() + 5_000;
  while (!existsSync(path)) {
    if (server.exitCode !== null || now() > deadline) {
      server.kill("SIGKILL");
      throw new Error(`socat did not listen on ${path}: ${serverErr.trim() || "no message"}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const done = await runIntoPipe(fifo, "socat", [
    ...buffer,
    "-u",
    `UNIX-CONNECT:${path}`,
    "STDOUT",
  ]);
  const serverCode = await served;
  const self = process.cpuUsage(selfBefore);
  const children = cpuDelta(before, procCpu("self"));
  expectSuccess("socat chain", done, bytes);
  if (serverCode !== 0) throw new CorrectnessError(`socat (head's end) exited ${serverCode}`);
  return {
    mbps: bytes / MB / (done.ms / 1000),
    streamingMbps: bytes / MB / ((done.ms - done.firstByteMs) / 1000),
    cpu: {
      "socat x2 and head": totalCpu(children, true),
      "bench (reader)": (self.user + self.system) / 1e6,
    },
  };
}

type SocatCase = "socatPipes" | "socatPair";
type StreamCase = "cli" | "cliBigWrites" | "library" | "socket" | "pipe" | SocatCase;
type Run = (bytes: number) => Promise<Transfer>;

/** The cases, socat's only when it is installed. */
type StreamCases = Record<Exclude<StreamCase, SocatCase>, Run> & Partial<Record<SocatCase, Run>>;
type Streams = Record<Exclude<StreamCase, SocatCase>, StreamFigures> &
  Partial<Record<SocatCase, StreamFigures>>;

interface StreamFigures {
  mbps: number;
  streamingMbps: number;
  runs: number[];
  /** Median CPU seconds per process over the timed runs. */
  cpu: Record<string, number>;
}

async function measureStreams(cases: StreamCases, cfg: Config): Promise<Streams> {
  const runs = Object.entries(cases) as [StreamCase, Run][];
  for (const [, run] of runs) await run(cfg.warmupStreamBytes);
  const samples = new Map<StreamCase, Transfer[]>(runs.map(([name]) => [name, []]));
  for (let turn = 0; turn < cfg.streamRuns; turn++) {
    for (const [name, run] of runs) samples.get(name)?.push(await run(cfg.streamBytes));
  }
  const out = {} as Streams;
  for (const [name] of runs) {
    const all = samples.get(name) ?? [];
    const cpu: Record<string, number> = {};
    for (const key of Object.keys(all[0]?.cpu ?? {})) {
      cpu[key] = median(all.map((t) => t.cpu[key] ?? Number.NaN));
    }
    out[name] = {
      mbps: median(all.map((t) => t.mbps)),
      streamingMbps: median(all.map((t) => t.streamingMbps)),
      runs: all.map((t) => round(t.mbps)),
      cpu,
    };
  }
  return out;
}

// ---- 2: exec -- true ---------------------------------------------------------------------

/** A writable that takes everything and keeps nothing. */
function sink(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}

function libraryExecTrue(lib: Lib, session: Session): () => Promise<void> {
  const io = { stdout: sink(), stderr: sink() };
  return async () => {
    const result: ExecResult = await lib.remoteExec(session, { argv: ["true"] }, io);
    if (result.status !== 0 || result.reason !== "exited") {
      throw new CorrectnessError(`exec true: ${JSON.stringify(result)}`);
    }
  };
}

function pingCall(session: Session): () => Promise<void> {
  let seq = 0;
  return async () => {
    const mine = seq++;
    const back = (await session.call("ping", { seq: mine })) as { seq?: unknown } | null;
    if (back?.seq !== mine) throw new CorrectnessError(`ping ${mine}: got ${JSON.stringify(back)}`);
  };
}

/**
 * The baseline for exec's latency, run by plain `node` (no tsx), so that the process forking is
 * about the agent's size: libuv forks, and a fork costs more the more memory the parent maps.
 * Each line "N" on stdin spawns `true` N times as the agent does (three pipes, its own process
 * group, waiting until all are closed) and answers with the durations (ms) as a JSON array.
 */
const SPAWN_LOOP = `import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
const one = () => new Promise((resolve, reject) => {
  const child = spawn("true", [], { stdio: ["pipe", "pipe", "pipe"], detached: true });
  child.stdin.end();
  child.stdout.resume();
  child.stderr.resume();
  child.once("error", reject);
  child.once("close", (code) => (code === 0 ? resolve() : reject(new Error("true exited " + code))));
});
process.stdout.write("ready\\n");
for await (const line of createInterface({ input: process.stdin })) {
  const out = [];
  for (let i = 0; i < Number(line); i++) {
    const start = performance.now();
    await one();
    out.push(performance.now() - start);
  }
  process.stdout.write(JSON.stringify({ durations: out, rssBytes: process.memoryUsage().rss }) + "\\n");
}
`;

/** A plain-node process spawning `true` on request (see SPAWN_LOOP). */
class SpawnLoop {
  readonly #child: ChildProcess;
  readonly #lines: AsyncIterator<string>;
  rssBytes = Number.NaN;

  private constructor(child: ChildProcess) {
    this.#child = child;
    this.#lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[
      Symbol.asyncIterator
    ]();
  }

  static async start(script: string): Promise<SpawnLoop> {
    const child = spawn(process.execPath, [script], { stdio: ["pipe", "pipe", "inherit"] });
    const loop = new SpawnLoop(child);
    const first = await loop.#lines.next();
    if (first.done || first.value !== "ready") throw new Error("the spawn loop did not start");
    return loop;
  }

  async run(count: number): Promise<number[]> {
    this.#child.stdin?.write(`${count}\n`);
    const line = await this.#lines.next();
    if (line.done) throw new Error("the spawn loop exited");
    const { durations, rssBytes } = JSON.parse(line.value) as {
      durations: number[];
      rssBytes: number;
    };
    this.rssBytes = rssBytes;
    return durations;
  }

  async stop(): Promise<void> {
    const exited = new Promise((resolve) => this.#child.once("exit", resolve));
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.stdin?.end();
      await exited;
    }
  }
}

/**
 * Durations (ms) of each case, the cases taking turns in blocks of `block`; a case is either an
 * operation timed here or a function that runs `count` of them and returns their durations.
 */
async function interleaved<K extends string>(
  cases: Record<K, (() => Promise<void>) | { batch: (count: number) => Promise<number[]> }>,
  samples: number,
  warmup: number,
  block: number,
): Promise<Record<K, number[]>> {
  const names = Object.keys(cases) as K[];
  const run = (name: K, count: number): Promise<number[]> => {
    const c = cases[name];
    return typeof c === "function" ? sampleDurations(count, c, 0) : c.batch(count);
  };
  for (const name of names) await run(name, warmup);
  const out = new Map<K, number[]>(names.map((name) => [name, []]));
  for (let done = 0; done < samples; done += block) {
    for (const name of names) {
      out.get(name)?.push(...(await run(name, Math.min(block, samples - done))));
    }
  }
  return Object.fromEntries(names.map((name) => [name, out.get(name) ?? []])) as Record<
    K,
    number[]
  >;
}

async function timedRun(what: string, file: string, args: readonly string[]): Promise<void> {
  const done = await runCounted(file, args, { keepStdout: true });
  expectSuccess(what, done);
}

// ---- 3: get and put ----------------------------------------------------------------------

async function makeRandomFile(path: string, bytes: number): Promise<void> {
  const handle = await open(path, "w");
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn("head", ["-c", String(bytes), "/dev/urandom"], {
        stdio: ["ignore", handle.fd, "inherit"],
      });
      child.once("error", reject);
      child.once("close", (code) =>
        code === 0 ? resolve() : reject(new Error(`head /dev/urandom exited ${code}`)),
      );
    });
  } finally {
    await handle.close();
  }
  const size = (await stat(path)).size;
  if (size !== bytes) throw new Error(`${path}: made ${size} bytes, wanted ${bytes}`);
}

type FileCase = "get" | "put" | "cp" | "cpSync" | "streamed";

async function measureFiles(
  agent: Agent,
  source: string,
  dir: string,
  cfg: Config,
): Promise<Record<FileCase, { mbps: number; runs: number[] }>> {
  const bytes = cfg.fileBytes;
  const target = join(dir, "copy.bin");
  const cases: Record<FileCase, () => Promise<void>> = {
    get: () =>
      timedRun("guestlink get", process.execPath, [
        shipped.bin,
        "get",
        agent.address,
        source,
        target,
      ]),
    put: () =>
      timedRun("guestlink put", process.execPath, [
        shipped.bin,
        "put",
        agent.address,
        source,
        target,
      ]),
    cp: () => timedRun("cp", "cp", [source, target]),
    cpSync: async () => {
      await timedRun("cp", "cp", [source, target]);
      await timedRun("sync", "sync", [target]);
    },
    // Through a pipe between two processes, written with fsync: what a streamed copy costs.
    streamed: () =>
      timedRun("cat | dd", "sh", [
        "-c",
        'cat -- "$1" | dd of="$2" bs=1M iflag=fullblock conv=fsync status=none',
        "sh",
        source,
        target,
      ]),
  };
  const names = Object.keys(cases) as FileCase[];
  const samples = new Map<FileCase, number[]>(names.map((name) => [name, []]));
  for (let run = 0; run < cfg.fileRuns; run++) {
    for (const name of names) {
      const start = now();
      await cases[name]();
      const ms = now() - start;
      const size = (await stat(target)).size;
      // Removing the copy drops its page cache (dirty or not) before the next case.
      await rm(target, { force: true });
      if (size !== bytes) throw new CorrectnessError(`${name}: copied ${size} bytes of ${bytes}`);
      samples.get(name)?.push(bytes / MB / (ms / 1000));
    }
  }
  return Object.fromEntries(
    names.map((name) => {
      const all = samples.get(name) ?? [];
      return [name, { mbps: median(all), runs: all.map((r) => round(r)) }];
    }),
  ) as Record<FileCase, { mbps: number; runs: number[] }>;
}

// ---- 4: peak RSS ---------------------------------------------------------------------------

interface Rss {
  agentIdle: number;
  agentPeak: number;
  cliSmall: number;
  cliPeak: number;
}

async function measureRss(
  path: string,
  files: { hook: string; fifo: string },
  dir: string,
  cfg: Config,
): Promise<Rss> {
  const { hook, fifo } = files;
  const agent = await Agent.start(path);
  try {
    const usageFile = join(dir, "rss-usage.json");
    const env = { ...process.env, GUESTLINK_BENCH_USAGE: usageFile };
    // A first, tiny exec, so the idle figure includes loading exec's code.
    const small = await runCounted(
      process.execPath,
      cliArgs(hook, ["exec", agent.address, "--", "true"]),
      { env },
    );
    expectSuccess("guestlink exec true", small);
    const cliSmall = (await readUsage(usageFile)).maxRssBytes;
    const agentIdle = peakRss(agent.pid) ?? Number.NaN;
    const big = await runIntoPipe(
      fifo,
      process.execPath,
      cliArgs(hook, ["exec", agent.address, "--", "head", "-c", String(cfg.rssBytes), "/dev/zero"]),
      env,
    );
    expectSuccess("guestlink exec head (RSS)", big, cfg.rssBytes);
    const cliPeak = (await readUsage(usageFile)).maxRssBytes;
    const agentPeak = peakRss(agent.pid) ?? Number.NaN;
    return { agentIdle, agentPeak, cliSmall, cliPeak };
  } finally {
    await agent.stop();
  }
}

// ---- 5: beside qemu-guest-agent -----------------------------------------------------------

/** One output size through both: median ms until the whole output was in hand. */
interface QgaOutput {
  bytes: number;
  guestlinkMs: number;
  /** MB/s of each timed run. */
  guestlinkRuns: number[];
  /** qemu-ga's figures, or why there are none (`na`). */
  qemuGa: { ms: number; runs: number[]; polls: number } | { na: string };
}

/** The comparison with qemu-ga, or the one line saying why there is none. */
type QgaMeasured =
  | { skipped: string }
  | {
      binary: string;
      version: string;
      call: { guestlink: Summary; qemuGa: Summary; polls: number };
      outputs: QgaOutput[];
    };

/** A running qemu-ga with its socket and state in `dir`, or the line saying why there is none. */
async function startQemuGa(dir: string): Promise<QemuGa | string> {
  const binary = findQemuGa();
  if (!binary) {
    return "qemu-ga: not installed (not on PATH, /usr/sbin, /usr/local/sbin or /sbin), so exec is not compared with qemu-guest-agent";
  }
  await mkdir(dir);
  try {
    return await QemuGa.start(binary, dir);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return `qemu-ga: could not be started, so exec is not compared with it: ${why}`;
  }
}

function qemuGaExecTrue(ga: QemuGa, polls: number[]): () => Promise<void> {
  return async () => {
    const result = await ga.exec("true", []);
    if (result.exitcode !== 0) {
      const how = result.exitcode ?? `killed by signal ${result.signal}`;
      const err = result.err.toString("utf8").trim();
      throw new QemuGaError(`guest-exec true: exit ${how}${err ? `; stderr: ${err}` : ""}`);
    }
    polls.push(result.polls);
  };
}

/** Runs `argv` through the library, its stdout collected into one Buffer. */
async function libraryExecOutput(lib: Lib, session: Session, argv: string[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const stdout = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  const result = await lib.remoteExec(session, { argv }, { stdout, stderr: sink() });
  if (result.status !== 0 || result.reason !== "exited") {
    throw new CorrectnessError(`exec ${argv.join(" ")}: ${JSON.stringify(result)}`);
  }
  return Buffer.concat(chunks);
}

/** Whether `output` is `bytes` zero bytes (`zeros` is at least that long). */
function allZeros(output: Buffer, bytes: number, zeros: Buffer): boolean {
  return output.length === bytes && output.equals(zeros.subarray(0, bytes));
}

async function measureQemuGa(
  lib: Lib,
  session: Session,
  ga: QemuGa,
  cfg: Config,
): Promise<QgaMeasured> {
  const polls: number[] = [];
  const call = await interleaved(
    { guestlink: libraryExecTrue(lib, session), qemuGa: qemuGaExecTrue(ga, polls) },
    cfg.qgaCallSamples,
    cfg.callWarmup,
    LATENCY_BLOCK,
  );
  const zeros = Buffer.alloc(Math.max(...cfg.qgaOutputs.map((o) => o.bytes)));
  const outputs: QgaOutput[] = [];
  for (const { bytes, runs } of cfg.qgaOutputs) {
    const argv = ["head", "-c", String(bytes), "/dev/zero"];
    const viaGuestlink = async (): Promise<number> => {
      const start = now();
      const output = await libraryExecOutput(lib, session, argv);
      const ms = now() - start;
      if (!allZeros(output, bytes, zeros)) {
        throw new CorrectnessError(`exec ${argv.join(" ")}: got ${output.length} bytes, not zeros`);
      }
      return ms;
    };
    const viaQemuGa = async () => {
      const start = now();
      const result = await ga.exec("head", argv.slice(1));
      const ms = now() - start;
      if (result.exitcode !== 0) {
        throw new QemuGaError(`guest-exec ${argv.join(" ")}: exit ${result.exitcode}`);
      }
      return { ms, result };
    };
    // One untimed run each first; it also shows whether qemu-ga hands over the whole output.
    await viaGuestlink();
    const first = (await viaQemuGa()).result;
    let na: string | undefined;
    if (first.outTruncated) {
      na = `qemu-ga returned ${formatNumber(first.out.length)} of ${formatNumber(bytes)} bytes with out-truncated: true (guest-exec keeps at most 16 MiB of a command's output)`;
    } else if (!allZeros(first.out, bytes, zeros)) {
      throw new QemuGaError(
        `guest-exec ${argv.join(" ")}: returned ${first.out.length} bytes (not truncated, it says), not ${bytes} zeros`,
      );
    }
    const glMs: number[] = [];
    const qgMs: number[] = [];
    const qgPolls: number[] = [];
    for (let run = 0; run < runs; run++) {
      glMs.push(await viaGuestlink());
      if (na !== undefined) continue;
      const { ms, result } = await viaQemuGa();
      if (result.outTruncated || !allZeros(result.out, bytes, zeros)) {
        throw new QemuGaError(
          `guest-exec ${argv.join(" ")}: returned ${result.out.length} bytes${result.outTruncated ? " (truncated)" : ""}, not ${bytes} zeros, after it returned them all once`,
        );
      }
      qgMs.push(ms);
      qgPolls.push(result.polls);
    }
    const mbps = (ms: number) => round(bytes / MB / (ms / 1000));
    outputs.push({
      bytes,
      guestlinkMs: median(glMs),
      guestlinkRuns: glMs.map(mbps),
      qemuGa:
        na !== undefined
          ? { na }
          : { ms: median(qgMs), runs: qgMs.map(mbps), polls: median(qgPolls) },
    });
  }
  return {
    binary: ga.binary,
    version: ga.version,
    call: {
      guestlink: summarize(call.guestlink),
      qemuGa: summarize(call.qemuGa),
      // The first `callWarmup` were the untimed calls.
      polls: median(polls.slice(cfg.callWarmup)),
    },
    outputs,
  };
}

// ---- 6: exec true by the agent's size and its spawner -----------------------------------

/** MiB of buffers a grown agent keeps, written to (so resident), as a busy agent might hold. */
const BALLAST_MIB = 200;
/** Loaded into a grown agent with `node --import`. */
const BALLAST_HOOK = `const keep = [];
for (let i = 0; i < ${BALLAST_MIB}; i++) keep.push(Buffer.alloc(1 << 20, i & 255));
globalThis.guestlinkBenchBallast = keep;
`;

/** One agent of the comparison: its spawner, its size, its figures. */
interface SpawnCase {
  label: string;
  summary: Summary;
  rssBytes: number;
}

interface SpawnCost {
  cases: SpawnCase[];
  /** qemu-ga's exec true in the same blocks, when it runs. */
  qemuGa: Summary | undefined;
}

/**
 * `exec true` through the library against four agents taking turns (and qemu-ga, when it runs):
 * the spawner the agent picks (the native addon's posix_spawn when it loads) and node's
 * child_process (`GUESTLINK_SPAWN_ADDON=off`), each in an agent as started and in one holding
 * BALLAST_MIB MiB more. fork() copies the page tables of everything mapped, so its cost grows
 * with the agent; posix_spawn (clone with CLONE_VM|CLONE_VFORK) copies none.
 */
async function measureSpawnCost(
  lib: Lib,
  res: Resources,
  dir: string,
  main: { agent: Agent; session: Session },
  ga: QemuGa | undefined,
  cfg: Config,
): Promise<SpawnCost> {
  const ballast = join(dir, "ballast.mjs");
  await writeFile(ballast, BALLAST_HOOK);
  const off = { GUESTLINK_SPAWN_ADDON: "off" };
  const specs: { key: string; label: string; options?: AgentOptions }[] = [
    { key: "default", label: "agent's own spawner" },
    {
      key: "defaultGrown",
      label: `agent's own spawner, +${BALLAST_MIB} MiB`,
      options: { preload: ballast },
    },
    { key: "node", label: "child_process (addon off)", options: { env: off } },
    {
      key: "nodeGrown",
      label: `child_process (addon off), +${BALLAST_MIB} MiB`,
      options: { preload: ballast, env: off },
    },
  ];
  const agents = new Map<string, { agent: Agent; session: Session }>();
  for (const spec of specs) {
    if (spec.options === undefined) {
      agents.set(spec.key, main);
      continue;
    }
    const agent = await res.agent(join(dir, `spawn-${spec.key}.sock`), spec.options);
    const session = await lib.openSession(agent.address);
    res.add(() => session.close());
    agents.set(spec.key, { agent, session });
  }
  const cases: Record<string, (() => Promise<void>) | { batch: (n: number) => Promise<number[]> }> =
    {};
  for (const [key, { session }] of agents) cases[key] = libraryExecTrue(lib, session);
  const polls: number[] = [];
  if (ga !== undefined) cases.qemuGa = qemuGaExecTrue(ga, polls);
  const samples = await interleaved(cases, cfg.qgaCallSamples, cfg.callWarmup, LATENCY_BLOCK);
  const out: SpawnCase[] = specs.map((spec) => {
    const one = agents.get(spec.key);
    return {
      label: spec.label,
      summary: summarize(samples[spec.key] ?? []),
      rssBytes: one ? (procMemory(one.agent.pid, "VmRSS") ?? Number.NaN) : Number.NaN,
    };
  });
  for (const [key, { agent, session }] of agents) {
    if (key === "default") continue;
    await session.close();
    await agent.stop();
  }
  return { cases: out, qemuGa: samples.qemuGa ? summarize(samples.qemuGa) : undefined };
}

function spawnCostReport(m: SpawnCost): { text: string[]; figures: Record<string, unknown> } {
  const f3 = (n: number) => formatNumber(n, 3);
  const qg = m.qemuGa;
  const rows = m.cases.map((c) => [
    c.label,
    f3(c.summary.median),
    f3(c.summary.p90),
    mib(c.rssBytes),
    qg ? formatNumber(c.summary.median / qg.median, 2) : "n/a",
  ]);
  if (qg) rows.push(["qemu-ga guest-exec + status polling", f3(qg.median), f3(qg.p90), "", "1.00"]);
  const text = [
    `exec true by the agent's spawner and size: ${m.cases[0]?.summary.n ?? 0} calls each through remoteExec, one session per agent,` +
      ` taking turns in blocks of ${LATENCY_BLOCK}${qg ? " with qemu-ga" : " (qemu-ga not running: no column)"}; +${BALLAST_MIB} MiB: an agent started with that much in`,
    "buffers it keeps (node --import), as a busy agent may hold; RSS is the agent's VmRSS after the calls.",
    "",
    table(["agent", "median ms", "p90 ms", "agent RSS MiB", "median / qemu-ga"], rows),
  ];
  const figures = {
    ballastMiB: BALLAST_MIB,
    cases: m.cases.map((c) => ({
      agent: c.label,
      ...msFigures(c.summary),
      agentRssMiB: round(c.rssBytes / MiB, 1),
      ...(qg ? { ratioQemuGaMedian: round(c.summary.median / qg.median, 3) } : {}),
    })),
    ...(qg ? { qemuGa: msFigures(qg) } : {}),
  };
  return { text, figures };
}

// ---- running -------------------------------------------------------------------------------

interface Measured {
  streams: Streams;
  /** Why the socat chain was not measured, when it was not. */
  socatSkipped?: string;
  call: {
    guestlink: Summary;
    spawn: Summary;
    ping: Summary;
    spawnerRssBytes: number;
    agentRssBytes: number;
  };
  cli: { exec: Summary; node: Summary; version: Summary; help: Summary };
  files: Record<FileCase, { mbps: number; runs: number[] }>;
  rss: Rss;
  qemuGa: QgaMeasured;
  spawnCost: SpawnCost;
  notes: string[];
  loadAtEnd: number;
}

export async function run(opts: BenchOptions): Promise<BenchReport> {
  const cfg = opts.quick ? QUICK : FULL;
  const notes: string[] = [];
  const stale = await staleBuildNote();
  if (stale) notes.push(stale);
  const dir = await mkdtemp(join(os.tmpdir(), "guestlink-exec-bench-"));
  const res = new Resources();
  res.add(() => rm(dir, { recursive: true, force: true }));
  try {
    await snapshotCli(dir);
    const lib = await loadDist();
    const hook = join(dir, "usage-hook.mjs");
    await writeFile(hook, USAGE_HOOK);
    const usageFile = join(dir, "usage.json");
    const fifo = join(dir, "stdout.fifo");
    await mkfifo(fifo);
    const agent = await res.agent(join(dir, "agent.sock"));
    const rawPath = join(dir, "raw.sock");
    const helper = await res.helper("bench/session-server.ts", [`raw:${rawPath}`]);

    // ---- 1: streaming ----
    const socatSkipped = socatMissing();
    const session = await lib.openSession(agent.address);
    res.add(() => session.close());
    const streams = await measureStreams(
      {
        cli: (bytes) => cliExecStream(agent, { hook, usage: usageFile, fifo }, bytes),
        cliBigWrites: (bytes) =>
          cliExecStream(agent, { hook, usage: usageFile, fifo }, bytes, true),
        library: (bytes) => libraryExecStream(lib, session, agent, bytes),
        socket: (bytes) => rawSocketStream(rawPath, helper.pid, bytes),
        pipe: (bytes) => localPipeStream(fifo, bytes),
        ...(socatSkipped === undefined && {
          socatPipes: (bytes: number) => socatStream(dir, fifo, bytes, true),
          socatPair: (bytes: number) => socatStream(dir, fifo, bytes, false),
        }),
      },
      cfg,
    );

    // ---- 2a/2c: exec true per call, through the library, against a local spawn ----
    const spawnScript = join(dir, "spawn-loop.mjs");
    await writeFile(spawnScript, SPAWN_LOOP);
    const spawnLoop = await SpawnLoop.start(spawnScript);
    res.add(() => spawnLoop.stop());
    const callSamples = await interleaved(
      {
        guestlink: libraryExecTrue(lib, session),
        spawn: { batch: (n) => spawnLoop.run(n) },
        ping: pingCall(session),
      },
      cfg.callSamples,
      cfg.callWarmup,
      LATENCY_BLOCK,
    );
    await spawnLoop.stop();

    // ---- 5: beside qemu-guest-agent, on the same session, when it is installed ----
    const ga = await startQemuGa(join(dir, "qemu-ga"));
    let qemuGa: QgaMeasured;
    if (typeof ga === "string") qemuGa = { skipped: ga };
    else {
      res.add(() => ga.stop());
      qemuGa = await measureQemuGa(lib, session, ga, cfg);
    }

    // ---- 6: exec true by the agent's spawner and size, beside qemu-ga ----
    const spawnCost = await measureSpawnCost(
      lib,
      res,
      dir,
      { agent, session },
      typeof ga === "string" ? undefined : ga,
      cfg,
    );
    if (typeof ga !== "string") await ga.stop();
    await session.close();

    // ---- 2b: the whole CLI invocation ----
    const cliSamples = await interleaved(
      {
        exec: () =>
          timedRun("guestlink exec true", process.execPath, [
            shipped.bin,
            "exec",
            agent.address,
            "--",
            "true",
          ]),
        node: () => timedRun("node -e 0", process.execPath, ["-e", "0"]),
        version: () =>
          timedRun("guestlink --version", process.execPath, [shipped.bin, "--version"]),
        help: () => timedRun("guestlink --help", process.execPath, [shipped.bin, "--help"]),
      },
      cfg.cliRuns,
      2,
      1,
    );

    // ---- 3: get and put ----
    const source = join(dir, "random.bin");
    await makeRandomFile(source, cfg.fileBytes);
    const files = await measureFiles(agent, source, dir, cfg);
    await rm(source, { force: true });

    // ---- 4: peak RSS, with a fresh agent ----
    const rss = await measureRss(join(dir, "rss-agent.sock"), { hook, fifo }, dir, cfg);

    return report(opts, cfg, {
      streams,
      socatSkipped,
      call: {
        guestlink: summarize(callSamples.guestlink),
        spawn: summarize(callSamples.spawn),
        ping: summarize(callSamples.ping),
        spawnerRssBytes: spawnLoop.rssBytes,
        agentRssBytes: procMemory(agent.pid, "VmRSS") ?? Number.NaN,
      },
      cli: {
        exec: summarize(cliSamples.exec),
        node: summarize(cliSamples.node),
        version: summarize(cliSamples.version),
        help: summarize(cliSamples.help),
      },
      files,
      rss,
      qemuGa,
      spawnCost,
      notes,
      loadAtEnd: os.loadavg()[0] ?? 0,
    });
  } finally {
    await res.release();
  }
}

// ---- the report ----------------------------------------------------------------------------

function sizeLabel(bytes: number): string {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`;
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB} MiB`;
  return `${bytes / KiB} KiB`;
}

const mib = (bytes: number): string => formatNumber(bytes / MiB, 1);

function msFigures(s: Summary): Record<string, number> {
  return {
    n: s.n,
    minMs: round(s.min, 3),
    medianMs: round(s.median, 3),
    p90Ms: round(s.p90, 3),
    p99Ms: round(s.p99, 3),
    maxMs: round(s.max, 3),
  };
}

/** The section beside qemu-ga: its lines of text and its figures. */
function qemuGaReport(m: QgaMeasured): { text: string[]; figures: Record<string, unknown> } {
  if ("skipped" in m) return { text: [m.skipped], figures: { skipped: m.skipped } };
  const f2 = (n: number) => formatNumber(n, 2);
  const f3 = (n: number) => formatNumber(n, 3);
  const { call, outputs } = m;
  const rows: string[][] = (["median", "p90", "p99"] as const).map((stat) => [
    `exec true, ${stat}`,
    f3(call.guestlink[stat]),
    f3(call.qemuGa[stat]),
    "ms",
    f2(call.guestlink[stat] / call.qemuGa[stat]),
  ]);
  const naLines: string[] = [];
  for (const o of outputs) {
    const glMbps = o.bytes / MB / (o.guestlinkMs / 1000);
    const label = `exec head -c ${sizeLabel(o.bytes)} /dev/zero, output in hand`;
    if ("na" in o.qemuGa) {
      rows.push([label, formatNumber(glMbps), "n/a", "MB/s", "n/a"]);
      naLines.push(`n/a at ${sizeLabel(o.bytes)}: ${o.qemuGa.na}.`);
    } else {
      const qgMbps = o.bytes / MB / (o.qemuGa.ms / 1000);
      rows.push([label, formatNumber(glMbps), formatNumber(qgMbps), "MB/s", f2(glMbps / qgMbps)]);
    }
  }
  const runs = outputs
    .map((o) => {
      const qg = "na" in o.qemuGa ? "n/a" : o.qemuGa.runs.join(" ");
      const polls = "na" in o.qemuGa ? "" : `, ${formatNumber(o.qemuGa.polls)} polls`;
      return `${sizeLabel(o.bytes)}: guestlink ${o.guestlinkRuns.join(" ")}; qemu-ga ${qg}${polls}`;
    })
    .join("; ");
  const text = [
    `beside qemu-guest-agent ${m.version} (${m.binary} -m unix-listen on a temporary Unix socket), the same commands, taking turns:`,
    "",
    table(["figure", "guestlink", "qemu-ga", "unit", "guestlink/qemu-ga"], rows),
    "",
    "The ratio is guestlink / qemu-ga: for ms lower is better (below 1, guestlink is faster); for MB/s higher is better",
    "(above 1, guestlink is faster).",
    `exec true: ${call.guestlink.n} calls each, in blocks of ${LATENCY_BLOCK}; guestlink through remoteExec on the session above, qemu-ga one` +
      ` guest-exec, then guest-exec-status polled back to back (no sleep) until exited: a median of ${formatNumber(call.polls, 1)} polls per call.`,
    `output: median of ${outputs.map((o) => `${o.guestlinkRuns.length} (${sizeLabel(o.bytes)})`).join(", ")} runs after one untimed run each,` +
      ` from the request until the whole output is one Buffer (guestlink: remoteExec's stdout collected; qemu-ga: out-data`,
    `decoded from base64; polled as above). MB/s per run: ${runs}.`,
    ...naLines,
  ];
  const figures = {
    binary: m.binary,
    version: m.version,
    ratio: "guestlink / qemu-ga",
    execTrue: {
      guestlink: msFigures(call.guestlink),
      qemuGa: msFigures(call.qemuGa),
      ratioMedian: round(call.guestlink.median / call.qemuGa.median, 3),
      qemuGaPollsMedian: call.polls,
    },
    output: outputs.map((o) => {
      const glMbps = o.bytes / MB / (o.guestlinkMs / 1000);
      const base = { bytes: o.bytes, guestlinkMbps: round(glMbps), guestlinkRuns: o.guestlinkRuns };
      if ("na" in o.qemuGa)
        return { ...base, qemuGaMbps: null, ratio: null, qemuGaNa: o.qemuGa.na };
      const qgMbps = o.bytes / MB / (o.qemuGa.ms / 1000);
      return {
        ...base,
        qemuGaMbps: round(qgMbps),
        qemuGaRuns: o.qemuGa.runs,
        qemuGaPolls: o.qemuGa.polls,
        ratio: round(glMbps / qgMbps, 3),
      };
    }),
  };
  return { text, figures };
}

/** The CLI beside the socat chain of the same shape, and of socat's default shape. */
function socatRows(streams: Streams, skipped: string | undefined): string[][] {
  const cli = streams.cli.mbps;
  const { socatPipes, socatPair } = streams;
  if (socatPipes === undefined || socatPair === undefined) {
    return [
      [
        "  same, vs the socat chain",
        formatNumber(cli),
        "n/a",
        "MB/s",
        "",
        `skipped: ${skipped}`,
        "",
      ],
    ];
  }
  const pipesRatio = cli / socatPipes.mbps;
  return [
    [
      "  same, vs socat | reader (head on pipes, as the agent)",
      formatNumber(cli),
      formatNumber(socatPipes.mbps),
      "MB/s",
      formatNumber(pipesRatio, 2),
      `>= ${AIM_SOCAT_RATIO}x`,
      verdict(pipesRatio, AIM_SOCAT_RATIO),
    ],
    [
      "  same, vs socat | reader (head on a socketpair)",
      formatNumber(cli),
      formatNumber(socatPair.mbps),
      "MB/s",
      formatNumber(cli / socatPair.mbps, 2),
      "",
      "(info)",
    ],
  ];
}

function report(opts: BenchOptions, cfg: Config, m: Measured): BenchReport {
  const { streams, call, cli, files, rss } = m;
  const cliMbps = streams.cli.mbps;
  const socketRatio = cliMbps / streams.socket.mbps;
  const pipeRatio = cliMbps / streams.pipe.mbps;
  const execVerdict =
    verdict(cliMbps, AIM_EXEC_MBPS) === "PASS" && verdict(socketRatio, AIM_EXEC_RATIO) === "PASS"
      ? "PASS"
      : "MISS";
  const callVerdict = verdict(call.guestlink.median, AIM_EXEC_CALL_MS, false);
  const agentRssVerdict = verdict(rss.agentPeak, AIM_RSS_BYTES, false);
  const cliRssVerdict = verdict(rss.cliPeak, AIM_RSS_BYTES, false);
  const streamLabel = sizeLabel(cfg.streamBytes);
  const fileLabel = sizeLabel(cfg.fileBytes);
  const f1 = (n: number) => formatNumber(n, 1);
  const f2 = (n: number) => formatNumber(n, 2);
  const f3 = (n: number) => formatNumber(n, 3);

  const rows: string[][] = [
    [
      `exec head -c ${streamLabel} via CLI | reader  vs raw socket`,
      formatNumber(cliMbps),
      formatNumber(streams.socket.mbps),
      "MB/s",
      f2(socketRatio),
      `>= ${AIM_EXEC_MBPS} MB/s, >= ${AIM_EXEC_RATIO}x`,
      execVerdict,
    ],
    [
      "  same, vs head | reader (pipe ceiling)",
      formatNumber(cliMbps),
      formatNumber(streams.pipe.mbps),
      "MB/s",
      f2(pipeRatio),
      "",
      "(info)",
    ],
    ...socatRows(streams, m.socatSkipped),
    [
      `exec head -c ${streamLabel} via library into a sink  vs raw socket`,
      formatNumber(streams.library.mbps),
      formatNumber(streams.socket.mbps),
      "MB/s",
      f2(streams.library.mbps / streams.socket.mbps),
      `>= ${AIM_EXEC_MBPS} MB/s`,
      verdict(streams.library.mbps, AIM_EXEC_MBPS),
    ],
    [
      "  same bytes, command writes 1 MiB (dd bs=1M)",
      formatNumber(streams.cliBigWrites.mbps),
      formatNumber(streams.socket.mbps),
      "MB/s",
      f2(streams.cliBigWrites.mbps / streams.socket.mbps),
      "",
      "(info)",
    ],
    [
      "  same (head), first byte to last (start-up excluded)",
      formatNumber(streams.cli.streamingMbps),
      formatNumber(streams.socket.streamingMbps),
      "MB/s",
      f2(streams.cli.streamingMbps / streams.socket.streamingMbps),
      "",
      "(info)",
    ],
  ];
  for (const stat of ["median", "p90", "p99"] as const) {
    rows.push([
      `exec true via library, ${stat}  vs spawn(true)`,
      f3(call.guestlink[stat]),
      f3(call.spawn[stat]),
      "ms",
      f2(call.guestlink[stat] / call.spawn[stat]),
      stat === "median" ? `< ${AIM_EXEC_CALL_MS} ms` : "",
      stat === "median" ? callVerdict : "(info)",
    ]);
  }
  rows.push([
    "  ping call, median  vs spawn(true)",
    f3(call.ping.median),
    f3(call.spawn.median),
    "ms",
    f2(call.ping.median / call.spawn.median),
    "",
    "(info)",
  ]);
  for (const stat of ["median", "p90"] as const) {
    rows.push([
      `guestlink exec -- true (CLI), ${stat}  vs node -e 0`,
      f1(cli.exec[stat]),
      f1(cli.node[stat]),
      "ms",
      f2(cli.exec[stat] / cli.node[stat]),
      "",
      "(info)",
    ]);
  }
  rows.push(
    [
      "  guestlink --version (bin/guestlink alone), median",
      f1(cli.version.median),
      f1(cli.node.median),
      "ms",
      f2(cli.version.median / cli.node.median),
      "",
      "(info)",
    ],
    [
      "  guestlink --help (load the CLI), median",
      f1(cli.help.median),
      f1(cli.node.median),
      "ms",
      f2(cli.help.median / cli.node.median),
      "",
      "(info)",
    ],
    [
      `get ${fileLabel} via CLI  vs cp`,
      formatNumber(files.get.mbps),
      formatNumber(files.cp.mbps),
      "MB/s",
      f2(files.get.mbps / files.cp.mbps),
      "",
      "(info)",
    ],
    [
      "  same, vs cp + sync FILE",
      formatNumber(files.get.mbps),
      formatNumber(files.cpSync.mbps),
      "MB/s",
      f2(files.get.mbps / files.cpSync.mbps),
      "",
      "(info)",
    ],
    [
      "  same, vs cat | dd conv=fsync",
      formatNumber(files.get.mbps),
      formatNumber(files.streamed.mbps),
      "MB/s",
      f2(files.get.mbps / files.streamed.mbps),
      "",
      "(info)",
    ],
    [
      `put ${fileLabel} via CLI  vs cp`,
      formatNumber(files.put.mbps),
      formatNumber(files.cp.mbps),
      "MB/s",
      f2(files.put.mbps / files.cp.mbps),
      "",
      "(info)",
    ],
    [
      "  same, vs cp + sync FILE",
      formatNumber(files.put.mbps),
      formatNumber(files.cpSync.mbps),
      "MB/s",
      f2(files.put.mbps / files.cpSync.mbps),
      "",
      "(info)",
    ],
    [
      "  same, vs cat | dd conv=fsync",
      formatNumber(files.put.mbps),
      formatNumber(files.streamed.mbps),
      "MB/s",
      f2(files.put.mbps / files.streamed.mbps),
      "",
      "(info)",
    ],
    [
      `peak RSS, agent, exec of ${sizeLabel(cfg.rssBytes)}  vs idle`,
      mib(rss.agentPeak),
      mib(rss.agentIdle),
      "MiB",
      f2(rss.agentPeak / rss.agentIdle),
      `< ${AIM_RSS_BYTES / MiB} MiB`,
      agentRssVerdict,
    ],
    [
      `peak RSS, CLI, exec of ${sizeLabel(cfg.rssBytes)}  vs exec true`,
      mib(rss.cliPeak),
      mib(rss.cliSmall),
      "MiB",
      f2(rss.cliPeak / rss.cliSmall),
      `< ${AIM_RSS_BYTES / MiB} MiB`,
      cliRssVerdict,
    ],
  );

  const cpuRows: string[][] = [];
  const cpuCase = (label: string, s: StreamFigures) => {
    const total = Object.values(s.cpu).reduce((a, b) => a + b, 0);
    const seconds = cfg.streamBytes / MB / s.mbps;
    for (const [process, cpu] of Object.entries(s.cpu)) {
      cpuRows.push([
        `${label}: ${process}`,
        f2(cpu),
        formatNumber((cpu / seconds) * 100),
        formatNumber((cpu / (cfg.streamBytes / GiB)) * 1000),
      ]);
    }
    cpuRows.push([
      `${label}: total (wall ${f2(seconds)} s)`,
      f2(total),
      formatNumber((total / seconds) * 100),
      formatNumber((total / (cfg.streamBytes / GiB)) * 1000),
    ]);
  };
  cpuCase("CLI exec", streams.cli);
  cpuCase("CLI exec dd bs=1M", streams.cliBigWrites);
  cpuCase("library exec", streams.library);
  cpuCase("raw socket", streams.socket);
  cpuCase("local pipe", streams.pipe);
  if (streams.socatPipes) cpuCase("socat, pipes", streams.socatPipes);
  if (streams.socatPair) cpuCase("socat, socketpair", streams.socatPair);

  const cpus = os.cpus().length;
  const qga = qemuGaReport(m.qemuGa);
  const spawnSection = spawnCostReport(m.spawnCost);
  const text = [
    `exec: the CLI (dist/, node ${process.version}) against an agent process over a Unix socket, baselines in the same run${opts.quick ? "; QUICK: rough figures" : ""}`,
    "",
    table(["figure", "guestlink", "baseline", "unit", "ratio", "aim", "verdict"], rows),
    "",
    `streaming: median of ${cfg.streamRuns} transfers of ${streamLabel} per case, the cases taking turns (MB/s CLI ${streams.cli.runs.join(" ")};` +
      ` dd bs=1M ${streams.cliBigWrites.runs.join(" ")}; library ${streams.library.runs.join(" ")}; raw socket ${streams.socket.runs.join(" ")}; pipe ${streams.pipe.runs.join(" ")}).` +
      " The CLI's rate is from spawn to exit, Node's",
    "start-up included; its stdout is a pipe this process drains and counts. The raw socket: a helper process writes 64 KiB",
    "blocks into a Unix socket, this process counts them. The pipe: `head` writes into a pipe this process counts. The pipes are",
    "real pipes (a FIFO; Node's stdio pipes are socketpairs), as `| wc -c` in a shell gives. The socat chain: `socat -b 131072",
    "UNIX-LISTEN:S EXEC:'head -c N /dev/zero'[,pipes]` and `socat -b 131072 -u UNIX-CONNECT:S STDOUT` into the same pipe: the",
    "agent's and the CLI's jobs with nothing between (no frames, checksums, flow control or exit status); `pipes` talks to head",
    `over real pipes, as the agent does, else over a socketpair (socat's default)${m.socatSkipped ? `; not measured: ${m.socatSkipped}` : ""}` +
      `${streams.socatPipes ? ` (MB/s pipes ${streams.socatPipes.runs.join(" ")}; socketpair ${streams.socatPair?.runs.join(" ")})` : ""}.`,
    "",
    `CPU seconds per process (median of the runs; % of one CPU over the wall time; ${cpus} CPUs):`,
    "",
    table(["process", "CPU s", "% CPU", "CPU ms/GiB"], cpuRows),
    "",
    `exec true via library: ${call.guestlink.n} calls on one session (openSession once), taking turns in blocks of ${LATENCY_BLOCK} with` +
      ` spawn("true") in a plain node process (three pipes, detached, as the agent spawns) and a "ping" call on the same session.`,
    `  exec min ${f3(call.guestlink.min)} ms, max ${f3(call.guestlink.max)} ms. libuv forks, so a spawn costs more the more the parent maps:` +
      ` RSS of the agent ${mib(call.agentRssBytes)} MiB, of the spawning baseline ${mib(call.spawnerRssBytes)} MiB.`,
    `CLI invocation: ${cli.exec.n} runs each, taking turns (median ms: exec ${f1(cli.exec.median)}, node -e 0 ${f1(cli.node.median)},` +
      ` --version ${f1(cli.version.median)}, --help ${f1(cli.help.median)}); node is ${process.execPath} (what bin/guestlink's shebang finds on PATH).`,
    `get/put: median of ${cfg.fileRuns} runs of a ${fileLabel} file of random bytes (in the page cache), the cases taking turns` +
      ` (MB/s get ${files.get.runs.join(" ")}; put ${files.put.runs.join(" ")}; cp ${files.cp.runs.join(" ")};` +
      ` cp+sync ${files.cpSync.runs.join(" ")}; cat|dd ${files.streamed.runs.join(" ")}). guestlink hashes (sha256) on both sides and fsyncs;` +
      " plain cp does neither (and copies in the kernel); `cat | dd bs=1M conv=fsync` streams through a pipe and fsyncs.",
    `peak RSS: a fresh agent's VmHWM (/proc) after one exec of true ("idle") and after ${sizeLabel(cfg.rssBytes)} through exec; the CLI's own maxRSS at exit.`,
    "",
    ...qga.text,
    "",
    ...spawnSection.text,
    "",
    `load average (1 min) when measuring finished: ${formatNumber(m.loadAtEnd, 2)} on ${cpus} CPUs.`,
    ...m.notes,
  ].join("\n");

  const figures: Record<string, unknown> = {
    execStream: {
      bytes: cfg.streamBytes,
      mbps: round(cliMbps),
      streamingMbps: round(streams.cli.streamingMbps),
      rawSocketMbps: round(streams.socket.mbps),
      pipeMbps: round(streams.pipe.mbps),
      bigWritesMbps: round(streams.cliBigWrites.mbps),
      libraryMbps: round(streams.library.mbps),
      ratioRawSocket: round(socketRatio, 3),
      ratioPipe: round(pipeRatio, 3),
      runs: streams.cli.runs,
      rawSocketRuns: streams.socket.runs,
      pipeRuns: streams.pipe.runs,
      socat: streams.socatPipes
        ? {
            pipesMbps: round(streams.socatPipes.mbps),
            socketpairMbps: round(streams.socatPair?.mbps ?? Number.NaN),
            ratioPipes: round(streams.cli.mbps / streams.socatPipes.mbps, 3),
            aimRatio: AIM_SOCAT_RATIO,
            pipesRuns: streams.socatPipes.runs,
            socketpairRuns: streams.socatPair?.runs,
          }
        : { skipped: m.socatSkipped },
      cpuSeconds: Object.fromEntries(
        Object.entries(streams).map(([k, figures]) => [
          k,
          Object.fromEntries(Object.entries(figures.cpu).map(([p, s]) => [p, round(s, 2)])),
        ]),
      ),
      aimMbps: AIM_EXEC_MBPS,
      aimRatio: AIM_EXEC_RATIO,
      pass: execVerdict === "PASS",
    },
    execTrue: {
      library: msFigures(call.guestlink),
      localSpawn: msFigures(call.spawn),
      ping: msFigures(call.ping),
      agentRssMiB: round(call.agentRssBytes / MiB, 1),
      spawnerRssMiB: round(call.spawnerRssBytes / MiB, 1),
      aimMedianMs: AIM_EXEC_CALL_MS,
      pass: callVerdict === "PASS",
      cli: msFigures(cli.exec),
      nodeStartup: msFigures(cli.node),
      cliVersion: msFigures(cli.version),
      cliHelp: msFigures(cli.help),
    },
    files: {
      bytes: cfg.fileBytes,
      getMbps: round(files.get.mbps),
      putMbps: round(files.put.mbps),
      cpMbps: round(files.cp.mbps),
      cpSyncMbps: round(files.cpSync.mbps),
      catDdFsyncMbps: round(files.streamed.mbps),
      runs: Object.fromEntries(Object.entries(files).map(([k, v]) => [k, v.runs])),
    },
    rss: {
      bytes: cfg.rssBytes,
      agentPeakMiB: round(rss.agentPeak / MiB, 1),
      agentIdleMiB: round(rss.agentIdle / MiB, 1),
      cliPeakMiB: round(rss.cliPeak / MiB, 1),
      cliExecTrueMiB: round(rss.cliSmall / MiB, 1),
      aimMiB: AIM_RSS_BYTES / MiB,
      pass: agentRssVerdict === "PASS" && cliRssVerdict === "PASS",
    },
    qemuGa: qga.figures,
    spawnCost: spawnSection.figures,
    loadAverageAtEnd: round(m.loadAtEnd, 2),
    ...(m.notes.length > 0 ? { notes: m.notes } : {}),
  };
  return { text, figures };
}

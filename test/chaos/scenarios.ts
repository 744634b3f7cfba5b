/**
 * The resilience scenarios, shared by the short run in `npm test` (test/chaos/resilience.test.ts)
 * and the long one (`npm run chaos -- --minutes N`, scripts/chaos.ts): a real agent process, the
 * chaos proxy in front of it, and a client (the CLI, or the library) that must ride through.
 * Every scenario takes a seed and names it in what it reports, so a failure replays.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { openSession } from "../../src/platform/session.ts";
import type { Session, SessionEvent } from "../../src/session/session.ts";
import { startCli } from "../helpers/cli.ts";
import { FramePlaces } from "./frames.ts";
import { deriveRandom, randomBytes } from "./prng.ts";
import { type ChaosFaultOptions, type ChaosProxy, startChaosProxy } from "./proxy.ts";

const AGENT = fileURLToPath(new URL("../fixtures/chaos-agent.ts", import.meta.url));

/** The chaos agent in its own process. */
export class AgentProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly ready: Promise<void>;

  constructor(address: string) {
    this.child = spawn(process.execPath, ["--import", "tsx", AGENT, address], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stderr = "";
    this.child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    this.ready = new Promise((resolve, reject) => {
      this.child.stdout.setEncoding("utf8").on("data", (d: string) => {
        if (d.includes("ready")) resolve();
      });
      this.child.once("exit", (code) => reject(new Error(`agent exited ${code}: ${stderr}`)));
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Kills it at once (a crash), and waits until it is gone. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGKILL");
    await gone;
  }

  /** Stops it the polite way (stdin closes). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.stdin.end();
    await gone;
  }
}

/** Samples the resident memory of processes while work runs; keeps the peak of each. */
export class RssSampler {
  readonly peakKiB = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;
  readonly #pids = new Map<string, number>();

  constructor() {
    this.#timer = setInterval(() => this.sample(), 50);
  }

  watch(name: string, pid: number): void {
    this.#pids.set(name, pid);
  }

  sample(): void {
    for (const [name, pid] of this.#pids) {
      try {
        const status = readFileSync(`/proc/${pid}/status`, "utf8");
        const kib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
        this.peakKiB.set(name, Math.max(this.peakKiB.get(name) ?? 0, kib));
      } catch {
        // exited between samples
      }
    }
  }

  stop(): void {
    this.sample();
    clearInterval(this.#timer);
  }
}

export interface ExecFigures {
  seed: number;
  bytes: number;
  sha256: string;
  expectedSha256: string;
  exitCode: number | null;
  stderr: string;
  seconds: number;
  mbPerS: number;
  cuts: number;
  garbageBursts: number;
  /** Bursts that landed inside a DATA frame's payload: the ones a payload checksum must catch. */
  burstsInData: { toAgent: number; toCli: number };
  /** Where every burst landed, in words. */
  burstPlaces: string;
  peakCliMiB: number;
}

const sha = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

/** What `seq 1 N` prints, hashed, computed here. */
export function seqSha256(n: number): { sha256: string; bytes: number } {
  const hash = createHash("sha256");
  let bytes = 0;
  let line = "";
  for (let i = 1; i <= n; i++) {
    line += `${i}\n`;
    if (line.length > 64 * 1024) {
      hash.update(line);
      bytes += line.length;
      line = "";
    }
  }
  hash.update(line);
  bytes += line.length;
  return { sha256: hash.digest("hex"), bytes };
}

/**
 * A chaos proxy in front of the agent, faulting both directions, with every garbage burst placed
 * in the frame stream (frames.ts) so a scenario can tell how many landed inside payloads.
 */
async function proxyToAgent(
  agentAddress: string,
  proxyAt: { path: string },
  seed: number,
  faults: ChaosFaultOptions,
): Promise<{ proxy: ChaosProxy; places: FramePlaces }> {
  const places = new FramePlaces();
  const proxy = await startChaosProxy({
    listen: proxyAt,
    target: { path: agentAddress.slice("unix:".length) },
    seed,
    faults,
    direction: "both",
    onForward: places.forwarded,
    onFault: places.fault,
  });
  return { proxy, places };
}

/**
 * `guestlink exec ADDR -- seq 1 N` through the proxy with the given faults, in both directions,
 * and no options but the address, as a user would run it: stdout hashed as it arrives, the CLI's
 * memory sampled.
 */
export function execThroughProxy(
  agentAddress: string,
  proxyAt: { path: string },
  n: number,
  seed: number,
  faults: ChaosFaultOptions,
  sampler?: RssSampler,
  verbose = false,
): Promise<ExecFigures> {
  return cliThroughProxy(agentAddress, proxyAt, seed, faults, {
    args: (address) => [
      ...(verbose ? ["--verbose"] : []),
      "exec",
      address,
      "--",
      "seq",
      "1",
      `${n}`,
    ],
    expectedSha256: seqSha256(n).sha256,
    sampler,
  });
}

/** `bytes` pseudo-random bytes drawn from `seed`: the same data for the same seed. */
export function seededData(seed: number, bytes: number): Buffer {
  return Buffer.from(randomBytes(deriveRandom(seed, 0x5eed), bytes));
}

/**
 * `guestlink exec ADDR -- sha256sum` through the proxy with `data` on its stdin, so the bulk of
 * the bytes (and of the faults) go from the host to the agent. The figures' hashes are those of
 * the CLI's stdout and of the line sha256sum prints for `data`.
 */
export function stdinThroughProxy(
  agentAddress: string,
  proxyAt: { path: string },
  data: Buffer,
  seed: number,
  faults: ChaosFaultOptions,
): Promise<ExecFigures> {
  return cliThroughProxy(agentAddress, proxyAt, seed, faults, {
    args: (address) => ["exec", address, "--", "sha256sum"],
    stdin: data,
    expectedSha256: sha(`${sha(data)}  -\n`),
  });
}

/**
 * Runs the CLI with `args(address)`, the address being that of a chaos proxy started for it,
 * feeds it `stdin` and hashes its stdout as it arrives.
 */
async function cliThroughProxy(
  agentAddress: string,
  proxyAt: { path: string },
  seed: number,
  faults: ChaosFaultOptions,
  run: {
    args: (address: string) => string[];
    stdin?: Buffer;
    expectedSha256: string;
    sampler?: RssSampler | undefined;
  },
): Promise<ExecFigures> {
  const { proxy, places } = await proxyToAgent(agentAddress, proxyAt, seed, faults);
  try {
    const started = performance.now();
    const cli = startCli(run.args(proxy.address));
    run.sampler?.watch(`cli-${seed}`, cli.pid as number);
    const hash = createHash("sha256");
    let bytes = 0;
    cli.stdout.on("data", (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
    });
    let stderr = "";
    cli.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    // The CLI may exit before it has read all of stdin (it failed): that is its exit code's story.
    cli.stdin.on("error", () => {});
    cli.stdin.end(run.stdin);
    const exitCode = await new Promise<number | null>((resolve) => cli.on("close", resolve));
    const seconds = (performance.now() - started) / 1000;
    const stats = proxy.stats;
    return {
      seed,
      bytes,
      sha256: hash.digest("hex"),
      expectedSha256: run.expectedSha256,
      exitCode,
      stderr,
      seconds,
      mbPerS: (bytes + (run.stdin?.length ?? 0)) / 1e6 / seconds,
      cuts: stats.cuts,
      garbageBursts: stats.garbageBursts,
      burstsInData: {
        toAgent: places.inside("to-target", "DATA"),
        toCli: places.inside("to-client", "DATA"),
      },
      burstPlaces: places.describe(),
      peakCliMiB: (run.sampler?.peakKiB.get(`cli-${seed}`) ?? 0) / 1024,
    };
  } finally {
    await proxy.close();
  }
}

export interface CallsFigures {
  seed: number;
  answered: number;
  wrong: number;
  failed: string[];
  /** [runs, keys]: how many keys ran that many times on the agent. */
  executions: [number, number][];
  resumes: number;
  handshakeMs: number[];
  cuts: number;
  /** Bursts that landed inside a frame's payload (CALL, RESULT…): a payload checksum's work. */
  burstsInPayloads: { toAgent: number; toCli: number };
  /** Where every garbage burst landed, in words. */
  burstPlaces: string;
}

/** A library session through `proxy` with the default wire options, resume and a quick keepalive. */
export async function chaosSession(
  address: string,
): Promise<{ session: Session; events: SessionEvent[] }> {
  const session = await openSession(address, {
    resume: { windowMs: 20_000 },
    keepalive: { intervalMs: 500, deadAfterMs: 5_000 },
  });
  const events: SessionEvent[] = [];
  session.onEvent((e) => events.push(e));
  return { session, events };
}

/** `count` pipelined calls through random faults; every one checked against what ran. */
export async function callsThroughProxy(
  agentAddress: string,
  proxyAt: { path: string },
  count: number,
  seed: number,
  faults: ChaosFaultOptions,
): Promise<CallsFigures> {
  const { proxy, places } = await proxyToAgent(agentAddress, proxyAt, seed, faults);
  const { session, events } = await chaosSession(proxy.address);
  try {
    const prefix = `s${seed}-`;
    const outcomes = await Promise.allSettled(
      Array.from({ length: count }, (_, i) => session.call("count", `${prefix}${i}`)),
    );
    let answered = 0;
    let wrong = 0;
    const failed: string[] = [];
    outcomes.forEach((o, i) => {
      if (o.status === "fulfilled") {
        answered++;
        if (o.value !== `${prefix}${i}`) wrong++;
      } else failed.push(String((o.reason as Error).message));
    });
    const executions = (await session.call("executions").catch(async (err: Error) => {
      // Usually because the session ended: then say why, not only that it is closed (a session
      // still open loses the race to `undefined`, so this never waits).
      const ended = (await Promise.race([session.closed, undefined])) ?? err;
      throw new Error(`seed ${seed}: cannot ask what ran: ${ended.message}`, { cause: ended });
    })) as [number, number][];
    const resumed = events.filter((e) => e.type === "resumed");
    return {
      seed,
      answered,
      wrong,
      failed,
      executions,
      resumes: resumed.length,
      handshakeMs: resumed.map((e) => (e.type === "resumed" ? e.handshakeMs : 0)),
      cuts: proxy.stats.cuts,
      burstsInPayloads: { toAgent: places.inside("to-target"), toCli: places.inside("to-client") },
      burstPlaces: places.describe(),
    };
  } finally {
    await session.close();
    await proxy.close();
  }
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export { sha };

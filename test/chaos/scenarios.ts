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
 * `guestlink exec ADDR -- seq 1 N` through the proxy with the given faults: stdout hashed as it
 * arrives, the CLI's memory sampled.
 */
export async function execThroughProxy(
  agentAddress: string,
  proxyAt: { path: string },
  n: number,
  seed: number,
  faults: ChaosFaultOptions,
  sampler?: RssSampler,
  verbose = false,
): Promise<ExecFigures> {
  const target = { path: agentAddress.slice("unix:".length) };
  const proxy = await startChaosProxy({ listen: proxyAt, target, seed, faults });
  try {
    const started = performance.now();
    const cli = startCli([
      ...(verbose ? ["--verbose"] : []),
      "exec",
      "--payload-checksum",
      "--reconnect-timeout",
      "20",
      proxy.address,
      "--",
      "seq",
      "1",
      String(n),
    ]);
    sampler?.watch(`cli-${seed}`, cli.pid as number);
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
    cli.stdin.end();
    const exitCode = await new Promise<number | null>((resolve) => cli.on("close", resolve));
    const seconds = (performance.now() - started) / 1000;
    const stats = proxy.stats;
    return {
      seed,
      bytes,
      sha256: hash.digest("hex"),
      expectedSha256: seqSha256(n).sha256,
      exitCode,
      stderr,
      seconds,
      mbPerS: bytes / 1e6 / seconds,
      cuts: stats.cuts,
      garbageBursts: stats.garbageBursts,
      peakCliMiB: (sampler?.peakKiB.get(`cli-${seed}`) ?? 0) / 1024,
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
}

/** A library session through `proxy` with payload checksums and resume. */
export async function chaosSession(
  address: string,
): Promise<{ session: Session; events: SessionEvent[] }> {
  const session = await openSession(address, {
    payloadChecksum: true,
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
  const target = { path: agentAddress.slice("unix:".length) };
  const proxy: ChaosProxy = await startChaosProxy({ listen: proxyAt, target, seed, faults });
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
    const executions = (await session.call("executions")) as [number, number][];
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

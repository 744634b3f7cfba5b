/**
 * The fuzzer: `npm run fuzz -- [--minutes N | --seconds N] [--seed S] [--targets agent,mediator,daemon]`.
 *
 * Starts the real processes (bin/guestlink: an agent, a mediator, a daemon, each on a Unix socket
 * in a temporary folder) and feeds each, connection after connection, inputs made from the seed
 * (scripts/fuzz-inputs.ts: random frames and mutated frames of the wire test vectors, most after a
 * valid HELLO) until the time is up, while watching that:
 *
 * - the process does not exit (a crash, an uncaught error);
 * - it still serves a real client (checked every `--check-every` inputs, and at the end): the
 *   agent answers ping, the mediator mediator.status, the daemon its API and a new agent that
 *   dials in;
 * - its resident memory stays under what it had after starting plus `--memory-bound-mib` (300).
 *
 * On the first failure it finds the input that fails (it sends the last inputs again, one at a
 * time, each to a target started afresh), saves it to `fuzz-failures/TARGET-seedS-inputI.json`,
 * says how to replay it, and exits 1. `npm run fuzz -- --replay FILE` sends a saved input to a
 * target started afresh and says whether it still fails (exit 1) or not (exit 0).
 *
 * The agent runs with `--files-root` in the temporary folder, `--allow exec,files,info,telemetry`,
 * and a PATH holding only `true`, `echo`, `cat` and `sleep`: made-up calls reach its services, and
 * cannot touch the machine. Needs the build (`npm run build`).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { openDaemonSession } from "../src/daemon/client.ts";
import { openSession } from "../src/platform/session.ts";
import { decodeControl } from "../src/wire/control.ts";
import { FrameDecoder } from "../src/wire/decode.ts";
import { FrameType, frameTypeName } from "../src/wire/frame.ts";
import { guestlinkArgs } from "../test/helpers/bin.ts";
import {
  type FuzzInput,
  type InputShape,
  inputFromJson,
  inputToJson,
  makeInput,
} from "./fuzz-inputs.ts";

const MiB = 1024 * 1024;
/** Every process started, killed if the fuzzer exits first. */
const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});
type TargetName = "agent" | "mediator" | "daemon";
const ALL_TARGETS: TargetName[] = ["agent", "mediator", "daemon"];

// ---- options -----------------------------------------------------------------------------------

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}

function numberOption(name: string, fallback: number): number {
  const text = option(name);
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`fuzz: ${name} takes a number, got "${text}"`);
    process.exit(2);
  }
  return n;
}

const seconds =
  option("--seconds") !== undefined
    ? numberOption("--seconds", 60)
    : numberOption("--minutes", 1) * 60;
const seed = numberOption("--seed", Math.floor(Math.random() * 2 ** 31)) >>> 0;
const concurrency = Math.max(1, numberOption("--concurrency", 4));
const checkEvery = Math.max(1, numberOption("--check-every", 200));
const memoryBound = numberOption("--memory-bound-mib", 300) * MiB;
const outDir = option("--out") ?? "fuzz-failures";
const targets = (option("--targets") ?? ALL_TARGETS.join(","))
  .split(",")
  .map((t) => t.trim()) as TargetName[];
for (const t of targets) {
  if (!ALL_TARGETS.includes(t)) {
    console.error(`fuzz: unknown target "${t}"; the targets are ${ALL_TARGETS.join(", ")}`);
    process.exit(2);
  }
}

// ---- targets -----------------------------------------------------------------------------------

/** A process under fuzz, and how to reach and check it. */
interface Target {
  name: TargetName;
  child: ChildProcess;
  /** Where inputs are sent. */
  path: string;
  shape: InputShape;
  log: () => string;
  /** Resolves if it still serves a real client; rejects saying how it does not. */
  check: () => Promise<void>;
  exited: Promise<string>;
  baseline: number;
  stop: () => Promise<void>;
}

const SHAPES: Record<TargetName, InputShape> = {
  agent: {
    idParity: 1,
    methods: [
      ["ping", { n: 1 }],
      ["exec", { argv: ["echo", "fuzz"], maxOutputBytes: 1024 }],
      ["exec", { argv: ["cat"] }],
      ["exec", { argv: ["sleep", "0.05"], killGraceMs: 10 }],
      ["files.get", { path: "a.txt" }],
      ["files.put", { path: "b.txt", size: 3, mode: 0o644 }],
      ["files.commit", { token: "x", sha256: "0".repeat(64) }],
      ["files.discard", { token: "x" }],
      ["files.list", { path: "." }],
      ["files.mkdir", { path: "d", name: "e", mode: 0o755 }],
      ["info", {}],
      ["telemetry.watch", { intervalMs: 100 }],
      ["workload.run", {}],
    ],
  },
  mediator: {
    idParity: 1,
    methods: [
      ["mediator.submit", { pool: "A", priority: 1, input: { a: 1 }, key: "k" }],
      ["mediator.submit", { pool: "B", input: [1, 2, 3] }],
      ["mediator.status", {}],
    ],
  },
  daemon: {
    // The daemon is the client of the agents that dial in: they use the even ids.
    idParity: 2,
    methods: [
      ["info", {}],
      ["ping", {}],
    ],
  },
};

function residentBytes(pid: number, field = "VmRSS"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1];
  return Number(kib ?? 0) * 1024;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function httpGet(socketPath: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end();
  });
}

async function startTarget(name: TargetName, dir: string): Promise<Target> {
  const home = join(dir, name);
  mkdirSync(home, { recursive: true });
  let args: string[];
  let env = process.env;
  let good: ChildProcess | undefined;
  const path = join(home, "fuzz.sock");
  if (name === "agent") {
    const files = join(home, "files");
    const bin = join(home, "bin");
    mkdirSync(files);
    mkdirSync(bin);
    writeFileSync(join(files, "a.txt"), "abc");
    for (const tool of ["true", "echo", "cat", "sleep"]) {
      for (const where of ["/bin", "/usr/bin"]) {
        try {
          symlinkSync(join(where, tool), join(bin, tool));
          break;
        } catch {
          // not there, or already linked
        }
      }
    }
    args = [
      "agent",
      "--listen",
      `unix:${path}`,
      "--files-root",
      files,
      "--allow",
      "exec,files,info,telemetry",
      "--log-level",
      "warn",
    ];
    env = { ...process.env, PATH: bin };
  } else if (name === "mediator") {
    const config = join(home, "mediator.yaml");
    writeFileSync(
      config,
      [
        "listen:",
        `  - "unix:${path}"`,
        `  - { address: "unix:${join(home, "shared.sock")}", shared: true }`,
        "pools:",
        "  - { name: A, slots: 2, priorities: 2, queue_limit: 50, max_wait: 2s, worker: { command: [cat] } }",
        "  - { name: B, slots: 1, worker: { command: [cat] } }",
        "results: { keep: 1m, max: 1000, guest_max: 100 }",
      ].join("\n"),
    );
    args = ["mediate", "--config", config, "--no-table"];
  } else {
    // The daemon holds one real agent, which the check reaches through it; the inputs come
    // to the address where agents dial in.
    const goodPath = join(home, "good.sock");
    good = spawn(
      process.execPath,
      guestlinkArgs([
        "agent",
        "--listen",
        `unix:${goodPath}`,
        "--id",
        "good",
        "--log-level",
        "warn",
      ]),
      { stdio: "ignore" },
    );
    children.add(good);
    args = [
      "serve",
      "--agent",
      `good=unix:${goodPath}`,
      "--listen",
      `unix:${path}`,
      "--socket",
      join(home, "serve.sock"),
      "--http",
      "off",
    ];
  }
  const child = spawn(process.execPath, guestlinkArgs(args), {
    stdio: ["ignore", "ignore", "pipe"],
    env,
    cwd: home,
  });
  children.add(child);
  let log = "";
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    log = (log + d).slice(-32 * 1024);
  });
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => resolve(`exited (${signal ?? code})`)),
  );
  // Up once its socket answers.
  const started = performance.now();
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect({ path });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (up) break;
    if (child.exitCode !== null || performance.now() - started > 20_000) {
      throw new Error(`the ${name} did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const check = async () => {
    if (name === "agent") {
      const s = await openSession(`unix:${path}`, { resume: false });
      try {
        await s.call("ping", { probe: true });
      } finally {
        s.abort();
      }
    } else if (name === "mediator") {
      const s = await openSession(`unix:${path}`, { resume: false });
      try {
        await s.call("mediator.status");
      } finally {
        s.abort();
      }
    } else {
      const status = await httpGet(join(home, "serve.sock"), "/v1/agents");
      if (status !== 200) throw new Error(`the API answered ${status}`);
      // The agent it holds, through it (`@good`): held all along, whatever dialled in meanwhile.
      const s = await openDaemonSession("good", { socketPath: join(home, "serve.sock") });
      try {
        await s.call("ping", { probe: true });
      } finally {
        s.abort();
      }
    }
  };
  const target: Target = {
    name,
    child,
    path,
    shape: SHAPES[name],
    log: () => log,
    check: () => withTimeout(check(), 10_000, `the ${name}'s check`),
    exited,
    baseline: 0,
    stop: async () => {
      good?.kill("SIGKILL");
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
  // Up once it serves a client (the daemon: once it holds its agent).
  for (let tries = 0; ; tries++) {
    try {
      await target.check();
      break;
    } catch (err) {
      if (tries >= 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  target.baseline = residentBytes(child.pid as number);
  return target;
}

// ---- sending -----------------------------------------------------------------------------------

interface SendStats {
  /** What came back: frames by type, and the codes of sessions the target ended. */
  back: Map<string, number>;
  bytes: number;
  /** Connections the target ended before we did. */
  endedByTarget: number;
  /** Bytes the target sent back. */
  received: number;
}

/** Sends one input on a new connection, holds it `holdMs`, and closes it. */
async function send(path: string, input: FuzzInput, stats: SendStats): Promise<void> {
  const socket = net.connect({ path });
  let ended = false;
  const decoder = new FrameDecoder();
  const count = (what: string) => stats.back.set(what, (stats.back.get(what) ?? 0) + 1);
  socket.on("error", () => {});
  socket.on("data", (d: Buffer) => {
    stats.received += d.length;
    for (const frame of decoder.push(d)) {
      const type = frameTypeName(frame.type);
      if (frame.type === FrameType.ERROR && frame.streamId === 0) {
        try {
          const body = decodeControl(frame.payload) as {
            code?: string;
            details?: { violation?: string };
          };
          count(
            `session ${body.code}${body.details?.violation ? `/${body.details.violation}` : ""}`,
          );
        } catch {
          count("session ERROR");
        }
      } else if (frame.type === FrameType.ERROR) {
        try {
          count(`call ${(decodeControl(frame.payload) as { code?: string }).code}`);
        } catch {
          count("call ERROR");
        }
      } else count(type);
    }
  });
  socket.once("close", () => {
    ended = true;
  });
  const connected = await new Promise<boolean>((resolve) => {
    socket.once("connect", () => resolve(true));
    socket.once("error", () => resolve(false));
  });
  if (!connected) return;
  for (const chunk of input.chunks) {
    if (ended) break;
    socket.write(chunk);
    stats.bytes += chunk.length;
    if (input.chunks.length > 1) await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, input.holdMs));
  if (ended) stats.endedByTarget++;
  socket.destroy();
}

// ---- a failure: which input, saved ---------------------------------------------------------------

interface Failure {
  target: TargetName;
  reason: string;
  log: string;
}

interface Numbered {
  index: number;
  input: FuzzInput;
}

/** Whether `inputs`, sent in turn to a fresh `name`, make it fail; and how. */
async function reproduces(
  name: TargetName,
  inputs: FuzzInput[],
  dir: string,
): Promise<Failure | undefined> {
  const target = await startTarget(name, join(dir, `replay-${performance.now().toFixed(0)}`));
  try {
    const stats: SendStats = { back: new Map(), bytes: 0, endedByTarget: 0, received: 0 };
    for (const input of inputs) await send(target.path, input, stats);
    await new Promise((r) => setTimeout(r, 200));
    return await judge(target);
  } finally {
    await target.stop();
  }
}

/** How `target` is failing now, if it is. */
async function judge(target: Target): Promise<Failure | undefined> {
  const fail = (reason: string): Failure => ({ target: target.name, reason, log: target.log() });
  if (target.child.exitCode !== null || target.child.signalCode !== null) {
    return fail(await target.exited);
  }
  const rss = residentBytes(target.child.pid as number);
  if (rss > target.baseline + memoryBound) {
    return fail(
      `resident memory ${(rss / MiB).toFixed(0)} MiB, more than ${(target.baseline / MiB).toFixed(0)} MiB at the start plus the bound of ${memoryBound / MiB} MiB`,
    );
  }
  try {
    await target.check();
  } catch (err) {
    if (target.child.exitCode !== null || target.child.signalCode !== null) {
      return fail(await target.exited);
    }
    return fail(`it no longer serves a client: ${(err as Error).message}`);
  }
  return undefined;
}

async function saveFailure(failure: Failure, inputs: Numbered[], alone: boolean): Promise<string> {
  mkdirSync(outDir, { recursive: true });
  const first = inputs[0] as Numbered;
  const file = join(outDir, `${failure.target}-seed${seed}-input${first.index}.json`);
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        target: failure.target,
        seed,
        indexes: inputs.map((i) => i.index),
        alone,
        reason: failure.reason,
        inputs: inputs.map((i) => inputToJson(i.input)),
        logTail: failure.log.slice(-8 * 1024),
      },
      null,
      2,
    )}\n`,
  );
  return file;
}

// ---- the run -------------------------------------------------------------------------------------

interface TargetRun {
  target: Target;
  inputs: number;
  stats: SendStats;
  /** The last inputs sent, for finding the one that failed. */
  recent: Numbered[];
  peak: number;
}

async function replay(file: string): Promise<number> {
  const saved = JSON.parse(readFileSync(file, "utf8")) as {
    target: TargetName;
    reason: string;
    inputs: { chunks: string[]; holdMs: number }[];
  };
  const dir = await mkdtemp(join(tmpdir(), "guestlink-fuzz-replay-"));
  try {
    console.log(
      `fuzz: replaying ${file}: ${saved.inputs.length} input(s) to a fresh ${saved.target} (it failed with: ${saved.reason})`,
    );
    const failure = await reproduces(saved.target, saved.inputs.map(inputFromJson), dir);
    if (failure === undefined) {
      console.log("fuzz: it no longer fails");
      return 0;
    }
    console.log(`fuzz: it still fails: ${failure.reason}`);
    console.log(failure.log.slice(-4 * 1024));
    return 1;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function run(): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), "guestlink-fuzz-"));
  const runs: TargetRun[] = [];
  try {
    for (const name of targets) {
      const target = await startTarget(name, dir);
      runs.push({
        target,
        inputs: 0,
        stats: { back: new Map(), bytes: 0, endedByTarget: 0, received: 0 },
        recent: [],
        peak: target.baseline,
      });
    }
    console.log(
      `fuzz: seed ${seed}, ${seconds} s, targets ${targets.join(", ")}, ${concurrency} connections at a time; memory bound +${memoryBound / MiB} MiB`,
    );
    const started = performance.now();
    const end = started + seconds * 1000;
    let failure: { run: TargetRun; failure: Failure } | undefined;
    // Each target is fed on its own, `concurrency` connections at a time; one index counter per
    // target so a target's inputs are the same whatever the others do.
    await Promise.all(
      runs.map(async (r) => {
        let next = 0;
        let sinceCheck = 0;
        const worker = async () => {
          while (performance.now() < end && failure === undefined) {
            const index = next++;
            const input = makeInput(seed, index, r.target.shape);
            r.recent.push({ index, input });
            if (r.recent.length > 32) r.recent.shift();
            await Promise.race([send(r.target.path, input, r.stats), r.target.exited]);
            r.inputs++;
            if (r.target.child.exitCode !== null || r.target.child.signalCode !== null) {
              failure ??= {
                run: r,
                failure: {
                  target: r.target.name,
                  reason: await r.target.exited,
                  log: r.target.log(),
                },
              };
              return;
            }
            if (++sinceCheck >= checkEvery) {
              sinceCheck = 0;
              const pid = r.target.child.pid as number;
              r.peak = Math.max(r.peak, residentBytes(pid));
              const f = await judge(r.target);
              if (f !== undefined) failure ??= { run: r, failure: f };
            }
          }
        };
        await Promise.all(Array.from({ length: concurrency }, worker));
        if (failure === undefined) {
          await new Promise((res) => setTimeout(res, 200));
          r.peak = Math.max(r.peak, residentBytes(r.target.child.pid as number));
          const f = await judge(r.target);
          if (f !== undefined) failure ??= { run: r, failure: f };
        }
      }),
    );
    const elapsed = (performance.now() - started) / 1000;
    for (const r of runs) {
      console.log(
        `fuzz: ${r.target.name}: ${r.inputs} inputs (${(r.inputs / elapsed).toFixed(0)}/s), ${(r.stats.bytes / MiB).toFixed(1)} MiB sent, ${(r.stats.received / MiB).toFixed(1)} MiB back, ${r.stats.endedByTarget} connections ended by it first; memory ${(r.target.baseline / MiB).toFixed(0)} MiB at the start, ${(r.peak / MiB).toFixed(0)} MiB at most`,
      );
    }
    for (const r of runs) {
      const back = [...r.stats.back].sort((a, b) => b[1] - a[1]);
      console.log(
        `fuzz: ${r.target.name} answered: ${back.map(([what, n]) => `${what} ${n}`).join(", ")}`,
      );
    }
    if (failure === undefined) {
      console.log(`fuzz: no failure in ${elapsed.toFixed(0)} s (seed ${seed})`);
      return 0;
    }
    const { run: failed, failure: f } = failure;
    console.error(`fuzz: the ${f.target} FAILED: ${f.reason}`);
    console.error(f.log.slice(-4 * 1024));
    for (const r of runs) await r.target.stop();
    // Which input: each of the last ones alone, newest first, on a fresh target.
    console.error(`fuzz: looking for the input that fails, among the last ${failed.recent.length}`);
    for (const candidate of [...failed.recent].reverse()) {
      const again = await reproduces(f.target, [candidate.input], dir);
      if (again !== undefined) {
        const file = await saveFailure(again, [candidate], true);
        console.error(`fuzz: input ${candidate.index} fails alone: ${again.reason}`);
        console.error(`fuzz: saved to ${file}; replay: npm run fuzz -- --replay ${file}`);
        return 1;
      }
    }
    const file = await saveFailure(f, failed.recent, false);
    console.error(
      `fuzz: no input fails alone; the last ${failed.recent.length} together saved to ${file}; replay: npm run fuzz -- --replay ${file}`,
    );
    return 1;
  } finally {
    for (const r of runs) await r.target.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const replayFile = option("--replay");
process.exitCode = replayFile !== undefined ? await replay(replayFile) : await run();

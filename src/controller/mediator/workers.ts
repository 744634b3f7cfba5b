/**
 * The mediator's workers: what runs a pool's requests. `helper`: JSON-RPC helper processes, one
 * per slot (helpers/pool.ts), each request a `run` call. `command`: a process per request, the
 * submitted JSON on its stdin, its result JSON on its stdout. Either way a failure is
 * WORKER_FAILED with the worker's own words, and a cancelled request stops its work.
 */
import { spawn } from "node:child_process";
import { GuestlinkError, isGuestlinkError } from "../../errors.ts";
import { GroupStopper } from "../../platform/process-group.ts";
import { type HelperPool, spawnHelpers } from "../helpers/pool.ts";
import type { PoolConfig, WorkerSpec } from "./config.ts";
import type { RunContext } from "./scheduler.ts";

/** What a command worker may print before it is refused (its result must be one JSON value). */
export const MAX_RESULT_BYTES = 16 * 1024 * 1024;
/** Between SIGTERM and SIGKILL when a command's request is cancelled. */
const STOP_GRACE_MS = 2_000;
const STDERR_TAIL = 10;

export interface PoolWorker {
  run(input: unknown, ctx: RunContext): Promise<unknown>;
  stop(): Promise<void>;
}

/** What the worker says about itself: its stderr lines, exits and restarts. */
export type WorkerLog = (message: string, fields?: Record<string, unknown>) => void;

/** The `params` of the `run` call a helper worker answers. */
export interface RunParams {
  input: unknown;
  pool: string;
  priority: number;
  guest: string;
  key: string | null;
}

/** The worker the pool's config names (a pool without one gets a function: `functionWorker`). */
export function startWorker(pool: PoolConfig, log: WorkerLog): PoolWorker {
  const spec = pool.worker as WorkerSpec;
  return spec.kind === "helper" ? helperWorker(pool, spec, log) : commandWorker(pool, spec, log);
}

/** A pool whose work a function of the program does: its failure is the guest's WORKER_FAILED. */
export function functionWorker(
  pool: string,
  fn: (input: unknown, ctx: RunContext) => unknown,
): PoolWorker {
  return {
    async run(input, ctx) {
      try {
        return await fn(input, ctx);
      } catch (err) {
        if (ctx.signal.aborted) throw ctx.signal.reason;
        if (isGuestlinkError(err)) throw err;
        throw workerFailed(pool, err instanceof Error ? err.message : String(err), err);
      }
    },
    async stop() {},
  };
}

function helperWorker(pool: PoolConfig, spec: WorkerSpec, log: WorkerLog): PoolWorker {
  const [command, ...args] = spec.argv as [string, ...string[]];
  const helpers: HelperPool = spawnHelpers(pool.slots, {
    command,
    args,
    cwd: spec.cwd,
    protocol: "jsonrpc",
  });
  helpers.onEvent((e, index) => {
    const helper = `${pool.name}/${index}`;
    if (e.type === "stderr") log(`worker ${helper}: ${e.line}`, { helper });
    else if (e.type === "stray")
      log(`worker ${helper} printed a stray line (${e.reason})`, { helper, line: e.line });
    else if (e.type === "exited")
      log(`worker ${helper} exited`, { helper, code: e.code, signal: e.signal });
    else if (e.type === "gave-up")
      log(`worker ${helper} is not restarted: ${e.reason}`, { helper });
  });
  return {
    async run(input, ctx) {
      const params: RunParams = {
        input,
        pool: ctx.pool,
        priority: ctx.priority,
        guest: ctx.flow,
        key: ctx.key ?? null,
      };
      try {
        return await helpers.request("run", params, {
          signal: ctx.signal as AbortSignal,
          deadline: ctx.deadline,
        });
      } catch (err) {
        if (ctx.signal.aborted) throw ctx.signal.reason;
        if (isGuestlinkError(err, "DEADLINE_EXCEEDED") || isGuestlinkError(err, "CANCELLED"))
          throw err;
        throw workerFailed(pool.name, err instanceof Error ? err.message : String(err), err);
      }
    },
    stop: () => helpers.stop(),
  };
}

function commandWorker(pool: PoolConfig, spec: WorkerSpec, log: WorkerLog): PoolWorker {
  const [command, ...args] = spec.argv as [string, ...string[]];
  const running = new Set<Promise<unknown>>();
  return {
    run(input, ctx) {
      const done = runCommand(pool, spec, command, args, input, ctx, log);
      running.add(done);
      void done.catch(() => {}).finally(() => running.delete(done));
      return done;
    },
    async stop() {
      await Promise.allSettled([...running]);
    },
  };
}

/** `text` as an environment variable can hold it: a NUL (which ends one) becomes U+FFFD. */
function envText(text: string): string {
  return text.includes("\0") ? text.replaceAll("\0", "\uFFFD") : text;
}

function runCommand(
  pool: PoolConfig,
  spec: WorkerSpec,
  command: string,
  args: string[],
  input: unknown,
  ctx: RunContext,
  log: WorkerLog,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (ctx.signal.aborted) {
      reject(ctx.signal.reason);
      return;
    }
    const child = spawn(command, args, {
      cwd: spec.cwd,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      env: {
        ...process.env,
        // A guest's name comes from its HELLO: an environment cannot hold a NUL.
        GUESTLINK_POOL: envText(ctx.pool),
        GUESTLINK_PRIORITY: String(ctx.priority),
        GUESTLINK_GUEST: envText(ctx.flow),
        ...(ctx.key === undefined ? {} : { GUESTLINK_KEY: envText(ctx.key) }),
      },
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let tooMuch = false;
    const tail: string[] = [];
    let partial = "";
    child.stdout.on("data", (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > MAX_RESULT_BYTES) tooMuch = true;
      else out.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        log(`worker ${pool.name} (pid ${child.pid}): ${line}`, { pool: pool.name, pid: child.pid });
        tail.push(line);
        if (tail.length > STDERR_TAIL) tail.shift();
      }
    });
    child.stdin.on("error", () => {});
    child.stdin.end(`${JSON.stringify(input ?? null)}\n`);
    const stopper =
      child.pid === undefined ? undefined : new GroupStopper(child.pid, STOP_GRACE_MS);
    const onAbort = () => stopper?.stop("cancelled");
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    let spawnError: Error | undefined;
    child.once("error", (err) => {
      spawnError = err;
    });
    child.once("close", (code, signal) => {
      ctx.signal.removeEventListener("abort", onAbort);
      if (partial !== "") tail.push(partial);
      // Whatever it left in its group goes too.
      if (stopper !== undefined) {
        stopper.stop("done");
        void stopper.waitGone().finally(() => stopper.dispose());
      }
      if (ctx.signal.aborted) {
        reject(ctx.signal.reason);
        return;
      }
      const said = tail.length > 0 ? `; its stderr: ${tail.slice(-3).join(" | ")}` : "";
      if (spawnError !== undefined) {
        reject(
          workerFailed(
            pool.name,
            `${command} could not start (${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message})`,
            spawnError,
          ),
        );
        return;
      }
      if (code !== 0) {
        const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
        reject(workerFailed(pool.name, `${command} ${how}${said}`));
        return;
      }
      if (tooMuch) {
        reject(
          workerFailed(
            pool.name,
            `${command} printed more than ${MAX_RESULT_BYTES} bytes; a result is one JSON value`,
          ),
        );
        return;
      }
      const text = Buffer.concat(out).toString("utf8").trim();
      try {
        resolve(JSON.parse(text));
      } catch {
        const shown = text === "" ? "nothing" : JSON.stringify(text.slice(0, 80));
        reject(workerFailed(pool.name, `${command} printed ${shown}, not a JSON result${said}`));
      }
    });
  });
}

function workerFailed(pool: string, words: string, cause?: unknown): GuestlinkError {
  return new GuestlinkError("WORKER_FAILED", `the worker of pool ${pool} failed: ${words}`, {
    cause,
    details: { pool },
  });
}

/**
 * The exec service: runs a command in the agent with its stdin, stdout and stderr streamed both
 * ways as raw bytes, and reports how it ended the way a shell would.
 *
 * Unlike qemu-ga's guest-exec, nothing waits for the exit and nothing is cut short unless the
 * caller asked for a limit (and then the result says so). Each output is piped from the child's
 * pipe into its session stream, whose credit-based flow control reaches back to the pipe: a slow
 * caller stops the agent reading, the child blocks in write(), and memory does not grow with the
 * size of the output.
 *
 * The child leads its own process group, so stopping it (the caller cancelled, the deadline
 * passed, the session ended, the output limit was hit) reaches everything it started: SIGTERM to
 * the group, SIGKILL after a grace period. Processes that left the group (setsid) are beyond reach.
 *
 * A call ends once the command has exited and its outputs have closed, so a background process
 * still holding stdout keeps the call open (as ssh does) until the caller cancels or the deadline
 * passes. Its stdin is fed for as long as the command lives; input it never read is dropped.
 */
import { stat } from "node:fs/promises";
import { constants as osConstants } from "node:os";
import { performance } from "node:perf_hooks";
import type { Readable, Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { getSystemErrorMap } from "node:util";
import * as v from "valibot";
import { GuestlinkError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import { toDuplex } from "../platform/duplex.ts";
import { GroupStopper } from "../platform/process-group.ts";
import type { CallContext } from "../session/session.ts";
import type { SessionStream } from "../session/stream.ts";
import type { CommandGroups } from "./command-groups.ts";
import {
  DEFAULT_KILL_GRACE_MS,
  EXEC_STATUS,
  type ExecReason,
  type ExecRequest,
  type ExecResult,
  FORWARDABLE_SIGNALS,
  millis,
  parseExecRequest,
} from "./exec-contract.ts";
import type { Service } from "./service.ts";
import { spawnAddon, startNative } from "./spawn-native.ts";
import { type ChildStdin, type SpawnRequest, type Starting, startWithNode } from "./spawner.ts";

export {
  DEFAULT_KILL_GRACE_MS,
  EXEC_STATUS,
  type ExecControlMessage,
  type ExecReason,
  type ExecRequest,
  type ExecResult,
  ExecResultSchema,
  FORWARDABLE_SIGNALS,
  type ForwardableSignal,
  parseExecRequest,
} from "./exec-contract.ts";

/** Longest control line taken. */
const MAX_CONTROL_LINE = 1024;

export interface ExecServiceOptions {
  /** Default grace between SIGTERM and SIGKILL; a request may set its own. */
  killGraceMs?: number;
  /**
   * Where the commands' process groups are kept, so they die with the agent and with the session
   * that started them (the `Agent` passes its own).
   */
  groups?: CommandGroups;
}

/** The exec service, method "exec". */
export function execService(options: ExecServiceOptions = {}): Service {
  const grace = v.safeParse(millis, options.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
  if (!grace.success) {
    throw new InvalidOptionError(
      `killGraceMs ${grace.issues[0]?.message ?? "is invalid"}, got ${String(options.killGraceMs)}`,
      { details: { option: "killGraceMs", value: options.killGraceMs } },
    );
  }
  const killGraceMs = grace.output;
  return {
    name: "exec",
    methods: {
      exec: (params, ctx) => runExec(parseExecRequest(params), ctx, killGraceMs, options.groups),
    },
  };
}

type StopReason = "timeout" | "cancelled" | "output-limit";

const STOP_STATUS: Record<StopReason, number> = {
  timeout: EXEC_STATUS.TIMEOUT,
  cancelled: EXEC_STATUS.CANCELLED,
  "output-limit": EXEC_STATUS.OUTPUT_LIMIT,
};

async function runExec(
  request: ExecRequest,
  ctx: CallContext,
  defaultGraceMs: number,
  groups: CommandGroups | undefined,
): Promise<ExecResult> {
  const startedAt = performance.now();
  const finish = (fields: Omit<ExecResult, "durationMs">): ExecResult => ({
    ...fields,
    durationMs: performance.now() - startedAt,
  });
  const notRun = { exitCode: null, signal: null, stdoutBytes: 0, stderrBytes: 0, truncated: false };
  // Listened to only: the light signal, not an AbortController per command.
  const cancellation = ctx.cancellation;

  if (cancellation.aborted) {
    const reason = stopReasonOf(cancellation.reason);
    return finish({
      ...notRun,
      status: STOP_STATUS[reason],
      reason,
      message: `not started: ${describe(cancellation.reason)}`,
    });
  }
  // A missing cwd makes spawn fail with the ENOENT of the command itself: tell the two apart.
  if (request.cwd !== undefined) {
    const problem = await cwdProblem(request.cwd);
    if (problem) {
      return finish({
        ...notRun,
        status: EXEC_STATUS.START_FAILED,
        reason: "start-failed",
        message: problem,
      });
    }
  }

  const file = request.shell ? "/bin/sh" : (request.argv[0] as string);
  const args = request.shell ? ["-c", request.argv.join(" ")] : request.argv.slice(1);
  const {
    stdin: stdinStream,
    stdout: stdoutStream,
    stderr: stderrStream,
    control: controlStream,
  } = ctx.streams;
  const spawnRequest: SpawnRequest = {
    file,
    args,
    cwd: request.cwd,
    env: request.env ? { ...process.env, ...request.env } : process.env,
    // A stream the caller did not open is /dev/null.
    stdio: [stdinStream !== undefined, stdoutStream !== undefined, stderrStream !== undefined],
    tty: request.tty,
  };
  const starting = startChild(spawnRequest);
  // Told at once, not after the start is confirmed: by then the command may have started
  // others, and an agent killed in between would leave them to run on (seen under load).
  if (starting.pid !== undefined) groups?.started(starting.pid, ctx.session);
  const started = await starting.started;
  if ("error" in started) {
    if (starting.pid !== undefined) groups?.callEnded(starting.pid);
    return finish({ ...notRun, ...startFailure(file, started.error) });
  }
  const child = started;
  const exited = child.exited;
  const pgid = child.pid;
  const control = readControl(controlStream, request.control === true, {
    resize: (rows, cols) => child.resize?.(rows, cols),
    signal: (signal) => signalGroup(pgid, signal),
  });

  const stopper = new GroupStopper<StopReason>(pgid, request.killGraceMs ?? defaultGraceMs);
  const budget = { remaining: request.maxOutputBytes ?? Infinity, truncated: false };
  const onLimit = () => stopper.stop("output-limit");
  const counts = { stdout: 0, stderr: 0 };
  const outputs = [
    forward(child.stdout, stdoutStream, budget, (n) => (counts.stdout += n), onLimit),
    forward(child.stderr, stderrStream, budget, (n) => (counts.stderr += n), onLimit),
  ];
  const input = feedStdin(child.stdin, stdinStream);

  const onAbort = () => stopper.stop(stopReasonOf(cancellation.reason), cancellation.reason);
  cancellation.addEventListener("abort", onAbort, { once: true });
  if (cancellation.aborted) onAbort();
  try {
    const [exit] = await Promise.all([exited, ...outputs]);
    // Input the process never read has nowhere to go.
    input.abandon();
    const leftover = stopper.reason === undefined ? undefined : await stopper.waitGone();

    const stopReason = stopper.reason;
    const fields = {
      exitCode: exit.code,
      signal: exit.signal,
      stdoutBytes: counts.stdout,
      stderrBytes: counts.stderr,
      truncated: budget.truncated,
    };
    if (stopReason !== undefined) {
      const why =
        stopReason === "output-limit"
          ? `output reached maxOutputBytes (${request.maxOutputBytes}); the rest was discarded and the process group killed`
          : `process group killed: ${describe(stopper.cause)}`;
      return finish({
        ...fields,
        status: STOP_STATUS[stopReason],
        reason: stopReason,
        message: leftover ? `${why}; ${leftover}` : why,
      });
    }
    if (exit.signal !== null) {
      const number = osConstants.signals[exit.signal] ?? 0;
      return finish({ ...fields, status: 128 + number, reason: "signaled" });
    }
    return finish({ ...fields, status: exit.code ?? 0, reason: "exited" });
  } finally {
    cancellation.removeEventListener("abort", onAbort);
    control.close();
    stopper.dispose();
    // After the result has gone: whether the group emptied (a kill(2) whose usual answer,
    // ESRCH, Node makes a thrown error of) and the keeper's list can wait that long.
    if (groups !== undefined) setImmediate(() => groups.callEnded(pgid));
  }

  // Our own deadline timer and the caller's CANCEL (which says why) both abort with the code.
  function stopReasonOf(reason: unknown): StopReason {
    return isGuestlinkError(reason, "DEADLINE_EXCEEDED") ? "timeout" : "cancelled";
  }
}

/**
 * Starts the command: with the spawn addon when it is loaded (always for a terminal, which only
 * it can give), else with child_process. A terminal without the addon is TTY_UNSUPPORTED.
 */
function startChild(request: SpawnRequest): Starting {
  const native = spawnAddon();
  if (request.tty !== undefined) {
    if ("reason" in native) {
      throw new GuestlinkError(
        "TTY_UNSUPPORTED",
        `exec: this agent cannot give the command a terminal (-t): ${native.reason}. Without -t the command runs with pipes`,
        { details: { reason: native.reason } },
      );
    }
    return startNative(native.addon, request);
  }
  // A cwd needs posix_spawn_file_actions_addchdir_np (glibc 2.29).
  if ("addon" in native && (request.cwd === undefined || native.addon.canChdir)) {
    return startNative(native.addon, request);
  }
  return startWithNode(request);
}

/** Sends `signal` to process group `pgid`; a group already gone is not an error. */
function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: it is gone.
  }
}

/**
 * Acts on the lines of JSON arriving on the call's "control" stream (when the caller said it
 * opened one) until the call ends. Unknown message types are ignored; a line that is too long
 * or not a JSON object ends the stream (the command runs on).
 */
function readControl(
  stream: SessionStream | undefined,
  wanted: boolean,
  act: { resize(rows: number, cols: number): void; signal(signal: NodeJS.Signals): void },
): { close(): void } {
  if (!stream) return { close() {} };
  if (!wanted) {
    stream.reset("CANCELLED", "exec: no control stream was asked for (control: true)");
    return { close() {} };
  }
  const source = toDuplex(stream);
  source.on("error", () => {});
  let line = "";
  const refuse = (why: string) => {
    source.off("data", onData);
    if (!stream.closed) stream.reset("INVALID_OPTION", `exec: control stream: ${why}`);
  };
  const handle = (text: string) => {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      refuse(`a line is not JSON: ${text.slice(0, 80)}`);
      return;
    }
    if (typeof message !== "object" || message === null) {
      refuse("a line is not a JSON object");
      return;
    }
    const m = message as Record<string, unknown>;
    const side = (n: unknown) =>
      Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 65_535;
    if (m.type === "resize" && side(m.rows) && side(m.cols)) {
      act.resize(m.rows as number, m.cols as number);
    } else if (
      m.type === "signal" &&
      (FORWARDABLE_SIGNALS as readonly unknown[]).includes(m.signal)
    ) {
      act.signal(m.signal as NodeJS.Signals);
    }
  };
  const onData = (chunk: Buffer) => {
    line += chunk.toString("utf8");
    for (let nl = line.indexOf("\n"); nl >= 0; nl = line.indexOf("\n")) {
      const text = line.slice(0, nl);
      line = line.slice(nl + 1);
      if (text.trim() !== "") handle(text);
    }
    if (line.length > MAX_CONTROL_LINE) refuse(`a line is longer than ${MAX_CONTROL_LINE} bytes`);
  };
  source.on("data", onData);
  source.on("end", () => source.end());
  return {
    close() {
      source.off("data", onData);
      if (!stream.closed) stream.reset("CANCELLED", "the exec call is over");
    },
  };
}

/**
 * Copies one of the child's outputs into its session stream, counting what is sent and stopping
 * at the shared budget. Resolves when the stream has ended (or failed: a caller that reset it no
 * longer wants the bytes, and the child sees a closed pipe, as with any reader that goes away).
 *
 * By hand rather than with stream.pipeline: for a command with little output, pipeline's
 * abort controllers, its DOMException and premature-close errors made at every finish, and a
 * Duplex over the session stream were a fifth of what the agent spent on it. Backpressure is
 * the same: past the stream's high-water mark the pipe is paused until the stream drains.
 */
function forward(
  source: Readable | null,
  stream: SessionStream | undefined,
  budget: { remaining: number; truncated: boolean },
  count: (bytes: number) => void,
  onLimit: () => void,
): Promise<void> {
  if (!source) return Promise.resolve();
  // A terminal's output nobody asked for is still read, or the command would block on it.
  if (!stream) return finished(source.resume()).catch(() => {});
  return new Promise<void>((resolve) => {
    let ended = false;
    let over = false;
    const stop = () => {
      if (over) return;
      over = true;
      source.off("data", onData);
      resolve();
    };
    // The caller reset the stream or the session ended: close the pipe, as a reader going away.
    const abandon = () => {
      source.destroy();
      stop();
    };
    const onData = (chunk: Buffer) => {
      let out = chunk;
      if (chunk.length <= budget.remaining) {
        budget.remaining -= chunk.length;
      } else {
        // Past the limit: send exactly up to it, then discard (and keep draining, so nothing
        // blocks on a full pipe while the group is being stopped).
        out = chunk.subarray(0, budget.remaining);
        budget.remaining = 0;
        if (!budget.truncated) {
          budget.truncated = true;
          onLimit();
        }
      }
      if (out.length === 0) return;
      count(out.length);
      let below: boolean;
      try {
        below = stream.write(out);
      } catch {
        abandon();
        return;
      }
      if (!below) {
        source.pause();
        stream.onDrain = () => (stream.closed ? abandon() : source.resume());
      }
    };
    // Nothing comes the other way on an output stream; an error is the caller's reset.
    stream.attach({ data: (chunk) => stream.consumed(chunk.length), end() {}, error: abandon });
    source.on("data", onData);
    source.once("end", () => {
      ended = true;
      stream.end();
      stream.whenOutputDone(stop);
    });
    source.once("error", (err) => {
      stream.reset("CANCELLED", err.message);
      stop();
    });
    source.once("close", () => {
      if (ended) return;
      stream.reset("CANCELLED", "the command's output was closed before its end");
      stop();
    });
  });
}

/**
 * Copies the caller's stdin into the child's. The caller ending its stream ends the child's
 * stdin (and our side of the stream); a child that stops reading (EPIPE) or exits has the
 * stream reset quietly. Each chunk counts as consumed once written to the pipe, so the caller's
 * window bounds what waits here for a child that reads slowly.
 */
function feedStdin(
  input: ChildStdin | null,
  stream: SessionStream | undefined,
): { abandon(): void } {
  if (!input || !stream) return { abandon() {} };
  let sink: Writable | undefined;
  let done = false;
  const stopReading = (message: string) => {
    if (!stream.closed) stream.reset("CANCELLED", message);
  };
  stream.attach({
    data(chunk) {
      if (done) {
        stream.consumed(chunk.length);
        return;
      }
      if (sink === undefined) {
        sink = input.open();
        sink.on("error", () => {
          done = true;
          stopReading("the process closed its stdin");
        });
      }
      sink.write(chunk, () => stream.consumed(chunk.length));
    },
    end() {
      if (done) return;
      done = true;
      input.end();
      // Nothing goes the other way: our direction ends with theirs.
      stream.end();
    },
    error() {
      // The caller reset its stdin, or the session ended: the input stops where it is.
      if (done) return;
      done = true;
      input.destroy();
    },
  });
  return {
    abandon() {
      if (done) return;
      done = true;
      stopReading("the process exited without reading all of its stdin");
      input.destroy();
    },
  };
}

async function cwdProblem(cwd: string): Promise<string | undefined> {
  try {
    if (!(await stat(cwd)).isDirectory()) return `cwd ${cwd}: not a directory (ENOTDIR)`;
  } catch (err) {
    return `cwd ${cwd}: ${osReason(err)}`;
  }
  return undefined;
}

function startFailure(
  file: string,
  err: unknown,
): { status: number; reason: ExecReason; message: string } {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = `${file}: ${osReason(err)}`;
  if (code === "ENOENT") return { status: EXEC_STATUS.NOT_FOUND, reason: "not-found", message };
  if (
    code === "EACCES" ||
    code === "EPERM" ||
    code === "ENOEXEC" ||
    code === "EISDIR" ||
    code === "ENOTDIR"
  ) {
    return { status: EXEC_STATUS.NOT_EXECUTABLE, reason: "not-executable", message };
  }
  return { status: EXEC_STATUS.START_FAILED, reason: "start-failed", message };
}

/** "no such file or directory (ENOENT)": the OS's words for a system error. */
function osReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException | undefined;
  const known = typeof e?.errno === "number" ? getSystemErrorMap().get(e.errno) : undefined;
  if (known) return `${known[1]} (${known[0]})`;
  return e instanceof Error ? e.message : String(err);
}

function describe(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason ?? "stopped");
}

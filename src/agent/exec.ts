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
import type { Service } from "./service.ts";
import { spawnAddon, startNative } from "./spawn-native.ts";
import { type ChildStdin, type SpawnRequest, type Starting, startWithNode } from "./spawner.ts";

/** Between SIGTERM to the process group and SIGKILL. */
export const DEFAULT_KILL_GRACE_MS = 2_000;
const MAX_KILL_GRACE_MS = 10 * 60_000;
/** Exit statuses as shells and GNU coreutils report them, for endings other than a plain exit. */
export const EXEC_STATUS = {
  /** Killed because the call ran past its deadline, like GNU timeout. */
  TIMEOUT: 124,
  /**
   * The agent could not start the command for a reason other than the file itself (the cwd is
   * missing, no processes or descriptors left), the way env(1) and timeout(1) report their own
   * failures.
   */
  START_FAILED: 125,
  /** Found but cannot be run (no execute permission, a folder, not an executable format). */
  NOT_EXECUTABLE: 126,
  NOT_FOUND: 127,
  /** Killed because the call was cancelled or its session ended: 128 + SIGINT, as after Ctrl-C. */
  CANCELLED: 130,
  /**
   * Killed because its output reached `maxOutputBytes`: 128 + SIGPIPE, as if the reader closed
   * the pipe. What was sent stops exactly at the limit; the rest was discarded.
   */
  OUTPUT_LIMIT: 141,
} as const;

export type ExecReason =
  | "exited"
  | "signaled"
  | "not-found"
  | "not-executable"
  | "start-failed"
  | "timeout"
  | "cancelled"
  | "output-limit";

/**
 * What the caller asks for. Streams are opened with the call: "stdin", "stdout", "stderr", and
 * "control" when `control` is set (see `ExecControlMessage`).
 */
export interface ExecRequest {
  /** The program and its arguments; the program is looked up in PATH when it has no slash. */
  argv: string[];
  /** Set over the agent's own environment. */
  env?: Record<string, string>;
  /** Working folder (default: the agent's). */
  cwd?: string;
  /** Run `argv.join(" ")` with `/bin/sh -c`. */
  shell?: boolean;
  /** Limit on stdout and stderr together; past it the process group is killed (status 141). */
  maxOutputBytes?: number;
  /** Between SIGTERM and SIGKILL when the process is stopped (default: the service's). */
  killGraceMs?: number;
  /**
   * Run the command on a new pseudo-terminal of this size (0 for unknown) as its stdin, stdout,
   * stderr and controlling terminal: its output comes on "stdout" ("stderr" stays empty), and
   * "stdin" is typed into it. Needs the agent's spawn addon (else TTY_UNSUPPORTED).
   */
  tty?: { rows: number; cols: number };
  /**
   * The caller opened a "control" stream and sends `ExecControlMessage`s on it while the command
   * runs (an agent that does not know this field refuses the request, so none go unheard).
   */
  control?: boolean;
}

/**
 * A message on an exec call's "control" stream: one line of JSON each. Unknown types are
 * ignored (a newer caller), a line that is not JSON or too long ends the stream.
 */
export type ExecControlMessage =
  /** The terminal's new size (with `tty`): the kernel tells its foreground group (SIGWINCH). */
  | { type: "resize"; rows: number; cols: number }
  /** Send this signal to the command's process group. */
  | { type: "signal"; signal: ForwardableSignal };

/** The signals a control message may send (stopping for good is what cancelling is for). */
export const FORWARDABLE_SIGNALS = [
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGTERM",
  "SIGUSR1",
  "SIGUSR2",
  "SIGWINCH",
] as const;
export type ForwardableSignal = (typeof FORWARDABLE_SIGNALS)[number];
/** Longest control line taken. */
const MAX_CONTROL_LINE = 1024;

/** How the command ended. `status` is what a shell would show as `$?`. */
export interface ExecResult {
  /** The exit code; 128+N for signal N; or one of `EXEC_STATUS` (see `reason`). */
  status: number;
  exitCode: number | null;
  /** The signal that ended the process (e.g. "SIGKILL"), if one did. */
  signal: string | null;
  reason: ExecReason;
  /** Why it could not start (the OS's words), or what stopped it. */
  message?: string;
  /** Bytes of output sent to the caller (at most `maxOutputBytes` together). */
  stdoutBytes: number;
  stderrBytes: number;
  /** The output limit was hit and later output discarded. */
  truncated: boolean;
  durationMs: number;
}

export interface ExecServiceOptions {
  /** Default grace between SIGTERM and SIGKILL; a request may set its own. */
  killGraceMs?: number;
  /**
   * Where the commands' process groups are kept, so they die with the agent and with the session
   * that started them (the `Agent` passes its own).
   */
  groups?: CommandGroups;
}

const noNul = v.check((s: string) => !s.includes("\0"), "must not contain NUL characters");
const millis = v.pipe(
  v.number("must be a number of milliseconds"),
  v.integer("must be a whole number of milliseconds"),
  v.minValue(0, "must not be negative"),
  v.maxValue(MAX_KILL_GRACE_MS, `must be at most ${MAX_KILL_GRACE_MS} ms`),
);

const terminalSide = v.pipe(
  v.number("must be a number of character cells"),
  v.integer("must be a whole number"),
  v.minValue(0, "must not be negative"),
  v.maxValue(65_535, "must be at most 65535"),
);

const ExecRequestSchema = v.strictObject(
  {
    argv: v.pipe(
      v.array(v.pipe(v.string("must be a string"), noNul), "must be an array of strings"),
      v.minLength(1, "must name a command (it is empty)"),
      v.check((argv) => argv[0] !== "", "must name a command (argv[0] is empty)"),
    ),
    env: v.optional(
      v.record(
        v.pipe(
          v.string(),
          v.minLength(1, "names must not be empty"),
          v.check((name) => !/[=\0]/.test(name), "names must not contain '=' or NUL"),
        ),
        v.pipe(v.string("values must be strings"), noNul),
        "must map names to strings",
      ),
    ),
    cwd: v.optional(
      v.pipe(v.string("must be a string"), v.minLength(1, "must not be empty"), noNul),
    ),
    shell: v.optional(v.boolean("must be true or false")),
    maxOutputBytes: v.optional(
      v.pipe(
        v.number("must be a number of bytes"),
        v.integer("must be a whole number of bytes"),
        v.minValue(0, "must not be negative"),
        v.maxValue(Number.MAX_SAFE_INTEGER, "is too large"),
      ),
    ),
    killGraceMs: v.optional(millis),
    tty: v.optional(
      v.strictObject(
        { rows: terminalSide, cols: terminalSide },
        "must be an object like { rows: 24, cols: 80 }",
      ),
    ),
    control: v.optional(v.boolean("must be true or false")),
  },
  (issue) =>
    issue.path === undefined
      ? "must be an object like { argv: [...] }"
      : issue.input === undefined
        ? "is required"
        : "is not a field of an exec request",
);

/** The shape of a result, for a controller that takes nothing from an agent on trust. */
export const ExecResultSchema = v.object({
  status: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(255)),
  exitCode: v.nullable(v.pipe(v.number(), v.integer())),
  signal: v.nullable(v.pipe(v.string(), v.maxLength(32))),
  reason: v.picklist([
    "exited",
    "signaled",
    "not-found",
    "not-executable",
    "start-failed",
    "timeout",
    "cancelled",
    "output-limit",
  ]),
  message: v.optional(v.pipe(v.string(), v.maxLength(4096))),
  stdoutBytes: v.pipe(v.number(), v.integer(), v.minValue(0)),
  stderrBytes: v.pipe(v.number(), v.integer(), v.minValue(0)),
  truncated: v.boolean(),
  durationMs: v.pipe(v.number(), v.minValue(0)),
});

/** Checks an exec request; throws INVALID_OPTION naming every problem. */
export function parseExecRequest(params: unknown): ExecRequest {
  const parsed = v.safeParse(ExecRequestSchema, params);
  if (parsed.success) return parsed.output;
  const problems = parsed.issues.map((issue) => {
    const path = v.getDotPath(issue);
    return path ? `${path} ${issue.message}` : issue.message;
  });
  throw new InvalidOptionError(`exec: invalid request: ${problems.join("; ")}`, {
    details: { problems },
  });
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

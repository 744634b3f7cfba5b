/**
 * What a caller and the exec service agree on: the request, its checks, the result and its
 * shape, the control messages. A file of its own so that a caller (the CLI's `exec`, the
 * daemon) checks requests and results without loading the service that runs commands.
 */
import * as v from "valibot";
import { InvalidOptionError } from "../errors.ts";

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

const noNul = v.check((s: string) => !s.includes("\0"), "must not contain NUL characters");
/** A kill grace in milliseconds, as a request or the service's options give it. */
export const millis = v.pipe(
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

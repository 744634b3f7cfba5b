/**
 * A child process as a transport (`exec:COMMAND`): spawned directly from its argv (no shell), we
 * talk over its stdin and stdout, and its stderr goes straight to ours so the user sees what it
 * says (an ssh password prompt, "command not found").
 *
 * The iteration ends once the child's stdout has ended and the child has exited; if it exited
 * with a non-zero code or was killed by a signal we did not send, the iteration throws
 * TRANSPORT_FAILED naming the code or signal (after the bytes it did send). `close()` ends its
 * stdin and waits for it to exit, sending SIGTERM and then SIGKILL if it does not; `abort()` sends
 * SIGTERM at once.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { ConnectFailedError, InvalidOptionError, TransportFailedError } from "../errors.ts";
import { formatAddress } from "./address.ts";
import { raceCallOptions, throwIfDone } from "./call-options.ts";
import { errorLabel, NodeStreamTransport } from "./node-stream.ts";
import type { CallOptions, Transport } from "./transport.ts";

/** How long the child may take to exit after its stdin ends, before it gets SIGTERM. */
export const EXEC_TERMINATE_GRACE_MS = 5_000;
/** How long the child may take to exit after SIGTERM, before it gets SIGKILL. */
export const EXEC_KILL_GRACE_MS = 2_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
/**
 * Once the child has exited, how long its stdout may stay quiet before we stop waiting for its
 * end. Only a process the child left behind holding stdout (a daemonised grandchild) makes this
 * wait run out; bytes held back by our own backpressure never count as quiet.
 */
export const EXEC_OUTPUT_GRACE_MS = 1_000;

export interface ExecOptions extends CallOptions {
  /** Milliseconds between ending stdin on close and SIGTERM. Default `EXEC_TERMINATE_GRACE_MS`. */
  terminateGraceMs?: number;
  /** Milliseconds between SIGTERM and SIGKILL. Default `EXEC_KILL_GRACE_MS`. */
  killGraceMs?: number;
  /**
   * After the child exited, milliseconds of quiet on its stdout before the input is ended even
   * though stdout is still open. Default `EXEC_OUTPUT_GRACE_MS`.
   */
  outputGraceMs?: number;
  /**
   * Where the child's stderr goes: by default straight to ours (inherited). A caller that shows
   * it to a person differently (the CLI keeps an agent's routine logs quiet) passes a stream;
   * it is ended when the child's stderr ends (so pass one of its own, not process.stderr).
   */
  stderr?: NodeJS.WritableStream;
}

/** How the child ended. */
export interface ExitStatus {
  /** The exit code, or null when a signal ended it. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Spawns `argv` and connects to its stdin/stdout. Fails with CONNECT_FAILED if it cannot run. */
export async function connectExec(
  argv: readonly string[],
  options: ExecOptions = {},
): Promise<ExecTransport> {
  const description = formatAddress({ kind: "exec", argv });
  const terminateGraceMs = graceOption(options.terminateGraceMs, EXEC_TERMINATE_GRACE_MS);
  const killGraceMs = graceOption(options.killGraceMs, EXEC_KILL_GRACE_MS);
  const outputGraceMs = graceOption(options.outputGraceMs, EXEC_OUTPUT_GRACE_MS);
  const onDeadline = () =>
    new ConnectFailedError(`starting ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  const [command, ...args] = argv as [string, ...string[]];
  const child = spawn(command, args, {
    stdio: ["pipe", "pipe", options.stderr ? "pipe" : "inherit"],
    windowsHide: true,
  });
  if (options.stderr) child.stderr?.pipe(options.stderr);
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const spawned = new Promise<void>((resolve, reject) => {
    const onSpawn = () => {
      child.off("error", onError);
      resolve();
    };
    const onError = (err: Error) => {
      child.off("spawn", onSpawn);
      reject(
        new ConnectFailedError(explainSpawn(err, command, description), {
          cause: err,
          details: { address: description, errno: errorLabel(err) },
        }),
      );
    };
    child.once("spawn", onSpawn);
    child.once("error", onError);
  });
  // Later errors (a failed kill) must not crash the process; the exit status tells the story.
  child.on("error", () => {});
  await raceCallOptions(spawned, options, {
    onDeadline,
    cancel: () => child.kill("SIGKILL"),
    discard: () => child.kill("SIGKILL"),
  });
  return new ExecTransport(
    child,
    description,
    exited,
    terminateGraceMs,
    killGraceMs,
    outputGraceMs,
  );
}

/** A running child process as a transport; also tells its pid and how it ended. */
export class ExecTransport implements Transport {
  /** The child's stdout may carry stray output, and the child is gone with its pipes. */
  readonly lossy = true;
  readonly description: string;
  readonly pid: number;
  /** Resolves when the child has exited. */
  readonly exited: Promise<ExitStatus>;
  readonly #child: ChildProcess;
  readonly #inner: NodeStreamTransport;
  readonly #terminateGraceMs: number;
  readonly #killGraceMs: number;
  /** True once we signalled the child: how it then ends is our doing, not a failure. */
  #signalled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closing: Promise<void> | undefined;

  constructor(
    child: ChildProcess,
    description: string,
    exited: Promise<ExitStatus>,
    terminateGraceMs: number,
    killGraceMs: number,
    outputGraceMs: number,
  ) {
    this.description = description;
    this.pid = child.pid as number;
    this.exited = exited;
    this.#child = child;
    this.#terminateGraceMs = terminateGraceMs;
    this.#killGraceMs = killGraceMs;
    const stdout = child.stdout as NonNullable<ChildProcess["stdout"]>;
    const stdin = child.stdin as NonNullable<ChildProcess["stdin"]>;
    this.#inner = new NodeStreamTransport(stdout, stdin, {
      description,
      beforeEnd: async () => this.#exitError(await exited),
    });
    exited.then((status) => {
      this.#clearTimer();
      // Something the child left behind may hold its stdout open forever: once the pipe has
      // been quiet for a while, stop waiting for an end that may never come.
      if (!stdout.readableEnded) {
        this.#inner.finishInputWhenQuiet(this.#exitError(status), outputGraceMs);
      }
    });
  }

  send(chunks: readonly Uint8Array[]): boolean {
    return this.#inner.send(chunks);
  }

  drain(): Promise<void> {
    return this.#inner.drain();
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.#inner[Symbol.asyncIterator]();
  }

  /** Ends the child's stdin and resolves once it has exited (terminating it if it lingers). */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  abort(reason?: Error): void {
    this.#inner.abort(reason);
    this.#signal("SIGTERM");
  }

  async #close(): Promise<void> {
    if (!this.#hasExited()) {
      this.#timer = setTimeout(() => this.#signal("SIGTERM"), this.#terminateGraceMs);
      this.#timer.unref();
    }
    let failure: unknown;
    try {
      await this.#inner.close();
    } catch (err) {
      failure = err;
    }
    await this.exited;
    // A stdin broken by our own signal is expected; one that broke by itself means what we sent
    // may not have been read.
    if (failure !== undefined && !this.#signalled) throw failure;
  }

  /** Sends `signal` now, and SIGKILL if the child is still there after the kill grace. */
  #signal(signal: "SIGTERM"): void {
    if (this.#hasExited()) return;
    this.#signalled = true;
    this.#child.kill(signal);
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      if (!this.#hasExited()) this.#child.kill("SIGKILL");
    }, this.#killGraceMs);
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #hasExited(): boolean {
    return this.#child.exitCode !== null || this.#child.signalCode !== null;
  }

  #exitError(status: ExitStatus): Error | undefined {
    if (this.#signalled) return undefined;
    const details = { address: this.description, pid: this.pid, ...status };
    if (status.signal !== null) {
      return new TransportFailedError(
        `${this.description} (pid ${this.pid}) was killed by ${status.signal}`,
        { details },
      );
    }
    if (status.code !== 0) {
      return new TransportFailedError(
        `${this.description} (pid ${this.pid}) exited with code ${status.code}`,
        { details },
      );
    }
    return undefined;
  }
}

function graceOption(value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0 || value > MAX_TIMER_MS) {
    throw new InvalidOptionError(
      `terminateGraceMs, killGraceMs and outputGraceMs must be milliseconds from 0 to ${MAX_TIMER_MS}`,
      {
        details: { value },
      },
    );
  }
  return value;
}

function explainSpawn(err: Error, command: string, description: string): string {
  const code = errorLabel(err);
  const name = JSON.stringify(command);
  switch (code) {
    case "ENOENT":
      return `cannot run ${name} for ${description} (ENOENT): no such program; is it installed and on PATH?`;
    case "EACCES":
    case "EPERM":
      return `cannot run ${name} for ${description} (${code}): permission denied; is it an executable file?`;
    default:
      return `cannot run ${name} for ${description} (${code}): ${err.message}`;
  }
}

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
 *
 * What the child starts goes with it: a wrapper such as `sh -c 'ssh …'` or ssh's ProxyCommand
 * must not live on after we gave up on an agent that never said HELLO. Where we have no terminal,
 * the child leads a process group (and session) of its own, and every signal goes to the whole
 * group, also once the child itself has exited. Where we do have one, the child stays in ours: a
 * process outside the terminal's foreground group that asks a question there (ssh's host-key or
 * password prompt) would be stopped by SIGTTIN, or, in a session of its own, could not ask at
 * all. Then signals go to the child and every descendant found in /proc when they are sent.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { isatty } from "node:tty";
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
   * Whether the child leads a process group of its own, so signals reach all it started. Default:
   * when neither our stdin nor our stderr is a terminal (see above).
   */
  processGroup?: boolean;
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
  const processGroup = options.processGroup ?? !(isatty(0) || isatty(2));
  const child = spawn(command, args, {
    stdio: ["pipe", "pipe", options.stderr ? "pipe" : "inherit"],
    windowsHide: true,
    detached: processGroup,
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
  return new ExecTransport(child, description, exited, {
    terminateGraceMs,
    killGraceMs,
    outputGraceMs,
    processGroup,
  });
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
  /** The child leads its own process group (else: signals go to its descendants one by one). */
  readonly #processGroup: boolean;
  /** True once we signalled the child: how it then ends is our doing, not a failure. */
  #signalled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closing: Promise<void> | undefined;
  /** Once the child exited: what it left in its group has been stopped. */
  #leftovers: Promise<void> | undefined;

  constructor(
    child: ChildProcess,
    description: string,
    exited: Promise<ExitStatus>,
    options: {
      terminateGraceMs: number;
      killGraceMs: number;
      outputGraceMs: number;
      processGroup: boolean;
    },
  ) {
    const { terminateGraceMs, killGraceMs, outputGraceMs } = options;
    this.description = description;
    this.pid = child.pid as number;
    this.exited = exited;
    this.#child = child;
    this.#terminateGraceMs = terminateGraceMs;
    this.#killGraceMs = killGraceMs;
    this.#processGroup = options.processGroup;
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
    // The child may be gone already while what it started lives on.
    void this.exited.then(() => this.#stopLeftovers());
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
    await this.#stopLeftovers();
    // A stdin broken by our own signal is expected; one that broke by itself means what we sent
    // may not have been read.
    if (failure !== undefined && !this.#signalled) throw failure;
  }

  /** Sends `signal` now, and SIGKILL if the child is still there after the kill grace. */
  #signal(signal: "SIGTERM"): void {
    if (this.#hasExited()) return;
    this.#signalled = true;
    const targets = this.#targets();
    signalAll(targets, signal);
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      if (!this.#hasExited()) signalAll(targets, "SIGKILL");
    }, this.#killGraceMs);
    this.#timer.unref();
  }

  /**
   * Once the child has exited, stops what it left in its process group: SIGTERM, SIGKILL after
   * the kill grace. (Without a group of its own, orphans are out of reach: they are init's.)
   */
  #stopLeftovers(): Promise<void> {
    this.#leftovers ??= (async () => {
      if (!this.#processGroup || !groupExists(this.pid)) return;
      signalAll([-this.pid], "SIGTERM");
      const giveUpAt = performance.now() + this.#killGraceMs;
      while (groupExists(this.pid) && performance.now() < giveUpAt) {
        await new Promise((resolve) => setTimeout(resolve, LEFTOVER_POLL_MS));
      }
      signalAll([-this.pid], "SIGKILL");
    })();
    return this.#leftovers;
  }

  /** Whom a signal is for: the child's group, or the child and its descendants now. */
  #targets(): number[] {
    return this.#processGroup ? [-this.pid] : [this.pid, ...descendantsOf(this.pid)];
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

/** Polling a process group for emptiness while its leftovers get their grace. */
const LEFTOVER_POLL_MS = 20;

function signalAll(targets: readonly number[], signal: NodeJS.Signals): void {
  for (const target of targets) {
    try {
      process.kill(target, signal);
    } catch {
      // ESRCH: gone already.
    }
  }
}

function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The descendants of `pid` now, from /proc (none where there is no /proc). */
function descendantsOf(pid: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited while we looked
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so read after the last ")".
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const found: number[] = [];
  for (let queue = [pid]; queue.length > 0; ) {
    const next = queue.shift() as number;
    for (const child of children.get(next) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
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

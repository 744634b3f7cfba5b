/**
 * A helper process (issue 16): a child the host spawns, speaks to over its stdio, and supervises.
 * This is the `lines` protocol: the helper's stdout is read as lines (lines.ts), every one
 * delivered once and in order; `send` writes a line and waits while the helper is not reading
 * (a bounded queue, never a blocked event loop); stderr goes to events line by line.
 *
 * Lifecycle: the helper leads its own process group. When it exits, what it wrote before is
 * delivered first, then `exited` (code, signal, the last stderr lines); it is started again
 * with backoff while the budget allows (`maxRestarts` within `windowMs`), else `gave-up` and
 * `lines()` ends. `stop()` closes its stdin, then SIGTERM, then SIGKILL to the group, and
 * resolves once nothing of the group is left. docs/guides/helpers.md is the user's guide.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { GuestlinkError, InvalidOptionError } from "../../errors.ts";
import { GroupStopper } from "../../platform/process-group.ts";
import { Backoff, type BackoffOptions } from "../../supervise/backoff.ts";
import { LineSplitter } from "./lines.ts";

export interface HelperOptions {
  command: string;
  args?: readonly string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** How its stdio is spoken: `lines` (the only one so far). */
  protocol?: "lines";
  /** Starting it again after it exits; `false`: never. */
  restart?: { maxRestarts?: number; windowMs?: number; backoff?: BackoffOptions } | false;
  /** stop(): stdin closed, then SIGTERM after `graceMs`, then SIGKILL after `graceMs` more. */
  stop?: { graceMs?: number };
  /** A longer line is reported (event `long-line`) and skipped, never cut. Default 1 MiB. */
  maxLineBytes?: number;
  /** Bytes `send` may have waiting for the helper to read; beyond, HELPER_QUEUE_FULL. 1 MiB. */
  maxQueuedBytes?: number;
}

export type HelperEvent =
  | { type: "spawned"; pid: number }
  | { type: "stderr"; line: string }
  | { type: "long-line"; stream: "stdout" | "stderr"; bytes: number }
  | { type: "exited"; code: number | null; signal: NodeJS.Signals | null; stderrTail: string[] }
  | { type: "restarting"; attempt: number; delayMs: number }
  | { type: "gave-up"; reason: string };

const DEFAULTS = {
  maxRestarts: 5,
  windowMs: 60_000,
  graceMs: 2_000,
  maxLineBytes: 1 << 20,
  maxQueuedBytes: 1 << 20,
  backoff: { baseMs: 100, ceilingMs: 5_000 },
} as const;
/** Lines kept of stderr for the `exited` event and errors. */
const STDERR_TAIL = 10;
/** Lines waiting for the reader before the helper's stdout is paused. */
const MAX_WAITING_LINES = 1024;

export class Helper {
  readonly #o: HelperOptions;
  readonly #listeners = new Set<(e: HelperEvent) => void>();
  readonly #backoff: Backoff;
  #child: ChildProcess | undefined;
  #state: "running" | "restarting" | "stopped" | "gave-up" = "restarting";
  #exits: number[] = [];
  #stderrTail: string[] = [];
  #queuedBytes = 0;
  /** Lines not yet taken by `lines()`, and who waits for the next. */
  #waiting: string[] = [];
  #wake: (() => void) | undefined;
  #iterating = false;
  #stopping: Promise<void> | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  /** An exit to report once the reader has the lines written before it. */
  #pendingExit: (() => void) | undefined;

  constructor(options: HelperOptions) {
    if (typeof options.command !== "string" || options.command === "") {
      throw new InvalidOptionError("spawnHelper needs a command to run");
    }
    if ((options.protocol ?? "lines") !== "lines") {
      throw new InvalidOptionError(
        `spawnHelper: protocol "${options.protocol}" is not available; use "lines"`,
      );
    }
    this.#o = options;
    const restart = options.restart === false ? undefined : options.restart;
    this.#backoff = new Backoff(restart?.backoff ?? DEFAULTS.backoff, Math.random);
    this.#spawn();
  }

  /** The helper's pid while it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** running, restarting (between an exit and the next start), stopped, gave-up. */
  get state(): string {
    return this.#state;
  }

  onEvent(listener: (e: HelperEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Every line the helper writes, in order; ends when it has exited for good. One reader. */
  async *lines(): AsyncGenerator<string> {
    if (this.#iterating) throw new InvalidOptionError("lines() has a reader already");
    this.#iterating = true;
    try {
      for (;;) {
        if (this.#waiting.length === 0 && this.#pendingExit !== undefined) {
          const exited = this.#pendingExit;
          this.#pendingExit = undefined;
          exited();
        }
        const line = this.#waiting.shift();
        if (line !== undefined) {
          if (this.#waiting.length < MAX_WAITING_LINES / 2) this.#child?.stdout?.resume();
          yield line;
          continue;
        }
        if (this.#state === "stopped" || this.#state === "gave-up") return;
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
      }
    } finally {
      this.#iterating = false;
      const exited = this.#pendingExit;
      this.#pendingExit = undefined;
      exited?.();
    }
  }

  /** Writes `line` and a newline; resolves once the helper's pipe took it. */
  send(line: string): Promise<void> {
    const child = this.#child;
    const stdin = child?.stdin;
    if (this.#state !== "running" || stdin === undefined || stdin === null || stdin.destroyed) {
      return Promise.reject(this.#notRunning());
    }
    const bytes = Buffer.from(`${line}\n`);
    const max = this.#o.maxQueuedBytes ?? DEFAULTS.maxQueuedBytes;
    if (this.#queuedBytes + bytes.length > max) {
      return Promise.reject(
        new GuestlinkError(
          "HELPER_QUEUE_FULL",
          `the helper is not reading its stdin: ${this.#queuedBytes} bytes wait already, and ${bytes.length} more would pass the limit of ${max}`,
          { details: { queuedBytes: this.#queuedBytes, maxQueuedBytes: max } },
        ),
      );
    }
    this.#queuedBytes += bytes.length;
    return new Promise((resolve, reject) => {
      stdin.write(bytes, (err) => {
        this.#queuedBytes -= bytes.length;
        if (err) reject(this.#notRunning());
        else resolve();
      });
    });
  }

  /** Stops it for good: stdin closed, SIGTERM, SIGKILL to its group; resolves when all are gone. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    clearTimeout(this.#restartTimer);
    const child = this.#child;
    this.#state = "stopped";
    this.#wakeReader();
    if (child === undefined || child.pid === undefined) return;
    const graceMs = this.#o.stop?.graceMs ?? DEFAULTS.graceMs;
    const exited = child.exitCode !== null || child.signalCode !== null;
    const gone = exited
      ? Promise.resolve()
      : new Promise<void>((r) => child.once("close", () => r()));
    child.stdin?.end();
    const stopper = new GroupStopper(child.pid, graceMs);
    const term = setTimeout(() => stopper.stop("stopped"), graceMs);
    await gone;
    clearTimeout(term);
    // Whatever it left in its group goes too.
    stopper.stop("stopped");
    await stopper.waitGone();
    stopper.dispose();
  }

  #spawn(): void {
    const o = this.#o;
    const child = spawn(o.command, o.args ?? [], {
      cwd: o.cwd,
      env: o.env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    this.#child = child;
    this.#state = "running";
    this.#stderrTail = [];
    const max = o.maxLineBytes ?? DEFAULTS.maxLineBytes;
    const out = new LineSplitter(max, {
      line: (text) => {
        this.#waiting.push(text);
        if (this.#waiting.length >= MAX_WAITING_LINES) child.stdout?.pause();
        this.#wakeReader();
      },
      tooLong: (bytes) => this.#emit({ type: "long-line", stream: "stdout", bytes }),
    });
    const err = new LineSplitter(max, {
      line: (text) => {
        this.#stderrTail.push(text);
        if (this.#stderrTail.length > STDERR_TAIL) this.#stderrTail.shift();
        this.#emit({ type: "stderr", line: text });
      },
      tooLong: (bytes) => this.#emit({ type: "long-line", stream: "stderr", bytes }),
    });
    child.stdout?.on("data", (chunk: Buffer) => out.push(chunk));
    child.stderr?.on("data", (chunk: Buffer) => err.push(chunk));
    child.stdin?.on("error", () => {});
    let spawnError: Error | undefined;
    child.once("error", (e) => {
      spawnError = e;
    });
    if (child.pid !== undefined) this.#emit({ type: "spawned", pid: child.pid });
    // 'close' comes after the exit and after stdout and stderr ended: everything the helper
    // wrote has been delivered by then.
    child.once("close", (code, signal) => {
      out.end();
      err.end();
      if (spawnError !== undefined) {
        this.#stderrTail.push(
          `${o.command} could not start: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`,
        );
      }
      if (this.#child === child) this.#child = undefined;
      const stderrTail = [...this.#stderrTail];
      const exited = () => {
        this.#emit({ type: "exited", code, signal, stderrTail });
        if (this.#state === "stopped") this.#wakeReader();
        else this.#afterExit();
      };
      // What it wrote before it exited reaches the reader of lines() before `exited` does.
      if (this.#iterating && this.#waiting.length > 0) this.#pendingExit = exited;
      else exited();
    });
  }

  #afterExit(): void {
    const restart = this.#o.restart;
    if (restart === false) {
      this.#giveUp("restart is off");
      return;
    }
    const maxRestarts = restart?.maxRestarts ?? DEFAULTS.maxRestarts;
    const windowMs = restart?.windowMs ?? DEFAULTS.windowMs;
    const now = Date.now();
    this.#exits = this.#exits.filter((t) => now - t < windowMs);
    if (this.#exits.length >= maxRestarts) {
      this.#giveUp(
        `it exited ${this.#exits.length + 1} times within ${windowMs} ms (restart.maxRestarts is ${maxRestarts})`,
      );
      return;
    }
    this.#exits.push(now);
    const delayMs = this.#backoff.next();
    this.#state = "restarting";
    this.#emit({ type: "restarting", attempt: this.#exits.length, delayMs });
    this.#restartTimer = setTimeout(() => {
      if (this.#state === "restarting") this.#spawn();
    }, delayMs);
  }

  #giveUp(reason: string): void {
    this.#state = "gave-up";
    this.#emit({ type: "gave-up", reason });
    this.#wakeReader();
  }

  #notRunning(): GuestlinkError {
    const tail =
      this.#stderrTail.length > 0
        ? `; its last stderr: ${this.#stderrTail.slice(-3).join(" | ")}`
        : "";
    if (this.#state === "gave-up") {
      return new GuestlinkError(
        "HELPER_FAILED",
        `the helper ${this.#o.command} kept exiting and is not restarted${tail}`,
        {
          details: { command: this.#o.command, stderrTail: [...this.#stderrTail] },
        },
      );
    }
    return new GuestlinkError(
      "HELPER_EXITED",
      `the helper ${this.#o.command} is not running (${this.#state})${tail}`,
      {
        details: {
          command: this.#o.command,
          state: this.#state,
          stderrTail: [...this.#stderrTail],
        },
      },
    );
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #emit(event: HelperEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure is its own.
      }
    }
  }
}

/** Starts a helper process (see `Helper`). */
export function spawnHelper(options: HelperOptions): Helper {
  return new Helper(options);
}

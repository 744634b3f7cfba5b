/**
 * A helper process (issue 16): a child the host spawns, speaks to over its stdio, and supervises.
 * How its stdio is spoken is the protocol:
 *
 * - `lines`: stdout read as lines (lines.ts), every one delivered once and in order; `send`
 *   writes a line and waits while the helper is not reading (a bounded queue, never a blocked
 *   event loop).
 * - `jsonrpc`: JSON-RPC 2.0, one message per line (jsonrpc.ts): `request`, `notify`, `handle`.
 * - `guestlink`: guestlink's own protocol on its stdio (`guestlink agent --stdio`): `session`.
 *
 * stderr goes to events line by line, whatever the protocol. Lifecycle: the helper leads its own
 * process group. When it exits, what it wrote before is delivered first, then pending requests
 * fail (HELPER_EXITED) and `exited` is reported (code, signal, the last stderr lines); it is
 * started again with backoff while the budget allows (`maxRestarts` within `windowMs`), else
 * `gave-up`, and everything fails HELPER_FAILED until `restart()`. `stop()` closes its stdin,
 * then SIGTERM, then SIGKILL to the group, and resolves once nothing of the group is left.
 * docs/guides/helpers.md is the user's guide.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { CallOptions } from "../../abort.ts";
import { GuestlinkError, InvalidOptionError } from "../../errors.ts";
import { GroupStopper } from "../../platform/process-group.ts";
import { type NodeSessionOptions, sessionOptions } from "../../platform/session.ts";
import { Session } from "../../session/session.ts";
import { Backoff, type BackoffOptions } from "../../supervise/backoff.ts";
import { raceCallOptions } from "../../transport/call-options.ts";
import { NodeStreamTransport } from "../../transport/node-stream.ts";
import { JsonRpcPeer, type RpcHandler } from "./jsonrpc.ts";
import { LineSplitter } from "./lines.ts";

export type HelperProtocol = "lines" | "jsonrpc" | "guestlink";

export interface HelperOptions {
  command: string;
  args?: readonly string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** How its stdio is spoken. Default `lines`. */
  protocol?: HelperProtocol;
  /** Starting it again after it exits; `false`: never. */
  restart?: { maxRestarts?: number; windowMs?: number; backoff?: BackoffOptions } | false;
  /** stop(): stdin closed, then SIGTERM after `graceMs`, then SIGKILL after `graceMs` more. */
  stop?: { graceMs?: number };
  /** A longer line is reported (event `long-line`) and skipped, never cut. Default 1 MiB. */
  maxLineBytes?: number;
  /** Bytes written and not yet taken by the helper; beyond, HELPER_QUEUE_FULL. Default 1 MiB. */
  maxQueuedBytes?: number;
  /** `guestlink`: the session's options (resume is off: a helper's stdio cannot be redialled). */
  session?: NodeSessionOptions;
  /** `guestlink`: called with each new session before its handshake, to register handlers. */
  setup?: (session: Session) => void;
}

export type HelperEvent =
  | { type: "spawned"; pid: number }
  /** It runs and can be spoken to (`guestlink`: once the handshake is done). */
  | { type: "ready"; pid: number }
  | { type: "stderr"; line: string }
  /** `jsonrpc`: a line that is not a JSON-RPC message this side can use, and why. */
  | { type: "stray"; line: string; reason: string }
  /** `jsonrpc`: a notification from the helper that no handler takes. */
  | { type: "notification"; method: string; params: unknown }
  | { type: "long-line"; stream: "stdout" | "stderr"; bytes: number }
  | { type: "exited"; code: number | null; signal: NodeJS.Signals | null; stderrTail: string[] }
  | { type: "restarting"; attempt: number; delayMs: number }
  | { type: "gave-up"; reason: string };

export type HelperState = "running" | "restarting" | "stopped" | "gave-up";

const PROTOCOLS: readonly HelperProtocol[] = ["lines", "jsonrpc", "guestlink"];
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
  readonly #protocol: HelperProtocol;
  readonly #listeners = new Set<(e: HelperEvent) => void>();
  readonly #backoff: Backoff;
  readonly #rpc: JsonRpcPeer | undefined;
  #child: ChildProcess | undefined;
  #session: Session | undefined;
  #state: HelperState = "restarting";
  #ready = false;
  #readyWaiters: { resolve(): void; reject(err: Error): void }[] = [];
  #exits: number[] = [];
  #stderrTail: string[] = [];
  #queuedBytes = 0;
  /** The stdin corked until the end of this turn, so that the turn's lines leave together. */
  #corked: NodeJS.WritableStream | undefined;
  /** Lines not yet taken by `lines()` (from `#taken` on), and who waits for the next. */
  readonly #waiting: string[] = [];
  #taken = 0;
  /** The stdout paused because the reader of lines() fell behind. */
  #paused: NodeJS.ReadableStream | undefined;
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
    const protocol = options.protocol ?? "lines";
    if (!PROTOCOLS.includes(protocol)) {
      throw new InvalidOptionError(
        `spawnHelper: protocol must be one of ${PROTOCOLS.join(", ")}, got ${JSON.stringify(protocol)}`,
      );
    }
    checkWhole("maxLineBytes", options.maxLineBytes, 1);
    checkWhole("maxQueuedBytes", options.maxQueuedBytes, 1);
    checkWhole("stop.graceMs", options.stop?.graceMs, 0);
    if (options.restart !== false) {
      checkWhole("restart.maxRestarts", options.restart?.maxRestarts, 0);
      checkWhole("restart.windowMs", options.restart?.windowMs, 1);
    }
    this.#o = options;
    this.#protocol = protocol;
    const restart = options.restart === false ? undefined : options.restart;
    this.#backoff = new Backoff(restart?.backoff ?? DEFAULTS.backoff, Math.random);
    if (protocol === "jsonrpc") {
      this.#rpc = new JsonRpcPeer((line) => this.#writeLine(line), {
        stray: (line, reason) => this.#emit({ type: "stray", line, reason }),
        notification: (method, params) => this.#emit({ type: "notification", method, params }),
        handlerFailed: (method, err) =>
          this.#emit({
            type: "stderr",
            line: `(host) the handler of notification ${method} failed: ${String(err)}`,
          }),
      });
    }
    this.#spawn();
  }

  /** The helper's pid while it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get state(): HelperState {
    return this.#state;
  }

  /** It runs and can be spoken to now (see `ready()`). */
  get isReady(): boolean {
    return this.#ready;
  }

  get protocol(): HelperProtocol {
    return this.#protocol;
  }

  /** `jsonrpc`: requests sent and not yet answered (what a pool balances on). */
  get outstanding(): number {
    return this.#rpc?.outstanding ?? 0;
  }

  /** `guestlink`: the session over the running helper's stdio; a new one after each restart. */
  get session(): Session | undefined {
    this.#need("guestlink", "session");
    return this.#session;
  }

  onEvent(listener: (e: HelperEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Resolves once the helper runs and can be spoken to (`guestlink`: its handshake is done).
   * Rejects HELPER_FAILED once it gave up, HELPER_EXITED once it was stopped.
   */
  ready(options?: CallOptions): Promise<void> {
    if (this.#ready) return Promise.resolve();
    if (this.#state === "gave-up" || this.#state === "stopped") {
      return Promise.reject(this.#notRunning());
    }
    let waiter: { resolve(): void; reject(err: Error): void } | undefined;
    const waiting = new Promise<void>((resolve, reject) => {
      waiter = { resolve, reject };
      this.#readyWaiters.push(waiter);
    });
    return raceCallOptions(waiting, options, {
      onDeadline: () =>
        new GuestlinkError(
          "DEADLINE_EXCEEDED",
          `the helper ${this.#o.command} was not ready before the deadline (${this.#state})`,
        ),
      cancel: () => {
        this.#readyWaiters = this.#readyWaiters.filter((w) => w !== waiter);
      },
    });
  }

  /** `lines`: every line the helper writes, in order; ends when it has exited for good. */
  lines(): AsyncGenerator<string> {
    this.#need("lines", "lines()");
    if (this.#iterating) throw new InvalidOptionError("lines() has a reader already");
    this.#iterating = true;
    return new LineReader({
      take: () => this.#takeLine(),
      ended: () => this.#state === "stopped" || this.#state === "gave-up",
      wait: (wake) => {
        this.#wake = wake;
      },
      finish: () => {
        this.#iterating = false;
        this.#wakeReader();
        const exited = this.#pendingExit;
        this.#pendingExit = undefined;
        exited?.();
      },
    });
  }

  /** The next line for the reader of lines(), if one waits; reports a deferred exit when none. */
  #takeLine(): string | undefined {
    const waiting = this.#waiting;
    if (this.#taken === waiting.length) {
      const exited = this.#pendingExit;
      if (exited === undefined) return undefined;
      this.#pendingExit = undefined;
      exited();
      if (this.#taken === waiting.length) return undefined;
    }
    const line = waiting[this.#taken] as string;
    this.#taken++;
    if (this.#taken === waiting.length) {
      waiting.length = 0;
      this.#taken = 0;
    }
    if (this.#paused !== undefined && waiting.length - this.#taken < MAX_WAITING_LINES / 2) {
      const paused = this.#paused;
      this.#paused = undefined;
      paused.resume();
    }
    return line;
  }

  /** `lines`: writes `line` and a newline; resolves once the helper's pipe took it. */
  send(line: string): Promise<void> {
    this.#need("lines", "send()");
    return this.#writeLine(line);
  }

  /** `jsonrpc`: calls `method` in the helper; resolves with its result. */
  request(method: string, params?: unknown, options?: CallOptions): Promise<unknown> {
    return this.#needRpc("request()").request(method, params, options);
  }

  /** `jsonrpc`: a notification to the helper (no answer); resolves once written. */
  notify(method: string, params?: unknown): Promise<void> {
    return this.#needRpc("notify()").notify(method, params);
  }

  /** `jsonrpc`: serves the helper's requests (and notifications) for `method`. */
  handle(method: string, handler: RpcHandler): void {
    this.#needRpc("handle()").handle(method, handler);
  }

  /** Stops it for good: stdin closed, SIGTERM, SIGKILL to its group; resolves when all are gone. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  /**
   * Starts it again with a fresh restart budget after it gave up or was stopped. While it runs
   * or waits to be restarted, does nothing.
   */
  async restart(): Promise<void> {
    if (this.#stopping !== undefined) await this.#stopping;
    if (this.#state !== "gave-up" && this.#state !== "stopped") return;
    this.#stopping = undefined;
    this.#exits = [];
    this.#backoff.reset();
    this.#spawn();
  }

  async #stop(): Promise<void> {
    clearTimeout(this.#restartTimer);
    const child = this.#child;
    const session = this.#session;
    this.#state = "stopped";
    this.#rejectReadyWaiters();
    this.#wakeReader();
    if (child === undefined || child.pid === undefined) return;
    const graceMs = this.#o.stop?.graceMs ?? DEFAULTS.graceMs;
    const exited = child.exitCode !== null || child.signalCode !== null;
    const gone = exited
      ? Promise.resolve()
      : new Promise<void>((r) => child.once("close", () => r()));
    const stopper = new GroupStopper(child.pid, graceMs);
    const term = setTimeout(() => stopper.stop("stopped"), graceMs);
    // A guestlink helper is told first (GOAWAY), and its session ends its stdin.
    if (session !== undefined) await Promise.race([session.close(), gone]);
    child.stdin?.end();
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
    const out = this.#readStdout(child, max);
    const err = new LineSplitter(max, {
      line: (text) => {
        this.#stderrTail.push(text);
        if (this.#stderrTail.length > STDERR_TAIL) this.#stderrTail.shift();
        this.#emit({ type: "stderr", line: text });
      },
      tooLong: (bytes) => this.#emit({ type: "long-line", stream: "stderr", bytes }),
    });
    child.stderr?.on("data", (chunk: Buffer) => err.push(chunk));
    child.stdin?.on("error", () => {});
    let spawnError: Error | undefined;
    child.once("error", (e) => {
      spawnError = e;
    });
    if (child.pid !== undefined) this.#emit({ type: "spawned", pid: child.pid });
    if (this.#protocol !== "guestlink") child.once("spawn", () => this.#becameReady(child));
    // 'close' comes after the exit and after stdout and stderr ended: everything the helper
    // wrote has been delivered by then.
    child.once("close", (code, signal) => {
      out?.end();
      err.end();
      if (spawnError !== undefined) {
        this.#stderrTail.push(
          `${o.command} could not start: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`,
        );
      }
      if (this.#child === child) {
        this.#child = undefined;
        this.#ready = false;
      }
      const stderrTail = [...this.#stderrTail];
      const gone = this.#exitError(code, signal, stderrTail);
      this.#rpc?.failAll(gone);
      this.#session?.abort(gone);
      this.#session = undefined;
      const exited = () => {
        this.#emit({ type: "exited", code, signal, stderrTail });
        if (this.#state === "stopped") this.#wakeReader();
        else this.#afterExit();
      };
      // What it wrote before it exited reaches the reader of lines() before `exited` does.
      if (this.#iterating && this.#waiting.length > this.#taken) this.#pendingExit = exited;
      else exited();
    });
  }

  /** Wires the helper's stdout to its protocol; the line splitter to end at its exit, if any. */
  #readStdout(child: ChildProcess, maxLineBytes: number): LineSplitter | undefined {
    const stdout = child.stdout as NonNullable<ChildProcess["stdout"]>;
    const tooLong = (bytes: number) => this.#emit({ type: "long-line", stream: "stdout", bytes });
    if (this.#protocol === "guestlink") {
      const stdin = child.stdin as NonNullable<ChildProcess["stdin"]>;
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
        child.once("exit", (code, signal) => resolve([code, signal])),
      );
      const transport = new NodeStreamTransport(stdout, stdin, {
        description: `helper ${this.#o.command} (pid ${child.pid})`,
        // Whatever else the helper prints lands between the frames.
        lossy: true,
        // Its stdout ends when it exits: the session fails with how, unless we stopped it.
        beforeEnd: async () => {
          const [code, signal] = await exited;
          if (this.#state === "stopped") return undefined;
          return this.#exitError(code, signal, [...this.#stderrTail]);
        },
      });
      const session = new Session(
        transport,
        sessionOptions("client", { ...this.#o.session, resume: false }),
      );
      this.#session = session;
      this.#o.setup?.(session);
      session.ready.then(
        () => {
          if (this.#session === session) this.#becameReady(child);
        },
        // A handshake that fails ends the session; the helper's exit is reported on its own.
        () => {},
      );
      return undefined;
    }
    const rpc = this.#rpc;
    const splitter = new LineSplitter(maxLineBytes, {
      line:
        rpc !== undefined
          ? (text) => rpc.receive(text)
          : (text) => {
              const waiting = this.#waiting.push(text) - this.#taken;
              if (waiting >= MAX_WAITING_LINES && this.#paused === undefined) {
                stdout.pause();
                this.#paused = stdout;
              }
              this.#wakeReader();
            },
      tooLong,
    });
    stdout.on("data", (chunk: Buffer) => splitter.push(chunk));
    return splitter;
  }

  #becameReady(child: ChildProcess): void {
    if (this.#child !== child || this.#state !== "running") return;
    this.#ready = true;
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const w of waiters) w.resolve();
    this.#emit({ type: "ready", pid: child.pid as number });
  }

  /** Writes `line` and a newline to the helper's stdin, within the queue limit. */
  #writeLine(line: string): Promise<void> {
    const child = this.#child;
    const stdin = child?.stdin;
    if (this.#state !== "running" || stdin === undefined || stdin === null || stdin.destroyed) {
      return Promise.reject(this.#notRunning());
    }
    const text = `${line}\n`;
    const bytes = Buffer.byteLength(text);
    const max = this.#o.maxQueuedBytes ?? DEFAULTS.maxQueuedBytes;
    if (this.#queuedBytes + bytes > max) {
      return Promise.reject(
        new GuestlinkError(
          "HELPER_QUEUE_FULL",
          `the helper is not reading its stdin: ${this.#queuedBytes} bytes wait already, and ${bytes} more would pass the limit of ${max}`,
          { details: { queuedBytes: this.#queuedBytes, maxQueuedBytes: max } },
        ),
      );
    }
    this.#queuedBytes += bytes;
    if (this.#corked !== stdin) {
      // The lines written in one turn (requests sent as answers come in) leave in one write:
      // one system call here, one read for the helper. Uncorked once the turn's microtasks ran.
      stdin.cork();
      this.#corked = stdin;
      process.nextTick(() => {
        if (this.#corked === stdin) this.#corked = undefined;
        stdin.uncork();
      });
    }
    return new Promise((resolve, reject) => {
      stdin.write(text, (err) => {
        this.#queuedBytes -= bytes;
        if (err) reject(this.#notRunning());
        else resolve();
      });
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
    this.#rejectReadyWaiters();
    this.#wakeReader();
  }

  #rejectReadyWaiters(): void {
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const w of waiters) w.reject(this.#notRunning());
  }

  /** What pending work fails with when the helper exits. */
  #exitError(
    code: number | null,
    signal: NodeJS.Signals | null,
    stderrTail: string[],
  ): GuestlinkError {
    const how = signal !== null ? `killed by ${signal}` : `exit code ${code}`;
    const doing = this.#state === "stopped" ? "was stopped" : `exited (${how})`;
    return new GuestlinkError(
      "HELPER_EXITED",
      `the helper ${this.#o.command} ${doing} before it answered${tailText(stderrTail)}`,
      { details: { command: this.#o.command, code, signal, stderrTail } },
    );
  }

  #notRunning(): GuestlinkError {
    const tail = tailText(this.#stderrTail);
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

  #need(protocol: HelperProtocol, what: string): void {
    if (this.#protocol !== protocol) {
      throw new InvalidOptionError(
        `${what} is for helpers with protocol "${protocol}"; this one speaks "${this.#protocol}"`,
      );
    }
  }

  #needRpc(what: string): JsonRpcPeer {
    this.#need("jsonrpc", what);
    return this.#rpc as JsonRpcPeer;
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

interface LineSource {
  /** The next line if one waits. */
  take(): string | undefined;
  /** No more lines will come. */
  ended(): boolean;
  /** Calls `wake` once lines may have come, or the source ended. */
  wait(wake: () => void): void;
  /** The reader is done (at the end, or it stopped reading). */
  finish(): void;
}

const DONE: IteratorReturnResult<undefined> = { value: undefined, done: true };

/**
 * What lines() returns: an async iterator by hand, as an async generator costs two microtask
 * turns a line (its `yield` awaits too) where a line that waits already needs one. Calls to
 * next() are answered in order, as a generator's are.
 */
class LineReader implements AsyncGenerator<string, undefined> {
  readonly #source: LineSource;
  #finished = false;
  /** The last next() that waits for a line; later calls are answered after it. */
  #tail: Promise<IteratorResult<string, undefined>> | undefined;

  constructor(source: LineSource) {
    this.#source = source;
  }

  next(): Promise<IteratorResult<string, undefined>> {
    if (this.#tail !== undefined) return this.#track(this.#tail.then(() => this.#step()));
    const now = this.#now();
    if (now !== undefined) return Promise.resolve(now);
    return this.#track(this.#wait());
  }

  #step(): IteratorResult<string, undefined> | Promise<IteratorResult<string, undefined>> {
    return this.#now() ?? this.#wait();
  }

  /**
   * Waits until a line or the end is there. The line is taken after the wake-up, not in it:
   * until the reader has it, it waits in the helper, and an exit is reported after it.
   */
  async #wait(): Promise<IteratorResult<string, undefined>> {
    for (;;) {
      await new Promise<void>((wake) => this.#source.wait(wake));
      const now = this.#now();
      if (now !== undefined) return now;
    }
  }

  #track(
    next: Promise<IteratorResult<string, undefined>>,
  ): Promise<IteratorResult<string, undefined>> {
    this.#tail = next;
    const settled = () => {
      if (this.#tail === next) this.#tail = undefined;
    };
    next.then(settled, settled);
    return next;
  }

  /** A line or the end if either is there now. */
  #now(): IteratorResult<string, undefined> | undefined {
    if (this.#finished) return DONE;
    const line = this.#source.take();
    if (line !== undefined) return { value: line, done: false };
    if (!this.#source.ended()) return undefined;
    this.#finish();
    return DONE;
  }

  return(): Promise<IteratorResult<string, undefined>> {
    this.#finish();
    return Promise.resolve(DONE);
  }

  throw(err: unknown): Promise<IteratorResult<string, undefined>> {
    this.#finish();
    return Promise.reject(err);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#source.finish();
  }
}

function tailText(stderrTail: readonly string[]): string {
  return stderrTail.length > 0 ? `; its last stderr: ${stderrTail.slice(-3).join(" | ")}` : "";
}

function checkWhole(name: string, value: number | undefined, min: number): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new InvalidOptionError(`spawnHelper: ${name} must be a whole number >= ${min}`, {
      details: { [name]: value },
    });
  }
}

/** Starts a helper process (see `Helper`). */
export function spawnHelper(options: HelperOptions): Helper {
  return new Helper(options);
}

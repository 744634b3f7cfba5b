/**
 * The agent's native spawner: `native/spawn.c` (guestlink_spawn.node) wrapped for exec.
 *
 * - The command's pipes are opened in Node as `net.Socket`s on the descriptor (libuv's pipe
 *   handle: non-blocking reads and writes driven by epoll, EAGAIN handled, backpressure as with
 *   any socket). A write to a command that is gone fails with EPIPE, as child_process's does.
 *   Stdin's becomes one only when there is input to write (`ChildStdin`); without, its end is
 *   just closed.
 * - A terminal's master side cannot be a `net.Socket` (Node takes it for a TTY and its TTY
 *   handle would make writes blocking), so `TerminalStream` reads and writes it itself:
 *   non-blocking read()/write() when the addon's libuv poll handle says it is ready. EIO on read
 *   is the end (every process holding the terminal has closed it).
 * - The child is reaped when its pidfd becomes readable (Linux 5.3+), polled on the event loop:
 *   no SIGCHLD handler, no thread, and nothing else can take the exit status (libuv reaps only
 *   the pids it spawned). Without pidfds, a SIGCHLD listener, backed by a one-second look in
 *   case a signal was merged with another, reaps the children waited for.
 *
 * The addon is looked for as `platform/native-addon.ts` says, under `guestlink_spawn.node`, or
 * at `$GUESTLINK_SPAWN_ADDON`; `GUESTLINK_SPAWN_ADDON=off` turns it off (the agent then uses
 * child_process, and `exec -t` fails with TTY_UNSUPPORTED).
 */
import { closeSync, readSync, writeSync } from "node:fs";
import net from "node:net";
import { constants as osConstants } from "node:os";
import { Duplex } from "node:stream";
import { getSystemErrorName } from "node:util";
import { isMainThread } from "node:worker_threads";
import { addonCandidates, findAddon, requireAddon } from "../platform/native-addon.ts";
import { PipeReadable } from "./pipe-reads.ts";
import {
  type ChildExit,
  type ChildStdin,
  openedStdin,
  type SpawnedChild,
  type SpawnRequest,
  type Starting,
} from "./spawner.ts";

export const SPAWN_ADDON_FILE = "guestlink_spawn.node";
/** A path to load instead of searching, or `off` to start commands with child_process. */
export const SPAWN_ADDON_ENV = "GUESTLINK_SPAWN_ADDON";

/** What `native/spawn.c` exports. */
export interface SpawnAddon {
  spawn(
    file: string,
    argv: string[],
    /** NAME=value strings, or null for the process's own environment. */
    envp: string[] | null,
    cwd: string | null,
    stdio: [number, number, number],
    tty: [number, number] | null,
  ): { pid: number; pidfd: number; fds: [number, number, number] };
  /** undefined while it runs; else [exitCode, null] or [null, signalNumber]. */
  reap(pid: number): [number | null, number | null] | undefined;
  setWindowSize(fd: number, rows: number, cols: number): void;
  poll(fd: number, callback: (status: number, events: number) => void): object;
  /** 1 readable, 2 writable, 3 both, 0 none. */
  pollEvents(handle: object, events: number): void;
  pollClose(handle: object): void;
  /** posix_spawn_file_actions_addchdir_np exists (glibc 2.29+). */
  canChdir: boolean;
  /**
   * spawn() takes null for envp (the process's own environment). Absent from an addon built
   * before it did (one copied beside a newer bundled agent), which is then given strings.
   */
  ownEnvironment?: boolean;
}

const READABLE = 1;
const WRITABLE = 2;

let loaded: { addon: SpawnAddon } | { reason: string } | undefined;

/** The addon, or why there is none (a sentence for an error message). Looked for once. */
export function spawnAddon(): { addon: SpawnAddon } | { reason: string } {
  loaded ??= loadSpawnAddon();
  return loaded;
}

/** Forgets what was loaded, so that the next `spawnAddon()` looks again (for tests). */
export function resetSpawnAddon(): void {
  loaded = undefined;
}

function loadSpawnAddon(): { addon: SpawnAddon } | { reason: string } {
  if (process.platform !== "linux") {
    return { reason: `the spawn addon is Linux only, and the agent runs on ${process.platform}` };
  }
  const override = process.env[SPAWN_ADDON_ENV];
  if (override !== undefined && /^(off|0|no|none|false)$/i.test(override)) {
    return { reason: `the spawn addon is turned off (${SPAWN_ADDON_ENV}=${override})` };
  }
  const candidates = addonCandidates(SPAWN_ADDON_FILE, override);
  const path = findAddon(candidates);
  if (path === undefined) {
    return {
      reason: `the spawn addon (${SPAWN_ADDON_FILE}) is not built: looked in ${candidates.join(", ")}; build it with \`node scripts/build-native.mjs\` in the agent's package (needs a C compiler, make and Python), or copy it next to the bundled agent`,
    };
  }
  try {
    const addon = requireAddon(path) as SpawnAddon;
    if (typeof addon.spawn !== "function" || typeof addon.poll !== "function") {
      return { reason: `${path} is not guestlink's spawn addon (it lacks spawn/poll)` };
    }
    return { addon };
  } catch (err) {
    const why = err instanceof Error ? (err.message.split("\n")[0] ?? "") : String(err);
    return {
      reason: `the spawn addon ${path} cannot be loaded (${why}): rebuild it for this machine and Node`,
    };
  }
}

/** The addon's error as Node's system errors look: `code` ("ENOENT") beside `errno`, `syscall`. */
function systemError(err: unknown, file: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.errno === "number" && e.code === undefined) {
    const known = Object.entries(osConstants.errno).find(([, n]) => n === -(e.errno as number));
    try {
      e.code = known?.[0] ?? getSystemErrorName(e.errno);
    } catch {
      // not an errno Node knows
    }
    if (e.syscall === "spawn") {
      e.syscall = `spawn ${file}`;
      e.path = file;
    }
  }
  return err;
}

function signalName(number: number): NodeJS.Signals | null {
  for (const [name, n] of Object.entries(osConstants.signals)) {
    if (n === number) return name as NodeJS.Signals;
  }
  return null;
}

/** Starts `request` with posix_spawn. Fails (in `started`) as child_process would. */
export function startNative(addon: SpawnAddon, request: SpawnRequest): Starting {
  // The agent's own environment is the C library's `environ`, which process.env writes through
  // to on the main thread (a worker's process.env is a copy of its own): the addon reads it
  // there rather than have it copied into strings for every command.
  let envp: string[] | null = null;
  if (request.env !== process.env || !isMainThread || addon.ownEnvironment !== true) {
    envp = [];
    for (const [name, value] of Object.entries(request.env)) {
      if (value !== undefined) envp.push(`${name}=${value}`);
    }
  }
  let spawned: ReturnType<SpawnAddon["spawn"]>;
  try {
    spawned = addon.spawn(
      request.file,
      [request.file, ...request.args],
      envp,
      request.cwd ?? null,
      request.stdio.map((pipe) => (pipe ? 1 : 0)) as [number, number, number],
      request.tty ? [request.tty.rows, request.tty.cols] : null,
    );
  } catch (err) {
    return { pid: undefined, started: Promise.resolve({ error: systemError(err, request.file) }) };
  }
  const { pid, pidfd, fds } = spawned;
  const exited = watchExit(addon, pid, pidfd);
  let child: SpawnedChild;
  if (request.tty) {
    const terminal = new TerminalStream(addon, fds[0]);
    child = {
      pid,
      spawner: "native",
      stdin: openedStdin(terminal),
      stdout: terminal,
      stderr: null,
      exited,
      resize: (rows, cols) => terminal.resize(rows, cols),
    };
  } else {
    const [stdin, stdout, stderr] = fds;
    child = {
      pid,
      spawner: "native",
      stdin: stdin < 0 ? null : pipeStdin(stdin),
      stdout: stdout < 0 ? null : new PipeReadable(stdout),
      stderr: stderr < 0 ? null : new PipeReadable(stderr),
      exited,
    };
  }
  return { pid, started: Promise.resolve(child) };
}

/** The agent's end of a command's stdin pipe, made a stream only if there is input to write. */
function pipeStdin(fd: number): ChildStdin {
  let socket: net.Socket | undefined;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    closeSync(fd);
  };
  return {
    open() {
      if (socket === undefined) {
        // Once closed, the number may be another file's: never wrap it.
        if (closed) throw new Error("the command's stdin was already closed");
        socket = new net.Socket({ fd, readable: false, writable: true });
        closed = true; // the socket's now
      }
      return socket;
    },
    end: () => (socket === undefined ? close() : socket.end()),
    destroy: () => (socket === undefined ? close() : socket.destroy()),
  };
}

function toExit(status: [number | null, number | null]): ChildExit {
  const [code, signal] = status;
  return { code, signal: signal === null ? null : signalName(signal) };
}

/** `pid`'s status once it has exited, undefined while it runs. */
function reap(addon: SpawnAddon, pid: number): ReturnType<SpawnAddon["reap"]> {
  try {
    return addon.reap(pid);
  } catch {
    // ECHILD: someone else reaped it (nothing in Node does); its status is lost.
    return [null, null];
  }
}

/** Resolves once `pid` has exited and been reaped. */
function watchExit(addon: SpawnAddon, pid: number, pidfd: number): Promise<ChildExit> {
  if (pidfd < 0) return waitBySigchld(addon, pid);
  return new Promise((resolve) => {
    const handle = addon.poll(pidfd, () => {
      const status = reap(addon, pid);
      if (status === undefined) return;
      addon.pollClose(handle);
      closeSync(pidfd);
      resolve(toExit(status));
    });
    addon.pollEvents(handle, READABLE);
  });
}

// ---- without pidfds (Linux before 5.3): SIGCHLD ---------------------------------------------

const waiting = new Map<number, (exit: ChildExit) => void>();
let sigchldAddon: SpawnAddon | undefined;
let sweepTimer: NodeJS.Timeout | undefined;

function sweep(): void {
  const addon = sigchldAddon;
  if (addon === undefined) return;
  for (const [pid, resolve] of waiting) {
    const status = reap(addon, pid);
    if (status === undefined) continue;
    waiting.delete(pid);
    resolve(toExit(status));
  }
  if (waiting.size === 0) {
    process.off("SIGCHLD", sweep);
    clearInterval(sweepTimer);
    sweepTimer = undefined;
  }
}

/** Reaps `pid` when SIGCHLD comes (exported for tests: the pidfd path is the usual one). */
export function waitBySigchld(addon: SpawnAddon, pid: number): Promise<ChildExit> {
  return new Promise((resolve) => {
    sigchldAddon = addon;
    if (waiting.size === 0) {
      process.on("SIGCHLD", sweep);
      // Signals of the same kind merge; and while only this waits, it keeps the agent running.
      sweepTimer = setInterval(sweep, 1_000);
    }
    waiting.set(pid, resolve);
    sweep(); // it may have exited before the listener was there
  });
}

// ---- the terminal --------------------------------------------------------------------------

const READ_CHUNK = 64 * 1024;

/**
 * A terminal's master side as a Duplex: what is written goes to the program as typed input,
 * what the program writes to its terminal is read. Ending the writable side types the
 * terminal's end-of-file character (Ctrl-D), as `script` does when its input ends; the terminal
 * itself stays open until the stream is destroyed.
 */
export class TerminalStream extends Duplex {
  readonly #addon: SpawnAddon;
  readonly #fd: number;
  readonly #poll: object;
  #events = 0;
  #reading = false;
  #pending: { chunk: Buffer; callback: (error?: Error | null) => void } | undefined;

  constructor(addon: SpawnAddon, fd: number) {
    super({ allowHalfOpen: true, decodeStrings: true });
    this.#addon = addon;
    this.#fd = fd;
    // uv_poll_init makes the descriptor non-blocking.
    this.#poll = addon.poll(fd, (status, events) => this.#ready(status, events));
  }

  resize(rows: number, cols: number): void {
    if (this.destroyed) return;
    this.#addon.setWindowSize(this.#fd, rows, cols);
  }

  override _read(): void {
    this.#reading = true;
    this.#readSome();
  }

  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    this.#pending = { chunk, callback };
    this.#writeSome();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this._write(Buffer.from([0x04]), "latin1", () => callback());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#addon.pollClose(this.#poll);
    try {
      closeSync(this.#fd);
    } catch {
      // closed already
    }
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.callback(error ?? new Error("the terminal was closed"));
    callback(error);
  }

  #want(events: number): void {
    if (this.destroyed || events === this.#events) return;
    this.#events = events;
    this.#addon.pollEvents(this.#poll, events);
  }

  #ready(status: number, events: number): void {
    if (this.destroyed) return;
    // An error on the descriptor: let read() and write() report it.
    const all = status < 0 ? READABLE | WRITABLE : events;
    if (all & WRITABLE && this.#pending) this.#writeSome();
    if (all & READABLE && this.#reading) this.#readSome();
  }

  #readSome(): void {
    while (this.#reading && !this.destroyed) {
      const buffer = Buffer.allocUnsafe(READ_CHUNK);
      let n: number;
      try {
        n = readSync(this.#fd, buffer, 0, READ_CHUNK, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EAGAIN" || code === "EWOULDBLOCK" || code === "EINTR") {
          this.#want(this.#events | READABLE);
          return;
        }
        // EIO: no process holds the terminal any more; what they wrote has all been read.
        this.#reading = false;
        this.#want(this.#events & ~READABLE);
        if (code === "EIO") this.push(null);
        else this.destroy(err as Error);
        return;
      }
      if (n === 0) {
        this.#reading = false;
        this.#want(this.#events & ~READABLE);
        this.push(null);
        return;
      }
      if (!this.push(buffer.subarray(0, n))) {
        this.#reading = false;
        this.#want(this.#events & ~READABLE);
      }
    }
  }

  #writeSome(): void {
    const pending = this.#pending;
    if (pending === undefined || this.destroyed) return;
    let { chunk } = pending;
    while (chunk.length > 0) {
      let n: number;
      try {
        n = writeSync(this.#fd, chunk);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EAGAIN" || code === "EWOULDBLOCK" || code === "EINTR") {
          pending.chunk = chunk;
          this.#want(this.#events | WRITABLE);
          return;
        }
        this.#pending = undefined;
        this.#want(this.#events & ~WRITABLE);
        pending.callback(err as Error);
        return;
      }
      chunk = chunk.subarray(n);
    }
    this.#pending = undefined;
    this.#want(this.#events & ~WRITABLE);
    pending.callback();
  }
}

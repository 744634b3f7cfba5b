/**
 * Starting a command for exec, two ways that give the same result:
 *
 * - **native** (`spawn-native.ts`): the spawn addon's posix_spawn (clone with CLONE_VM |
 *   CLONE_VFORK: the cost does not grow with the agent's memory), real pipes, and a
 *   pseudo-terminal when asked; the child is reaped through a pidfd polled on the event loop.
 * - **node**: `child_process.spawn`, which forks (libuv) and gives socket pairs for stdio. The
 *   fallback where the addon is not built or cannot load, or is turned off
 *   (`GUESTLINK_SPAWN_ADDON=off`), and for a cwd where glibc is older than 2.29.
 *
 * Either way the command leads a new session and process group, has no signal blocked and
 * every signal at its default, and gets /dev/null for a stream the caller did not open. What
 * differs is only what the command can see of its stdio: pipes (native) or sockets (node), so
 * with node a command whose reader went away gets ECONNRESET or EPIPE on its next write (it
 * has SIGPIPE at its default, but a socket pair raises it only on EPIPE), where with pipes it
 * dies of SIGPIPE as it would in a shell.
 */
import { spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";

/** How a command ended: an exit code, or the signal that killed it. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnRequest {
  file: string;
  /** Arguments after the program's name. */
  args: readonly string[];
  cwd?: string;
  env: NodeJS.ProcessEnv;
  /** Which of stdin, stdout, stderr are pipes (the rest are /dev/null); ignored with `tty`. */
  stdio: readonly [boolean, boolean, boolean];
  /** A pseudo-terminal of this size for all three (native only). */
  tty?: { rows: number; cols: number };
}

/**
 * A command's stdin. Most commands are given no input: the caller ends its stdin at once, and
 * then the pipe's end is just closed, with no stream made for it (a net.Socket and a pipeline
 * were a tenth of the agent's work for `exec true`).
 */
export interface ChildStdin {
  /** The stream to write the input to, made on the first call (not after `end` or `destroy`). */
  open(): Writable;
  /** The input is over: the command reads to its end, then end of file. */
  end(): void;
  /** The input is dropped: what the command has not read is gone. */
  destroy(): void;
}

/** A stream that is already open as the command's stdin (child_process's, a terminal). */
export function openedStdin(stream: Writable): ChildStdin {
  return { open: () => stream, end: () => stream.end(), destroy: () => stream.destroy() };
}

/** A command that was started. */
export interface SpawnedChild {
  readonly pid: number;
  /** Which way it was started. */
  readonly spawner: "native" | "node";
  /** With a terminal: its input (stdin) and its output (stdout) are one stream; stderr is null. */
  readonly stdin: ChildStdin | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  /** Resolves once the command has exited and been reaped. */
  readonly exited: Promise<ChildExit>;
  /** Sets the terminal's size (the kernel tells its foreground group with SIGWINCH). */
  resize?(rows: number, cols: number): void;
}

/**
 * What `start` gives back: the child once it runs, or why it could not start (a Node-style
 * system error: `code`, `errno`). `pid` is known as soon as there is a process, before `started`
 * settles, so that its group can be recorded at once.
 */
export interface Starting {
  pid: number | undefined;
  started: Promise<SpawnedChild | { error: unknown }>;
}

/** child_process.spawn, detached (setsid), as the agent always started commands. */
export function startWithNode(request: SpawnRequest): Starting {
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(request.file, request.args as string[], {
      cwd: request.cwd,
      env: request.env,
      stdio: request.stdio.map((pipe) => (pipe ? "pipe" : "ignore")),
      detached: true,
    });
  } catch (error) {
    return { pid: undefined, started: Promise.resolve({ error }) };
  }
  // Errors after the start (a failed kill) are reported by process.kill itself; never crash.
  child.on("error", () => {});
  const exited = new Promise<ChildExit>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const started = new Promise<SpawnedChild | { error: unknown }>((resolve) => {
    child.once("spawn", () =>
      resolve({
        pid: child.pid as number,
        spawner: "node",
        stdin: child.stdin === null ? null : openedStdin(child.stdin),
        stdout: child.stdout,
        stderr: child.stderr,
        exited,
      }),
    );
    child.once("error", (error) => resolve({ error }));
  });
  return { pid: child.pid, started };
}

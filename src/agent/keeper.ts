/**
 * The keeper: a small `sh` process beside the agent that kills the agent's commands when the agent
 * dies, however it dies — SIGKILL and the OOM killer included, which no code in the agent can
 * outlive.
 *
 * Why a process of its own, and not one of the kernel's mechanisms:
 * - PR_SET_PDEATHSIG has to be set in the child between fork and exec, where Node runs no code;
 *   and it reaches only the direct child, not what the command started in the background.
 * - PR_SET_CHILD_SUBREAPER makes orphans ours while we live; once we are dead they go to init
 *   and run on.
 * - A cgroup is killed whole only by someone who outlives us (systemd, a container runtime) and
 *   needs delegation that a guest's agent rarely has.
 * - The native addon (native/vsock.c) is optional, and the bundled agent must work without it.
 * The keeper needs only `sh` and its `kill` builtin, as on the smallest busybox guest.
 *
 * Two pipes (socket pairs, as child_process makes them) join the agent to it:
 * - on its fd 3, the list: a line for each process group the agent starts (`+PGID`), written at
 *   once, and for each it is done with (`-PGID`);
 * - on its stdin, nothing but a line now and then saying "catch up" (read the list to its next
 *   `.` line), and, once the agent is gone — which the kernel guarantees whatever killed it —
 *   end of file.
 * The keeper waits on its stdin only, so writing the list wakes nobody: telling it of every
 * command on the same pipe it waited on woke a `sh` that reads a byte at a time, twice per
 * command, which on a busy two-CPU guest cost `exec true` about as much as the agent's own work
 * for it. The agent asks it to catch up every `CATCH_UP_BYTES` of list, far below what a pipe
 * holds, so the list never waits in the agent. At end of file the keeper reads the list to its
 * end, sends SIGTERM to the groups still listed, SIGKILL after the grace, and exits. It ignores
 * SIGINT, SIGTERM and SIGHUP, and leads a session of its own, so a terminal's Ctrl-C or a signal
 * to the agent's process group does not take it before the agent.
 *
 * It cannot help with a command that left its process group (setsid, a double-forking daemon),
 * nor during the instant between a command's spawn and the agent's `+PGID` reaching the pipe.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { Writable } from "node:stream";

/**
 * The keeper itself. `$1` is the grace in whole seconds between SIGTERM and SIGKILL. `kill -TERM
 * -PGID` is the one spelling dash, bash and busybox sh all accept for a process group. `take`
 * reads the list (fd 3) to its next `.` line, or fails at its end.
 */
const KEEPER_SCRIPT = `trap '' INT TERM HUP
g=
take() {
  while read -r l <&3; do
    case $l in
      .) return 0 ;;
      +*) g="$g \${l#+}" ;;
      -*) n=; for p in $g; do [ "$p" = "\${l#-}" ] || n="$n $p"; done; g=$n ;;
    esac
  done
  return 1
}
while read -r l; do take; done
while take; do :; done
[ -n "$g" ] || exit 0
for p in $g; do kill -TERM -$p 2>/dev/null; done
[ "$1" -gt 0 ] && sleep "$1"
for p in $g; do kill -KILL -$p 2>/dev/null; done
exit 0`;

/** A keeper that keeps dying is not started again and again (the next group starts one). */
const MAX_RESTARTS = 3;
/** Bytes of list after which the keeper is asked to catch up (a pipe holds 4 KiB at the least). */
export const CATCH_UP_BYTES = 2048;

export interface KeeperOptions {
  /** Between SIGTERM and SIGKILL once the agent is gone (rounded up to whole seconds). */
  killGraceMs: number;
  /** Told once if the keeper cannot be started or dies (commands then die only with the agent's help). */
  onProblem?: (message: string) => void;
  /** Told, for a debug log, each time the keeper has been told of a group. */
  onNote?: (message: string) => void;
}

/** The agent's end of its keeper; started on the first group it is told of. */
export class Keeper {
  readonly #graceS: number;
  readonly #onProblem: (message: string) => void;
  readonly #onNote: (message: string) => void;
  /** Groups the keeper is to kill if we die: re-sent to a keeper started afresh. */
  readonly #groups = new Set<number>();
  #child: ChildProcess | undefined;
  #closed = false;
  #warned = false;
  #restarts = 0;
  /** The keeper's fd 3: the list. */
  #list: Writable | undefined;
  /** Bytes of list written since the keeper last caught up. */
  #unread = 0;

  constructor(options: KeeperOptions) {
    this.#graceS = Math.ceil(options.killGraceMs / 1000);
    this.#onProblem = options.onProblem ?? (() => {});
    this.#onNote = options.onNote ?? (() => {});
  }

  /** The keeper's pid, once it runs (for tests and logs). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** The keeper is to kill process group `pgid` if the agent dies before `forget(pgid)`. */
  watch(pgid: number): void {
    if (this.#closed) return;
    this.#groups.add(pgid);
    // A keeper started now is told of every group, this one included.
    if (this.#child === undefined) this.#start();
    else this.#write(`+${pgid}\n`);
    if (this.#child !== undefined) this.#onNote(`the keeper watches process group ${pgid}`);
  }

  /** The group is gone (or no longer ours to kill). */
  forget(pgid: number): void {
    if (!this.#groups.delete(pgid)) return;
    this.#write(`-${pgid}\n`);
  }

  /** Ends the keeper with nothing left to kill (the agent stops in good order). */
  close(): void {
    this.#closed = true;
    for (const pgid of this.#groups) this.#write(`-${pgid}\n`);
    this.#groups.clear();
    // At end of file it reads the list to its end, and finds nothing left.
    this.#list?.end();
    this.#child?.stdin?.end();
    this.#child = undefined;
    this.#list = undefined;
  }

  #start(): ChildProcess | undefined {
    let child: ChildProcess;
    try {
      // The script rides in the environment, so `ps` shows a short, recognisable line.
      child = spawn(
        "/bin/sh",
        ["-c", 'eval "$GUESTLINK_KEEPER"', "guestlink-keeper", String(this.#graceS)],
        {
          env: { PATH: process.env.PATH ?? "/usr/bin:/bin", GUESTLINK_KEEPER: KEEPER_SCRIPT },
          // Never the agent's stdout or stderr: with --stdio they are the protocol, and a keeper
          // holding them would keep the host waiting for an end after the agent died.
          stdio: ["pipe", "ignore", "ignore", "pipe"],
          detached: true,
          cwd: "/",
        },
      );
    } catch (err) {
      this.#problem(`cannot start the keeper (/bin/sh): ${(err as Error).message}`);
      return undefined;
    }
    this.#child = child;
    this.#list = (child.stdio[3] as Writable | null) ?? undefined;
    this.#unread = 0;
    child.on("error", (err) => {
      this.#problem(`cannot start the keeper (/bin/sh): ${err.message}`);
      if (this.#child === child) this.#child = undefined;
    });
    child.stdin?.on("error", () => {});
    this.#list?.on("error", () => {});
    child.once("exit", () => {
      if (this.#child !== child) return;
      // Killed from outside: start another with what is still ours, so the guarantee holds.
      this.#child = undefined;
      this.#list = undefined;
      if (this.#closed || this.#groups.size === 0 || this.#restarts >= MAX_RESTARTS) return;
      this.#restarts++;
      this.#problem("the keeper exited; starting another");
      this.#start();
    });
    // Neither the keeper nor the pipe keeps the agent alive: its end is what the keeper waits for.
    child.unref();
    for (const end of [child.stdin, this.#list]) {
      (end as unknown as { unref?: () => void } | null)?.unref?.();
    }
    this.#write([...this.#groups].map((pgid) => `+${pgid}\n`).join(""));
    return child;
  }

  /** Adds `lines` to the list; past CATCH_UP_BYTES, asks the keeper to read it. */
  #write(lines: string): void {
    const list = this.#list;
    const stdin = this.#child?.stdin;
    if (lines === "" || !list || list.destroyed || !stdin || stdin.destroyed) return;
    this.#unread += lines.length;
    if (this.#unread < CATCH_UP_BYTES) {
      list.write(lines);
      return;
    }
    list.write(`${lines}.\n`);
    stdin.write("\n");
    this.#unread = 0;
  }

  #problem(message: string): void {
    if (this.#warned) return;
    this.#warned = true;
    this.#onProblem(message);
  }
}

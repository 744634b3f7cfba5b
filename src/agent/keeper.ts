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
 * The keeper needs only `sh` and its `kill` builtin, as on the smallest busybox guest. The agent
 * holds the write end of a pipe on the keeper's stdin and tells it each process group it starts
 * (`+PGID`) and each it is done with (`-PGID`); when the pipe reaches end of file — which the
 * kernel guarantees once the agent is gone, whatever killed it — the keeper sends SIGTERM to the
 * groups still listed, SIGKILL after the grace, and exits. It ignores SIGINT, SIGTERM and SIGHUP,
 * and leads a session of its own, so a terminal's Ctrl-C or a signal to the agent's process group
 * does not take it before the agent.
 *
 * It cannot help with a command that left its process group (setsid, a double-forking daemon),
 * nor during the instant between a command's spawn and the agent's `+PGID` reaching the pipe.
 *
 * `+PGID` is written at once; `-PGID` waits for the next line (or `FORGET_DELAY_MS`), so that a
 * short command wakes the keeper once, not twice: each wake is a `sh` reading its line a byte at
 * a time, which on a busy guest cost a command about as much as the agent's own work for it. A
 * group forgotten late is one the keeper would signal if the agent died meanwhile; it is already
 * empty then (the agent forgets only empty groups), so the signal reaches nothing, unless the pid
 * space wrapped round within that second (as command-groups.ts says of its own look).
 */
import { type ChildProcess, spawn } from "node:child_process";

/**
 * The keeper itself. `$1` is the grace in whole seconds between SIGTERM and SIGKILL. `kill -TERM
 * -PGID` is the one spelling dash, bash and busybox sh all accept for a process group.
 */
const KEEPER_SCRIPT = `trap '' INT TERM HUP
g=
while read -r l; do
  case $l in
    +*) g="$g \${l#+}" ;;
    -*) n=; for p in $g; do [ "$p" = "\${l#-}" ] || n="$n $p"; done; g=$n ;;
  esac
done
[ -n "$g" ] || exit 0
for p in $g; do kill -TERM -$p 2>/dev/null; done
[ "$1" -gt 0 ] && sleep "$1"
for p in $g; do kill -KILL -$p 2>/dev/null; done
exit 0`;

/** A keeper that keeps dying is not started again and again (the next group starts one). */
const MAX_RESTARTS = 3;
/** Longest a `-PGID` waits to ride with the next line to the keeper. */
export const FORGET_DELAY_MS = 1_000;

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
  /** `-PGID` lines not yet written (see FORGET_DELAY_MS). */
  #forgotten = "";
  #forgetTimer: ReturnType<typeof setTimeout> | undefined;

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
    else this.#write(`${this.#takeForgotten()}+${pgid}\n`);
    if (this.#child !== undefined) this.#onNote(`the keeper watches process group ${pgid}`);
  }

  /** The group is gone (or no longer ours to kill). */
  forget(pgid: number): void {
    if (!this.#groups.delete(pgid) || this.#child === undefined) return;
    this.#forgotten += `-${pgid}\n`;
    this.#forgetTimer ??= setTimeout(() => this.#write(this.#takeForgotten()), FORGET_DELAY_MS);
    // Never what keeps the agent running.
    this.#forgetTimer.unref();
  }

  /** Ends the keeper with nothing left to kill (the agent stops in good order). */
  close(): void {
    this.#closed = true;
    this.#write(this.#takeForgotten());
    for (const pgid of this.#groups) this.#write(`-${pgid}\n`);
    this.#groups.clear();
    this.#child?.stdin?.end();
    this.#child = undefined;
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
          stdio: ["pipe", "ignore", "ignore"],
          detached: true,
          cwd: "/",
        },
      );
    } catch (err) {
      this.#problem(`cannot start the keeper (/bin/sh): ${(err as Error).message}`);
      return undefined;
    }
    this.#child = child;
    child.on("error", (err) => {
      this.#problem(`cannot start the keeper (/bin/sh): ${err.message}`);
      if (this.#child === child) this.#child = undefined;
    });
    child.stdin?.on("error", () => {});
    child.once("exit", () => {
      if (this.#child !== child) return;
      // Killed from outside: start another with what is still ours, so the guarantee holds.
      this.#child = undefined;
      if (this.#closed || this.#groups.size === 0 || this.#restarts >= MAX_RESTARTS) return;
      this.#restarts++;
      this.#problem("the keeper exited; starting another");
      this.#start();
    });
    // Neither the keeper nor the pipe keeps the agent alive: its end is what the keeper waits for.
    child.unref();
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    this.#takeForgotten(); // the old keeper's; this one is told only what is still ours
    this.#write([...this.#groups].map((pgid) => `+${pgid}\n`).join(""));
    return child;
  }

  /** The `-PGID` lines waiting, now to be written. */
  #takeForgotten(): string {
    clearTimeout(this.#forgetTimer);
    this.#forgetTimer = undefined;
    const lines = this.#forgotten;
    this.#forgotten = "";
    return lines;
  }

  #write(text: string): void {
    if (text === "") return;
    const stdin = this.#child?.stdin;
    if (stdin && !stdin.destroyed) stdin.write(text);
  }

  #problem(message: string): void {
    if (this.#warned) return;
    this.#warned = true;
    this.#onProblem(message);
  }
}

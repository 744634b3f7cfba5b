/**
 * Stopping a command's whole process group: the command leads its own group (spawned detached),
 * so SIGTERM to the group, a grace period, then SIGKILL reaches everything it started — and the
 * caller hears back only once the group is really gone.
 */
import { performance } from "node:perf_hooks";

/**
 * After SIGKILL, how long to wait for the group to be gone. Dead members linger as zombies until
 * init reaps them (some inits only every couple of seconds); a member stuck in uninterruptible
 * sleep may never go. Past this the call ends anyway and its message says what was left.
 */
const REAP_WAIT_MS = 5_000;
/** Polling the group for emptiness: no API tells when processes other than our child are gone. */
const GROUP_POLL_MAX_MS = 50;

/** Stops a process group: SIGTERM, then SIGKILL after the grace period. */
export class GroupStopper<Reason extends string = string> {
  reason: Reason | undefined;
  /** Why it was stopped, for the result's message. */
  cause: unknown;
  readonly #pgid: number;
  readonly #graceMs: number;
  #graceTimer: NodeJS.Timeout | undefined;
  #killedAt: number | undefined;

  constructor(pgid: number, graceMs: number) {
    this.#pgid = pgid;
    this.#graceMs = graceMs;
  }

  stop(reason: Reason, cause?: unknown): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.cause = cause;
    signalGroup(this.#pgid, "SIGTERM");
    this.#graceTimer = setTimeout(() => this.#kill(), this.#graceMs);
  }

  /** Resolves once the group is gone, or with what is left when it will not go. */
  async waitGone(): Promise<string | undefined> {
    let pollMs = 1;
    for (;;) {
      if (!groupExists(this.#pgid)) return undefined;
      if (this.#killedAt !== undefined && performance.now() - this.#killedAt >= REAP_WAIT_MS) {
        return `process group ${this.#pgid} still had members ${REAP_WAIT_MS} ms after SIGKILL (unreaped zombies or processes in uninterruptible sleep)`;
      }
      await new Promise((resolve) => setTimeout(resolve, pollMs));
      pollMs = Math.min(pollMs * 2, GROUP_POLL_MAX_MS);
    }
  }

  dispose(): void {
    clearTimeout(this.#graceTimer);
  }

  #kill(): void {
    this.#killedAt = performance.now();
    signalGroup(this.#pgid, "SIGKILL");
  }
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the whole group is gone already.
  }
}

/** Whether process group `pgid` still has members. */
export function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    // EPERM: members exist that we may not signal (a setuid program).
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Every process group the agent's commands run in, from spawn until the group is empty, and who
 * it belongs to: so that no command outlives its reason to run.
 *
 * - While its exec call runs, the call itself stops the group (cancel, deadline, session end).
 * - A group whose call has ended but which still has members (a command that put something in
 *   the background with its output redirected) is watched until it empties. It belongs to the
 *   session that started it: when that session ends without resume, it is stopped. To start
 *   something that outlives the session, leave the group (`setsid`).
 * - When the agent stops, whatever is left is stopped; when the agent dies, the keeper
 *   (keeper.ts) stops every group still listed.
 *
 * A group is forgotten only once `kill(-pgid, 0)` says it is empty, so a pgid reused later by an
 * unrelated process is never signalled (but for the instant between a leftover group emptying and
 * the next look, `LEFTOVER_POLL_MS`, and only if the pid space wrapped round in that time).
 */

import { GroupStopper, groupExists } from "../platform/process-group.ts";
import { Keeper } from "./keeper.ts";

/** How often groups left behind by finished calls are looked at to see whether they emptied. */
const LEFTOVER_POLL_MS = 1_000;

interface Group {
  owner: object;
  /** Its exec call is still running (and stops the group itself). */
  running: boolean;
  stopping?: Promise<void>;
}

export interface CommandGroupsOptions {
  killGraceMs: number;
  /** Without a keeper, commands die with the agent only when it stops in good order. */
  keeper?: boolean;
  onProblem?: (message: string) => void;
  /** Told, for a debug log, each time the keeper has been told of a group. */
  onNote?: (message: string) => void;
}

export class CommandGroups {
  readonly #groups = new Map<number, Group>();
  readonly #ended = new WeakSet<object>();
  readonly #keeper: Keeper | undefined;
  readonly #killGraceMs: number;
  #poll: NodeJS.Timeout | undefined;

  constructor(options: CommandGroupsOptions) {
    this.#killGraceMs = options.killGraceMs;
    this.#keeper =
      options.keeper === false
        ? undefined
        : new Keeper({
            killGraceMs: options.killGraceMs,
            onProblem: options.onProblem,
            onNote: options.onNote,
          });
  }

  /** Groups still alive (running or left behind). */
  get size(): number {
    return this.#groups.size;
  }

  /** The keeper's pid, once one runs. */
  get keeperPid(): number | undefined {
    return this.#keeper?.pid;
  }

  /** A command was spawned leading group `pgid`, for `owner` (its session). */
  started(pgid: number, owner: object): void {
    this.#groups.set(pgid, { owner, running: true });
    this.#keeper?.watch(pgid);
  }

  /** The command's call is over: forget its group once empty, or stop it if its owner is gone. */
  callEnded(pgid: number): void {
    const group = this.#groups.get(pgid);
    if (group === undefined) return;
    group.running = false;
    if (!groupExists(pgid)) {
      this.#forget(pgid);
      return;
    }
    if (this.#ended.has(group.owner)) {
      void this.#stop(pgid, group);
      return;
    }
    this.#poll ??= setInterval(() => this.#sweep(), LEFTOVER_POLL_MS).unref();
  }

  /** `owner` (a session) ended without resume: stop what its finished calls left behind. */
  ownerEnded(owner: object): Promise<void> {
    this.#ended.add(owner);
    return this.#stopWhere((g) => g.owner === owner && !g.running);
  }

  /**
   * Stops every group, running calls' included (call this once the sessions have ended, when
   * their calls are being stopped anyway), and resolves once all are gone or will not go.
   */
  stopAll(): Promise<void> {
    return this.#stopWhere(() => true);
  }

  /** The agent stops in good order: the keeper goes with nothing to do. */
  close(): void {
    clearInterval(this.#poll);
    this.#poll = undefined;
    this.#keeper?.close();
  }

  async #stopWhere(which: (group: Group) => boolean): Promise<void> {
    const stopping: Promise<void>[] = [];
    for (const [pgid, group] of this.#groups) {
      if (which(group)) stopping.push(this.#stop(pgid, group));
    }
    await Promise.all(stopping);
  }

  #stop(pgid: number, group: Group): Promise<void> {
    group.stopping ??= (async () => {
      const stopper = new GroupStopper(pgid, this.#killGraceMs);
      stopper.stop("session-ended");
      try {
        await stopper.waitGone();
      } finally {
        stopper.dispose();
        this.#forget(pgid);
      }
    })();
    return group.stopping;
  }

  #sweep(): void {
    for (const [pgid, group] of this.#groups) {
      if (!group.running && group.stopping === undefined && !groupExists(pgid)) this.#forget(pgid);
    }
  }

  #forget(pgid: number): void {
    this.#groups.delete(pgid);
    this.#keeper?.forget(pgid);
    if ([...this.#groups.values()].every((g) => g.running)) {
      clearInterval(this.#poll);
      this.#poll = undefined;
    }
  }
}

/**
 * One listener per mailbox folder: `listener.lock` names its owner (pid, host, boot id, the
 * process's start time) and is created atomically (a hard link of a complete file, which fails if
 * the name exists). A lock whose owner is gone is stale and replaced. On the same host that is a
 * pid that no longer runs, or runs as another process (a different start time, a different boot).
 * A lock from another host (the other side of the shared folder) cannot be checked that way: its
 * owner touches it every heartbeat, and it is stale only when it looks old by our clock *and* its
 * mtime does not change while we watch it for a few heartbeats. Either test alone could be fooled:
 * the two hosts' clocks may disagree, and NFS may cache an mtime for seconds.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { link, lstat, lutimes, unlink, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { fsCode, LOCK_FILE, readMarker } from "./mailbox-layout.ts";

export interface LockOwner {
  readonly pid: number;
  readonly host: string;
  readonly bootId?: string;
  /** The owner's start time in clock ticks since boot (Linux), to tell a reused pid apart. */
  readonly startTicks?: string;
  /** The listener's random id: each start of a listener is a new incarnation. */
  readonly incarnation: string;
  readonly startedAt: string;
}

export interface LockState {
  readonly owner: LockOwner | undefined;
  /** Wall-clock ms of the last touch (the owner's heartbeat). */
  readonly mtimeMs: number;
}

/** Who this process is, as a lock records it. */
export function ownLockOwner(incarnation: string): LockOwner {
  return {
    pid: process.pid,
    host: hostname(),
    bootId: readBootId(),
    startTicks: readStartTicks(process.pid),
    incarnation,
    startedAt: new Date().toISOString(),
  };
}

/** The lock as it is now, or undefined when there is none. */
export async function readLock(folder: string): Promise<LockState | undefined> {
  const path = join(folder, LOCK_FILE);
  let mtimeMs: number;
  try {
    mtimeMs = (await lstat(path)).mtimeMs;
  } catch (err) {
    if (fsCode(err) === "ENOENT") return undefined;
    throw err;
  }
  // Something that is not a small regular file is nobody's lock we can read: judged by its age.
  const text = await readMarker(path).catch(() => "");
  if (text === undefined) return undefined;
  return { owner: parseOwner(text), mtimeMs };
}

/**
 * Whether the lock's owner is gone, when this host can tell: true or false for a lock taken on
 * this host, undefined for one from another host (or one we cannot read).
 */
export function ownerIsGone(lock: LockState): boolean | undefined {
  const owner = lock.owner;
  if (owner === undefined || owner.host !== hostname()) return undefined;
  if (owner.pid === process.pid && owner.startTicks === readStartTicks(process.pid)) return false;
  const bootId = readBootId();
  if (owner.bootId !== undefined && bootId !== undefined && owner.bootId !== bootId) return true;
  if (!pidRuns(owner.pid)) return true;
  const ticks = readStartTicks(owner.pid);
  return owner.startTicks !== undefined && ticks !== undefined && ticks !== owner.startTicks;
}

export interface StaleRules {
  /** A foreign lock untouched for longer than this (by our clock) may be abandoned. */
  readonly foreignStaleMs: number;
  /** How long to watch such a lock's mtime before believing it is abandoned. */
  readonly observeMs: number;
}

/** Whether the lock is stale (see above). Takes up to `observeMs` for an old-looking foreign lock. */
export async function lockIsStale(
  folder: string,
  lock: LockState,
  rules: StaleRules,
): Promise<boolean> {
  const gone = ownerIsGone(lock);
  if (gone !== undefined) return gone;
  if (Date.now() - lock.mtimeMs <= rules.foreignStaleMs) return false;
  const until = performance.now() + rules.observeMs;
  while (performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(250, rules.observeMs)));
    const now = await readLock(folder);
    if (now === undefined) return true;
    if (now.mtimeMs !== lock.mtimeMs || JSON.stringify(now.owner) !== JSON.stringify(lock.owner)) {
      return false;
    }
  }
  return true;
}

/** Who holds the lock, for messages. */
export function describeOwner(lock: LockState): string {
  const owner = lock.owner;
  if (owner === undefined) return "an unreadable lock";
  return `pid ${owner.pid} on host ${owner.host}, since ${owner.startedAt}`;
}

export type AcquireResult =
  | { readonly acquired: true }
  | { readonly acquired: false; readonly holder: LockState };

/**
 * Creates the lock for `owner`, replacing a stale one. Fails (acquired: false) when a live
 * listener holds it. Two processes replacing the same stale lock at once are kept apart by a
 * second lock taken for the replacement only.
 */
export async function acquireLock(
  folder: string,
  owner: LockOwner,
  rules: StaleRules,
): Promise<AcquireResult> {
  const path = join(folder, LOCK_FILE);
  const content = `${JSON.stringify(owner)}\n`;
  if (await createExclusively(folder, path, content)) return { acquired: true };
  const holder = await readLock(folder);
  if (holder === undefined) {
    // Released between our two looks: try once more, and treat losing that race as in use.
    if (await createExclusively(folder, path, content)) return { acquired: true };
    return {
      acquired: false,
      holder: (await readLock(folder)) ?? { owner: undefined, mtimeMs: 0 },
    };
  }
  if (!(await lockIsStale(folder, holder, rules))) return { acquired: false, holder };

  const breaker = join(folder, `${LOCK_FILE}.replacing`);
  if (!(await createExclusively(folder, breaker, content))) {
    const other = await lstat(breaker).catch(() => undefined);
    // A replacement left half-done by a process that died: old enough to be abandoned.
    if (other !== undefined && Date.now() - other.mtimeMs > REPLACEMENT_STALE_MS) {
      await unlink(breaker).catch(() => {});
    }
    return { acquired: false, holder };
  }
  try {
    const again = await readLock(folder);
    const same =
      again === undefined ||
      JSON.stringify(again.owner) === JSON.stringify(holder.owner) ||
      ownerIsGone(again) === true;
    if (!same) return { acquired: false, holder: again };
    await unlink(path).catch((err: unknown) => {
      if (fsCode(err) !== "ENOENT") throw err;
    });
    if (await createExclusively(folder, path, content)) return { acquired: true };
    return { acquired: false, holder: (await readLock(folder)) ?? holder };
  } finally {
    await unlink(breaker).catch(() => {});
  }
}

/** A replacement in progress for longer than this was abandoned by a process that died. */
const REPLACEMENT_STALE_MS = 10_000;

/** The owner's heartbeat: a foreign host judges the lock by this. */
export async function touchLock(folder: string): Promise<void> {
  const now = new Date();
  await lutimes(join(folder, LOCK_FILE), now, now);
}

/** Removes the lock if it is still `incarnation`'s. */
export async function releaseLock(folder: string, incarnation: string): Promise<void> {
  const lock = await readLock(folder).catch(() => undefined);
  if (lock?.owner?.incarnation !== incarnation) return;
  await unlink(join(folder, LOCK_FILE)).catch(() => {});
}

/**
 * Creates `path` with `content` only if it does not exist, and so that it never appears
 * half-written: a complete temporary file, hard-linked into place. Filesystems without hard links
 * get an O_EXCL create instead (briefly visible while empty, which readers take as unreadable).
 */
async function createExclusively(folder: string, path: string, content: string): Promise<boolean> {
  const temporary = join(folder, `.${LOCK_FILE}-${randomBytes(6).toString("hex")}`);
  await writeFile(temporary, content, { flag: "wx" });
  try {
    await link(temporary, path);
    return true;
  } catch (err) {
    const code = fsCode(err);
    if (code === "EEXIST") return false;
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "ENOSYS" && code !== "EOPNOTSUPP") {
      throw err;
    }
    try {
      await writeFile(path, content, { flag: "wx" });
      return true;
    } catch (again) {
      if (fsCode(again) === "EEXIST") return false;
      throw again;
    }
  } finally {
    await unlink(temporary).catch(() => {});
  }
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (
      typeof o.pid === "number" &&
      typeof o.host === "string" &&
      typeof o.incarnation === "string"
    ) {
      return o as LockOwner;
    }
  } catch {
    // not ours
  }
  return undefined;
}

function pidRuns(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it runs, as another user.
    return fsCode(err) === "EPERM";
  }
  // A killed process nobody has reaped yet (in a container without an init, for ever) still
  // answers signal 0: on Linux its state says it is dead.
  const state = readStatField(pid, 0);
  return state !== "Z" && state !== "X";
}

let bootId: string | undefined | null = null;

function readBootId(): string | undefined {
  if (bootId === null) {
    try {
      bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    } catch {
      bootId = undefined;
    }
  }
  return bootId;
}

/** The process's start time: field 22 of /proc/PID/stat. */
function readStartTicks(pid: number): string | undefined {
  return readStatField(pid, 19);
}

/** A field of /proc/PID/stat, counted from the state (field 3), after the command name in parentheses (which may hold spaces). */
function readStatField(pid: number, index: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[index];
  } catch {
    return undefined;
  }
}

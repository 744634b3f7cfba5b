/**
 * Where a transfer writes, decided the same way on both sides (the CLI for `get`, the agent for
 * `put`), so that nothing that was not a regular file is ever replaced by one:
 *
 * - a regular file, or nothing yet: written to a temporary file next to it and renamed over it;
 * - a symlink: followed, and the file it ends at is replaced (the temporary file goes in *that*
 *   file's folder, so the rename stays in one file system and the link stays a link); with
 *   `follow: false` the link itself is replaced; a dangling link is followed to where it points;
 * - a folder: the file is copied into it under the source's base name (as cp and scp do);
 * - a FIFO or a character or block device: written through (opened and written in order, never
 *   renamed over), as cp and scp do, so `/dev/stdout`, `/dev/null` or a named pipe get the bytes;
 * - a socket: refused (UNSUPPORTED_FILE_TYPE); nothing can be written to one by opening it;
 * - one of this process's open files (/dev/stdout, /proc/self/fd/N): written to that descriptor
 *   where allowed (the CLI), refused otherwise (the agent).
 */

import { constants, type Stats } from "node:fs";
import { type FileHandle, lstat, open, readlink } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { AbortSignalLike } from "../abort.ts";
import { GuestlinkError } from "../errors.ts";
import { asError, fileSystemError } from "./file-transfer.ts";
import { nodeKeepAliveClock, pause } from "./node.ts";

/** Links followed before giving up, as the kernel does (ELOOP past 40). */
const MAX_SYMLINK_HOPS = 40;
/** How often a write to a FIFO that nobody reads yet looks again for a reader. */
const FIFO_READER_POLL_MS = 100;

export type ThroughKind = "FIFO" | "character device" | "block device";

/** What a transfer does at its destination. */
export type Destination =
  /** Replace `path` atomically (a temporary file next to it, renamed over it). */
  | { kind: "replace"; path: string }
  /** Open `path` and write the bytes in order: no temporary file, no rename, no chmod. */
  | { kind: "through"; path: string; type: ThroughKind }
  /** Write to descriptor `fd`, one of this process's open files, as a redirect would. */
  | { kind: "open-file"; path: string; fd: number };

export interface DestinationOptions {
  /** Base name to copy under when `path` is a folder; without it a folder is IS_A_DIRECTORY. */
  name?: string;
  /** Follow a symlink at the destination (default) or replace the link itself. */
  follow?: boolean;
  /**
   * Whether a destination that is one of this process's open files (/dev/stdout) may be written
   * (the CLI: it is the user's redirect); otherwise it is refused (the agent: its own
   * descriptors are its connection and its log).
   */
  ownFiles?: boolean;
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return undefined;
    throw fileSystemError(err, path);
  }
}

function throughKind(st: Stats): ThroughKind | undefined {
  if (st.isFIFO()) return "FIFO";
  if (st.isCharacterDevice()) return "character device";
  if (st.isBlockDevice()) return "block device";
  return undefined;
}

/** Decides what writing to `path` means (see the module's comment). */
export async function resolveDestination(
  path: string,
  options: DestinationOptions = {},
): Promise<Destination> {
  const follow = options.follow ?? true;
  let target = resolve(path);
  let intoFolder = false;
  for (let hops = 0; ; ) {
    const fd = openFileOf(target);
    if (fd !== undefined) {
      if (options.ownFiles) return { kind: "open-file", path: target, fd };
      throw new GuestlinkError(
        "UNSUPPORTED_FILE_TYPE",
        `${path} is one of the agent's own open files (fd ${fd}), not a file to write`,
        { details: { path, type: "open file", fd } },
      );
    }
    const own = await lstatOrUndefined(target);
    if (own === undefined) return { kind: "replace", path: target };
    if (own.isSymbolicLink()) {
      if (!follow) return { kind: "replace", path: target };
      // Hop by hop, so a link to one of our open files (/dev/stdout) is seen as one above.
      if (++hops > MAX_SYMLINK_HOPS) {
        throw new GuestlinkError("UNSUPPORTED_FILE_TYPE", `${path} is a loop of symlinks`, {
          details: { path, type: "symlink loop" },
        });
      }
      target = resolve(dirname(target), await readlinkOf(target));
      continue;
    }
    if (own.isFile()) return { kind: "replace", path: target };
    if (own.isDirectory()) {
      if (intoFolder || options.name === undefined) {
        throw fileSystemError({ code: "EISDIR" }, target);
      }
      intoFolder = true;
      target = join(target, options.name);
      continue;
    }
    const kind = throughKind(own);
    if (kind !== undefined) return { kind: "through", path: target, type: kind };
    throw new GuestlinkError(
      "UNSUPPORTED_FILE_TYPE",
      `${target} is a socket; a file cannot be written there`,
      { details: { path: target, type: "socket" } },
    );
  }
}

async function readlinkOf(path: string): Promise<string> {
  try {
    return await readlink(path);
  } catch (err) {
    throw fileSystemError(err, path);
  }
}

/**
 * The descriptor `path` names when it is one of this process's open files (/proc/self/fd/N,
 * /dev/fd/N; /dev/stdout is a link to /proc/self/fd/1). Renaming over the file such a link
 * shows would pull it from under whoever holds it open (`get … /dev/stdout > log` would replace
 * log and lose what the shell writes to it next), so it is written as a redirect would.
 */
function openFileOf(path: string): number | undefined {
  const match = /^\/(?:proc\/(?:self|thread-self|(\d+))|dev)\/fd\/(\d+)$/.exec(path);
  if (match === null) return undefined;
  if (match[1] !== undefined && Number(match[1]) !== process.pid) return undefined;
  return Number(match[2]);
}

/**
 * Opens a FIFO or device to write through. A FIFO with no reader yet is waited for without
 * tying up a thread (an open for writing would block until a reader comes): it is tried
 * non-blocking until a reader is there or `signal` aborts, then opened for ordinary writes.
 */
export async function openThrough(
  destination: Extract<Destination, { kind: "through" }>,
  signal?: AbortSignalLike,
): Promise<FileHandle> {
  const { path } = destination;
  try {
    if (destination.type !== "FIFO") return await open(path, constants.O_WRONLY);
    for (;;) {
      if (signal?.aborted) throw asError(signal.reason);
      let probe: FileHandle;
      try {
        probe = await open(path, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (err) {
        if ((err as { code?: unknown }).code !== "ENXIO") throw err;
        await pause(FIFO_READER_POLL_MS, signal, nodeKeepAliveClock);
        continue;
      }
      try {
        // A reader is there, so this open does not wait.
        return await open(path, constants.O_WRONLY);
      } finally {
        await probe.close().catch(() => {});
      }
    }
  } catch (err) {
    throw fileSystemError(err, path);
  }
}

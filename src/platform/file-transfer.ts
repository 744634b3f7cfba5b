/**
 * What both ends of a file transfer share (the agent's files service and the host's getFile and
 * putFile): file system errors as guestlink codes, temporary files next to their targets,
 * chunked reads that hash as they go, durable renames, and the shapes of paths, hashes and modes.
 */
import { type Hash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import * as v from "valibot";
import type { AbortSignalLike } from "../abort.ts";
import { GuestlinkError, isGuestlinkError } from "../errors.ts";

/** Size of each read of a file being sent. */
export const FILE_CHUNK_BYTES = 256 * 1024;

const errnoCodes = {
  ENOENT: "FILE_NOT_FOUND",
  EACCES: "PERMISSION_DENIED",
  EPERM: "PERMISSION_DENIED",
  EISDIR: "IS_A_DIRECTORY",
  ENOTDIR: "NOT_A_DIRECTORY",
  ENOSPC: "NO_SPACE",
  EDQUOT: "NO_SPACE",
} as const;

/**
 * A file system failure as a guestlink error with `details.path`. Errors without one of our
 * codes (EROFS, EIO, …) pass through: the session reports their errno code as it is.
 */
export function fileSystemError(err: unknown, path: string): unknown {
  if (isGuestlinkError(err)) return err;
  const errno = (err as { code?: unknown } | undefined)?.code;
  if (typeof errno !== "string" || !(errno in errnoCodes)) return err;
  const code = errnoCodes[errno as keyof typeof errnoCodes];
  const what = {
    FILE_NOT_FOUND: "does not exist",
    PERMISSION_DENIED: "is not accessible (permission denied)",
    IS_A_DIRECTORY: "is a folder, not a file",
    NOT_A_DIRECTORY: "goes through something that is not a folder",
    NO_SPACE: "could not be written: no space left on the device (or over quota)",
  }[code];
  return new GuestlinkError(code, `${path} ${what}`, { cause: err, details: { path, errno } });
}

/** A sibling of `target` no one else would pick, so the final rename stays in one file system. */
export function tempPathFor(target: string): string {
  // Keep well inside NAME_MAX (255 bytes) whatever the target's name.
  const name = basename(target).slice(0, 100);
  return join(dirname(target), `.${name}.guestlink-${randomBytes(6).toString("hex")}.tmp`);
}

/** Opens a new temporary file; a missing folder is reported as the folder, not the temp name. */
export async function createTemp(target: string): Promise<{ path: string; handle: FileHandle }> {
  const path = tempPathFor(target);
  try {
    return { path, handle: await open(path, "wx", 0o600) };
  } catch (err) {
    const errno = (err as { code?: unknown }).code;
    throw fileSystemError(
      err,
      errno === "ENOENT" || errno === "ENOTDIR" ? dirname(target) : target,
    );
  }
}

/** Refuses a target that is a folder (rename would fail only after the whole transfer). */
export async function refuseFolder(target: string): Promise<void> {
  try {
    if ((await stat(target)).isDirectory()) throw fileSystemError({ code: "EISDIR" }, target);
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return;
    throw fileSystemError(err, target);
  }
}

/**
 * Opens a file to send; refuses folders and anything that is not a regular file. `flags` are
 * added to the open's (O_NOFOLLOW, for the agent confined to a folder).
 */
export async function openForReading(
  path: string,
  flags = 0,
): Promise<{ handle: FileHandle; size: number; mode: number }> {
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO must not hang the open; it is refused just below.
    handle = await open(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | flags);
  } catch (err) {
    throw fileSystemError(err, path);
  }
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw fileSystemError({ code: "EISDIR" }, path);
    if (!st.isFile()) {
      throw new GuestlinkError(
        "UNSUPPORTED_FILE_TYPE",
        `${path} is not a regular file (a device, socket or FIFO), so it has no size to send and check; to send a stream, give - and pipe it in`,
        { details: { path } },
      );
    }
    return { handle, size: st.size, mode: st.mode & 0o7777 };
  } catch (err) {
    await handle.close().catch(() => {});
    throw err;
  }
}

export function fileChanged(path: string, expected: number, read: number): GuestlinkError {
  return new GuestlinkError(
    "FILE_CHANGED",
    `${path} ${read > expected ? "grew" : "shrank"} while it was being sent (it had ${expected} bytes, ${read > expected ? "more than " : ""}${read} were read)`,
    { details: { path, expectedBytes: expected, readBytes: read } },
  );
}

/**
 * Reads `handle` chunk by chunk into fresh buffers (a session stream keeps what it is given, so
 * buffers are never reused), feeding `hash`. With `expected`, a file that does not have exactly
 * that many bytes fails with FILE_CHANGED; one byte past it is read to tell growth from the end.
 */
export async function* readChunks(
  handle: FileHandle,
  path: string,
  hash: Hash,
  expected: number | undefined,
): AsyncGenerator<Buffer> {
  let position = 0;
  for (;;) {
    const want =
      expected === undefined
        ? FILE_CHUNK_BYTES
        : Math.min(FILE_CHUNK_BYTES, expected - position + 1);
    const buffer = Buffer.allocUnsafe(want);
    const { bytesRead } = await handle.read(buffer, 0, want, position);
    if (bytesRead === 0) break;
    position += bytesRead;
    if (expected !== undefined && position > expected) throw fileChanged(path, expected, position);
    const chunk = buffer.subarray(0, bytesRead);
    hash.update(chunk);
    yield chunk;
  }
  if (expected !== undefined && position !== expected) throw fileChanged(path, expected, position);
}

/**
 * Writes all of `chunk` at `position`, or in order with `null` (a FIFO or device, which has no
 * positions). A write may take less than it was given.
 */
export async function writeAll(
  handle: FileHandle,
  chunk: Uint8Array,
  position: number | null,
): Promise<void> {
  for (let done = 0; done < chunk.length; ) {
    const at = position === null ? null : position + done;
    const { bytesWritten } = await handle.write(chunk, done, chunk.length - done, at);
    done += bytesWritten;
  }
}

/** Makes a rename in `folder` durable. File systems that cannot sync a folder are let be. */
export async function syncFolder(folder: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(folder, constants.O_RDONLY);
    await handle.sync();
  } catch (err) {
    const errno = (err as { code?: unknown }).code;
    if (!["EINVAL", "ENOTSUP", "EISDIR", "EPERM", "EBADF"].includes(errno as string)) {
      throw fileSystemError(err, folder);
    }
  } finally {
    await handle?.close().catch(() => {});
  }
}

/**
 * Destroys `stream` with the signal's reason when it aborts. (Node's own `signal` option would
 * destroy it with an AbortError, which `toDuplex` takes for a reader that is simply done.)
 */
export function destroyOnAbort(
  signal: AbortSignalLike | undefined,
  stream: { destroy(err: Error): void },
): () => void {
  if (!signal) return () => {};
  const onAbort = () => stream.destroy(asError(signal.reason));
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

export function asError(reason: unknown): Error {
  return reason instanceof Error
    ? reason
    : new GuestlinkError("CANCELLED", String(reason ?? "aborted"));
}

export const PathSchema = v.pipe(
  v.string("must be a string"),
  v.minLength(1, "must not be empty"),
  v.maxLength(4096, "must be at most 4096 characters"),
  v.check((p) => !p.includes("\0"), "must not contain NUL"),
);
/** A name to copy under inside a folder: one path component, not `.` or `..`. */
export const BaseNameSchema = v.pipe(
  v.string("must be a string"),
  v.minLength(1, "must not be empty"),
  v.maxLength(255, "must be at most 255 characters"),
  v.check(isBaseName, "must be one file name (no /, not . or ..)"),
);

/** Whether `name` is one path component a folder may hold (what a peer's names are checked by). */
export function isBaseName(name: string): boolean {
  return (
    name.length > 0 && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0")
  );
}
export const Sha256Schema = v.pipe(
  v.string("must be a string"),
  v.regex(/^[0-9a-fA-F]{64}$/, "must be 64 hexadecimal digits (a sha256)"),
  v.toLowerCase(),
);
export const ModeSchema = v.pipe(
  v.number("must be a number"),
  v.integer("must be an integer"),
  v.minValue(0, "must be from 0 to 0o7777"),
  v.maxValue(0o7777, "must be from 0 to 0o7777"),
);
export const SizeSchema = v.pipe(
  v.number("must be a number"),
  v.integer("must be an integer"),
  v.minValue(0, "must not be negative"),
  v.maxValue(Number.MAX_SAFE_INTEGER, "is too large"),
);

/** What `files.list` says of each entry of a folder. */
export const FileEntrySchema = v.object({
  name: v.pipe(
    v.string("must be a string"),
    v.check(isBaseName, "must be one file name (no /, not . or ..)"),
  ),
  type: v.picklist(
    ["file", "folder", "symlink", "other"],
    "must be file, folder, symlink or other",
  ),
  mode: ModeSchema,
  size: SizeSchema,
});
export type FileEntry = v.InferOutput<typeof FileEntrySchema>;

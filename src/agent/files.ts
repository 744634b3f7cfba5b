/**
 * The files service: `files.get` streams a file out, `files.put` streams one into a temporary
 * file next to its target, and `files.commit` renames it over the target once the caller has
 * confirmed the sha256 both sides computed. Memory stays constant at any size: bytes move chunk
 * by chunk with the session's flow control reaching back to the disk.
 *
 * A write is atomic: until `files.commit` renames it, the target is untouched. Uploads not
 * committed are deleted when their session ends, when discarded, or after
 * `UNCOMMITTED_TTL_MS`, so a vanished host never leaves temporary files behind.
 */
import { createHash, type Hash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chmod, type FileHandle, open, rename, rm, stat, statfs } from "node:fs/promises";
import { basename, dirname, isAbsolute, join } from "node:path";
import { pipeline } from "node:stream/promises";
import * as v from "valibot";
import type { AbortSignalLike } from "../abort.ts";
import { GuestlinkError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import { toDuplex } from "../platform/duplex.ts";
import type { CallContext, Session } from "../session/session.ts";
import type { SessionStream } from "../session/stream.ts";
import type { Service } from "./service.ts";

/** How long an upload may wait for its commit before it is deleted. */
export const UNCOMMITTED_TTL_MS = 5 * 60_000;
/** Mode of a new file when the caller names none and there is no target to take it from. */
export const DEFAULT_FILE_MODE = 0o644;
/** Bytes read from disk at a time. */
export const FILE_CHUNK_BYTES = 256 * 1024;

/** Why a temporary file was removed. */
export type TempRemovalReason = "failed" | "checksum" | "discarded" | "expired" | "session-ended";

/** What the files service did, for the agent's log (the library itself never prints). */
export type FilesEvent =
  | { type: "temp-created"; path: string; target: string }
  | { type: "temp-removed"; path: string; target: string; reason: TempRemovalReason }
  | { type: "committed"; path: string; size: number; sha256: string; mode: number };

export interface FilesServiceOptions {
  /** How long an upload waits for its commit (default `UNCOMMITTED_TTL_MS`). */
  uncommittedTtlMs?: number;
  /** Told about temporary files and commits; a listener that throws is ignored. */
  onEvent?: (event: FilesEvent) => void;
}

// ---- shared with the controller's side of transfers ------------------------------------------

const errnoCodes = {
  ENOENT: "FILE_NOT_FOUND",
  EACCES: "PERMISSION_DENIED",
  EPERM: "PERMISSION_DENIED",
  EISDIR: "IS_A_DIRECTORY",
  ENOTDIR: "NOT_A_DIRECTORY",
} as const;

/**
 * A file system failure as a guestlink error with `details.path`. Errors without one of our
 * codes (ENOSPC, EROFS, …) pass through: the session reports their errno code as it is.
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
  }[code];
  return new GuestlinkError(code, `${path} ${what}`, { cause: err, details: { path, errno } });
}

/** Checks `params` against `schema`; a mismatch is INVALID_OPTION naming the method and field. */
export function parseParams<S extends v.GenericSchema>(
  method: string,
  schema: S,
  params: unknown,
): v.InferOutput<S> {
  const parsed = v.safeParse(schema, params);
  if (parsed.success) return parsed.output;
  const issue = parsed.issues[0];
  const field = v.getDotPath(issue);
  throw new InvalidOptionError(`${method}: ${field ? `${field} ` : "params "}${issue.message}`, {
    details: { method, ...(field ? { option: field } : {}) },
  });
}

/** The stream named `name` that the caller must open with `method`. */
export function requireStream(ctx: CallContext, name: string): SessionStream {
  const stream = ctx.streams[name];
  if (!stream) {
    throw new InvalidOptionError(`${ctx.method} needs a stream named "${name}"`, {
      details: { method: ctx.method, stream: name },
    });
  }
  return stream;
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

/** Opens a file to send; refuses folders and anything that is not a regular file. */
export async function openForReading(
  path: string,
): Promise<{ handle: FileHandle; size: number; mode: number }> {
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO must not hang the open; it is refused just below.
    handle = await open(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (err) {
    throw fileSystemError(err, path);
  }
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw fileSystemError({ code: "EISDIR" }, path);
    if (!st.isFile()) {
      throw new InvalidOptionError(`${path} is not a regular file (a device, socket or FIFO)`, {
        details: { path },
      });
    }
    return { handle, size: st.size, mode: st.mode & 0o7777 };
  } catch (err) {
    await handle.close().catch(() => {});
    throw err;
  }
}

function fileChanged(path: string, expected: number, read: number): GuestlinkError {
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

/** Writes all of `chunk` at `position` (a write may take less than it was given). */
export async function writeAll(
  handle: FileHandle,
  chunk: Uint8Array,
  position: number,
): Promise<void> {
  for (let done = 0; done < chunk.length; ) {
    const { bytesWritten } = await handle.write(chunk, done, chunk.length - done, position + done);
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

/**
 * Swallows 'error' events on `stream`. A stream's failures reach us through the pipeline or
 * loop using it and through the call's result; but a peer's RESET after that use is over still
 * destroys the Duplex with an error, which with no listener would crash the process.
 */
export function quiet<T extends { on(event: "error", fn: () => void): unknown }>(stream: T): T {
  stream.on("error", () => {});
  return stream;
}

function asError(reason: unknown): Error {
  return reason instanceof Error
    ? reason
    : new GuestlinkError("CANCELLED", String(reason ?? "aborted"));
}

export const PathSchema = v.pipe(
  v.string("must be a string"),
  v.minLength(1, "must not be empty"),
  v.maxLength(4096, "must be at most 4096 characters"),
  v.check((p) => !p.includes("\0"), "must not contain NUL"),
  v.check(isAbsolute, "must be an absolute path"),
);
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
const TokenSchema = v.pipe(v.string("must be a string"), v.minLength(1), v.maxLength(128));

// ---- the service -------------------------------------------------------------------------

const GetParams = v.object({ path: PathSchema });
const PutParams = v.object({
  path: PathSchema,
  mode: v.optional(ModeSchema),
  size: v.optional(SizeSchema),
});
const CommitParams = v.object({ token: TokenSchema, sha256: Sha256Schema });
const DiscardParams = v.object({ token: TokenSchema });

/** An upload written and synced, waiting for its commit. */
interface Upload {
  temp: string;
  target: string;
  size: number;
  sha256: string;
  mode: number | undefined;
  expiry: ReturnType<typeof setTimeout>;
}

interface Uploads {
  byToken: Map<string, Upload>;
  ended: boolean;
}

/** File systems whose files report size 0 but have content (/proc, /sys): read to their end. */
const PSEUDO_FILE_SYSTEMS = new Set([
  0x9fa0, // proc
  0x62656572, // sysfs
  0x64626720, // debugfs
  0x74726163, // tracefs
  0x73636673, // securityfs
  0x27e0eb, // cgroup
  0x63677270, // cgroup2
]);

async function isPseudoFile(path: string): Promise<boolean> {
  try {
    return PSEUDO_FILE_SYSTEMS.has((await statfs(path)).type);
  } catch {
    return false;
  }
}

export function filesService(options: FilesServiceOptions = {}): Service {
  const ttlMs = options.uncommittedTtlMs ?? UNCOMMITTED_TTL_MS;
  const sessions = new WeakMap<Session, Uploads>();

  const emit = (event: FilesEvent) => {
    try {
      options.onEvent?.(event);
    } catch {
      // A broken listener must not break a transfer.
    }
  };

  const removeTemp = async (temp: string, target: string, reason: TempRemovalReason) => {
    await rm(temp, { force: true }).catch(() => {});
    emit({ type: "temp-removed", path: temp, target, reason });
  };

  const uploadsOf = (session: Session): Uploads => {
    let uploads = sessions.get(session);
    if (!uploads) {
      const created: Uploads = { byToken: new Map(), ended: false };
      uploads = created;
      sessions.set(session, created);
      void session.closed.then(() => {
        created.ended = true;
        for (const token of [...created.byToken.keys()]) {
          const upload = take(created, token);
          if (upload) void removeTemp(upload.temp, upload.target, "session-ended");
        }
      });
    }
    return uploads;
  };

  const take = (uploads: Uploads, token: string): Upload | undefined => {
    const upload = uploads.byToken.get(token);
    if (!upload) return undefined;
    uploads.byToken.delete(token);
    clearTimeout(upload.expiry);
    return upload;
  };

  const get = async (params: unknown, ctx: CallContext) => {
    const { path } = parseParams(ctx.method, GetParams, params);
    const out = requireStream(ctx, "data");
    const { handle, size: statSize, mode } = await openForReading(path);
    try {
      const expected = statSize === 0 && (await isPseudoFile(path)) ? undefined : statSize;
      const hash = createHash("sha256");
      let size = 0;
      const data = quiet(toDuplex(out));
      const stopWatching = destroyOnAbort(ctx.signal, data);
      try {
        await pipeline(async function* () {
          for await (const chunk of readChunks(handle, path, hash, expected)) {
            size += chunk.length;
            yield chunk;
          }
        }, data);
      } finally {
        stopWatching();
      }
      return { size, sha256: hash.digest("hex"), mode };
    } catch (err) {
      throw fileSystemError(err, path);
    } finally {
      await handle.close().catch(() => {});
    }
  };

  const put = async (params: unknown, ctx: CallContext) => {
    const { path, mode, size: expected } = parseParams(ctx.method, PutParams, params);
    const input = requireStream(ctx, "data");
    const uploads = uploadsOf(ctx.session);
    await refuseFolder(path);
    const temp = await createTemp(path);
    emit({ type: "temp-created", path: temp.path, target: path });
    const hash = createHash("sha256");
    let size = 0;
    try {
      const data = quiet(toDuplex(input));
      const stopWatching = destroyOnAbort(ctx.signal, data);
      try {
        for await (const chunk of data as AsyncIterable<Buffer>) {
          if (expected !== undefined && size + chunk.length > expected) {
            throw fileChanged(path, expected, size + chunk.length);
          }
          hash.update(chunk);
          await writeAll(temp.handle, chunk, size);
          size += chunk.length;
        }
      } finally {
        stopWatching();
      }
      if (expected !== undefined && size !== expected) throw fileChanged(path, expected, size);
      await temp.handle.sync();
      await temp.handle.close();
    } catch (err) {
      await temp.handle.close().catch(() => {});
      await removeTemp(temp.path, path, "failed");
      throw fileSystemError(err, path);
    }
    // Cancelled or ended while the last bytes were being synced: nobody can commit this one.
    if (uploads.ended || ctx.signal.aborted) {
      await removeTemp(temp.path, path, uploads.ended ? "session-ended" : "failed");
      throw uploads.ended
        ? new GuestlinkError("SESSION_CLOSED", "the session ended before the upload was stored")
        : asError(ctx.signal.reason);
    }
    const token = randomBytes(16).toString("hex");
    const sha256 = hash.digest("hex");
    const expiry = setTimeout(() => {
      const upload = take(uploads, token);
      if (upload) void removeTemp(upload.temp, upload.target, "expired");
    }, ttlMs);
    expiry.unref();
    uploads.byToken.set(token, { temp: temp.path, target: path, size, sha256, mode, expiry });
    return { token, size, sha256 };
  };

  const commit = async (params: unknown, ctx: CallContext) => {
    const { token, sha256 } = parseParams(ctx.method, CommitParams, params);
    const upload = take(uploadsOf(ctx.session), token);
    if (!upload) {
      throw new InvalidOptionError(
        `files.commit: no upload with token ${token} in this session (it was committed, discarded, or not committed within ${ttlMs} ms)`,
        { details: { token } },
      );
    }
    const { temp, target } = upload;
    let mode: number;
    try {
      if (sha256 !== upload.sha256) {
        throw new GuestlinkError(
          "CHECKSUM_MISMATCH",
          `${target}: the agent received bytes with sha256 ${upload.sha256}, the sender says it sent ${sha256}; nothing was written`,
          { details: { path: target, expected: sha256, actual: upload.sha256 } },
        );
      }
      mode = upload.mode ?? (await existingMode(target)) ?? DEFAULT_FILE_MODE;
      await chmod(temp, mode);
      await rename(temp, target);
    } catch (err) {
      await removeTemp(
        temp,
        target,
        isGuestlinkError(err, "CHECKSUM_MISMATCH") ? "checksum" : "failed",
      );
      throw fileSystemError(err, target);
    }
    await syncFolder(dirname(target));
    emit({ type: "committed", path: target, size: upload.size, sha256, mode });
    return { path: target, size: upload.size, sha256, mode };
  };

  const discard = async (params: unknown, ctx: CallContext) => {
    const { token } = parseParams(ctx.method, DiscardParams, params);
    const upload = take(uploadsOf(ctx.session), token);
    if (upload) await removeTemp(upload.temp, upload.target, "discarded");
    return { discarded: upload !== undefined };
  };

  return {
    name: "files",
    methods: {
      "files.get": get,
      "files.put": put,
      "files.commit": commit,
      "files.discard": discard,
    },
  };
}

/** The permission bits of an existing target, to keep them; undefined when there is none. */
async function existingMode(target: string): Promise<number | undefined> {
  try {
    const st = await stat(target);
    if (st.isDirectory()) throw fileSystemError({ code: "EISDIR" }, target);
    return st.mode & 0o7777;
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return undefined;
    throw fileSystemError(err, target);
  }
}

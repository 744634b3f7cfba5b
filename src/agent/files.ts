/**
 * The files service: `files.get` streams a file out, `files.put` streams one into a temporary
 * file next to its target, and `files.commit` renames it over the target once the caller has
 * confirmed the sha256 both sides computed. Memory stays constant at any size: bytes move chunk
 * by chunk with the session's flow control reaching back to the disk.
 *
 * A write is atomic: until `files.commit` renames it, the target is untouched. Uploads not
 * committed are deleted when their session ends, when discarded, or after
 * `UNCOMMITTED_TTL_MS`, so a vanished host never leaves temporary files behind. What is not a
 * regular file is never replaced by one (see `resolveDestination`): a FIFO or device is written
 * through, a symlink is followed, a folder gets the file under the caller's base name.
 * `files.list` and `files.mkdir` let the host copy folders file by file.
 *
 * Relative paths are relative to the agent's working folder; with `root` (`--files-root DIR`),
 * relative to DIR, and every path must stay inside it (files-root.ts).
 */
import { createHash, randomBytes } from "node:crypto";
import { chmod, type FileHandle, lstat, rename, rm, stat, statfs } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import * as v from "valibot";
import { GuestlinkError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import { toDuplex } from "../platform/duplex.ts";
import { openThrough, resolveDestination } from "../platform/file-destination.ts";
import { createFolder, listFolder } from "../platform/file-folders.ts";
import {
  asError,
  BaseNameSchema,
  createTemp,
  destroyOnAbort,
  fileChanged,
  fileSystemError,
  ModeSchema,
  openForReading,
  PathSchema,
  readChunks,
  Sha256Schema,
  SizeSchema,
  syncFolder,
  writeAll,
} from "../platform/file-transfer.ts";
import type { CallContext, Session } from "../session/session.ts";
import { type FilesRoot, O_NOFOLLOW } from "./files-root.ts";
import { parseParams, requireStream } from "./params.ts";
import type { Service } from "./service.ts";

/** How long an upload may wait for its commit before it is deleted. */
export const UNCOMMITTED_TTL_MS = 5 * 60_000;
/** Mode of a new file when the caller names none and there is no target to take it from. */
export const DEFAULT_FILE_MODE = 0o644;

/** Why a temporary file was removed. */
export type TempRemovalReason = "failed" | "checksum" | "discarded" | "expired" | "session-ended";

/** What the files service did, for the agent's log (the library itself never prints). */
export type FilesEvent =
  | { type: "temp-created"; path: string; target: string }
  | { type: "writing-through"; path: string; kind: string }
  | { type: "temp-removed"; path: string; target: string; reason: TempRemovalReason }
  | { type: "committed"; path: string; size: number; sha256: string; mode: number };

export interface FilesServiceOptions {
  /** How long an upload waits for its commit (default `UNCOMMITTED_TTL_MS`). */
  uncommittedTtlMs?: number;
  /** Told about temporary files and commits; a listener that throws is ignored. */
  onEvent?: (event: FilesEvent) => void;
  /** Confines every path to this folder (PATH_OUTSIDE_ROOT beyond it). */
  root?: FilesRoot;
}

const TokenSchema = v.pipe(v.string("must be a string"), v.minLength(1), v.maxLength(128));

// ---- the service -------------------------------------------------------------------------

const GetParams = v.object({ path: PathSchema });
const PutParams = v.object({
  path: PathSchema,
  mode: v.optional(ModeSchema),
  size: v.optional(SizeSchema),
  /** The source's base name, to copy under when `path` is a folder. */
  name: v.optional(BaseNameSchema),
  /** Follow a symlink at `path` (default) or replace the link itself. */
  follow: v.optional(v.boolean("must be true or false")),
});
const CommitParams = v.object({ token: TokenSchema, sha256: Sha256Schema });
const DiscardParams = v.object({ token: TokenSchema });
const ListParams = v.object({ path: PathSchema });
const MkdirParams = v.object({
  path: PathSchema,
  /** Create the folder under this name when `path` is an existing folder (as `cp -r` does). */
  name: v.optional(BaseNameSchema),
  mode: v.optional(ModeSchema),
});

/** An upload written and synced, waiting for its commit. */
interface Upload {
  /** The temporary file to rename over `target`; none when the bytes were written through. */
  temp: string | undefined;
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
  const root = options.root;

  /** A path to read or list: with a root, resolved (symlinks followed) and checked inside it. */
  const existing = async (requested: string): Promise<string> =>
    root === undefined
      ? resolve(requested)
      : root.resolveExisting(root.locate(requested), requested);

  /** Checks a file just opened is inside the root (a path swapped since the check is caught). */
  const checkOpened = async (handle: FileHandle, requested: string): Promise<void> => {
    if (root !== undefined) await root.checkOpened(handle, requested);
  };
  const sessions = new WeakMap<Session, Uploads>();

  const emit = (event: FilesEvent) => {
    try {
      options.onEvent?.(event);
    } catch {
      // A broken listener must not break a transfer.
    }
  };

  const removeTemp = async (
    temp: string | undefined,
    target: string,
    reason: TempRemovalReason,
  ) => {
    if (temp === undefined) return;
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
    const requested = parseParams(ctx.method, GetParams, params).path;
    const path = await existing(requested);
    const out = requireStream(ctx, "data");
    let opened: Awaited<ReturnType<typeof openForReading>>;
    try {
      // Confined, a symlink put at the end since the check is not followed out.
      opened = await openForReading(path, root === undefined ? 0 : O_NOFOLLOW);
    } catch (err) {
      if (root !== undefined && (err as { code?: unknown }).code === "ELOOP") {
        throw root.symlinkAtEnd(requested);
      }
      throw err;
    }
    const { handle, size: statSize, mode } = opened;
    await checkOpened(handle, requested);
    try {
      const expected = statSize === 0 && (await isPseudoFile(path)) ? undefined : statSize;
      const hash = createHash("sha256");
      let size = 0;
      const data = toDuplex(out);
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
    const request = parseParams(ctx.method, PutParams, params);
    const { mode, size: expected } = request;
    const input = requireStream(ctx, "data");
    const uploads = uploadsOf(ctx.session);
    const destination = await resolveDestination(
      root === undefined ? request.path : root.locate(request.path),
      { name: request.name, follow: request.follow },
    );
    // Confined: where the links were followed to must be inside too (its folder resolved).
    if (root !== undefined) {
      destination.path = await root.resolveParent(destination.path, request.path);
    }
    const path = destination.path;
    let temp: string | undefined;
    let handle: FileHandle;
    if (destination.kind === "replace") {
      const created = await createTemp(path);
      ({ path: temp, handle } = created);
      emit({ type: "temp-created", path: temp, target: path });
      try {
        await checkOpened(handle, request.path);
      } catch (err) {
        await removeTemp(temp, path, "failed");
        throw err;
      }
    } else if (destination.kind === "through") {
      handle = await openThrough(destination, ctx.signal);
      await checkOpened(handle, request.path);
      emit({ type: "writing-through", path, kind: destination.type });
    } else {
      // resolveDestination refuses the agent's own open files unless asked not to; it was not.
      throw new GuestlinkError(
        "UNSUPPORTED_FILE_TYPE",
        `${path} is one of the agent's own open files`,
        {
          details: { path, type: "open file" },
        },
      );
    }
    const hash = createHash("sha256");
    let size = 0;
    try {
      const data = toDuplex(input);
      const stopWatching = destroyOnAbort(ctx.signal, data);
      try {
        for await (const chunk of data as AsyncIterable<Buffer>) {
          if (expected !== undefined && size + chunk.length > expected) {
            throw fileChanged(path, expected, size + chunk.length);
          }
          hash.update(chunk);
          await writeAll(handle, chunk, temp === undefined ? null : size);
          size += chunk.length;
        }
      } finally {
        stopWatching();
      }
      if (expected !== undefined && size !== expected) throw fileChanged(path, expected, size);
      if (
        temp !== undefined ||
        (destination.kind === "through" && destination.type === "block device")
      ) {
        await handle.sync();
      }
      await handle.close();
    } catch (err) {
      await handle.close().catch(() => {});
      await removeTemp(temp, path, "failed");
      throw fileSystemError(err, path);
    }
    // Cancelled or ended while the last bytes were being synced: nobody can commit this one.
    if (uploads.ended || ctx.signal.aborted) {
      await removeTemp(temp, path, uploads.ended ? "session-ended" : "failed");
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
    uploads.byToken.set(token, { temp, target: path, size, sha256, mode, expiry });
    return { token, size, sha256, path };
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
          temp === undefined
            ? `${target}: the agent wrote bytes with sha256 ${upload.sha256} through to it, the sender says it sent ${sha256}; what was written cannot be taken back`
            : `${target}: the agent received bytes with sha256 ${upload.sha256}, the sender says it sent ${sha256}; nothing was written`,
          { details: { path: target, expected: sha256, actual: upload.sha256 } },
        );
      }
      if (temp === undefined) {
        // Written through to a FIFO or device: its own mode is left as it is.
        mode = (await stat(target)).mode & 0o7777;
      } else {
        mode = upload.mode ?? (await existingMode(target)) ?? DEFAULT_FILE_MODE;
        await chmod(temp, mode);
        await rename(temp, target);
      }
    } catch (err) {
      await removeTemp(
        temp,
        target,
        isGuestlinkError(err, "CHECKSUM_MISMATCH") ? "checksum" : "failed",
      );
      throw fileSystemError(err, target);
    }
    if (temp !== undefined) await syncFolder(dirname(target));
    emit({ type: "committed", path: target, size: upload.size, sha256, mode });
    return { path: target, size: upload.size, sha256, mode };
  };

  const discard = async (params: unknown, ctx: CallContext) => {
    const { token } = parseParams(ctx.method, DiscardParams, params);
    const upload = take(uploadsOf(ctx.session), token);
    if (upload) await removeTemp(upload.temp, upload.target, "discarded");
    return { discarded: upload !== undefined };
  };

  const list = async (params: unknown, ctx: CallContext) => {
    const path = await existing(parseParams(ctx.method, ListParams, params).path);
    const entries = await listFolder(path);
    let mode: number;
    try {
      mode = (await stat(path)).mode & 0o7777;
    } catch (err) {
      throw fileSystemError(err, path);
    }
    return { path, mode, entries };
  };

  const makeFolder = async (params: unknown, ctx: CallContext) => {
    const request = parseParams(ctx.method, MkdirParams, params);
    return createFolder(await existing(request.path), request.name, request.mode);
  };

  return {
    name: "files",
    methods: {
      "files.get": get,
      "files.put": put,
      "files.commit": commit,
      "files.discard": discard,
      "files.list": list,
      "files.mkdir": makeFolder,
    },
  };
}

/** The permission bits of an existing regular target, to keep them; undefined when there is none. */
async function existingMode(target: string): Promise<number | undefined> {
  try {
    // lstat: a symlink replaced itself (follow: false) has no mode worth keeping.
    const st = await lstat(target);
    if (st.isDirectory()) throw fileSystemError({ code: "EISDIR" }, target);
    return st.isFile() ? st.mode & 0o7777 : undefined;
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return undefined;
    throw fileSystemError(err, target);
  }
}

/**
 * Copies of folders (`guestlink get -r` / `put -r`), file by file: each file goes through
 * `getFile` / `putFile`, so each is sha256-checked and replaced atomically, a failure names the
 * one file it is about, and a cancel leaves no temporary file. (A tar stream would need an
 * archive format both sides parse, and a host that unpacks a hostile agent's archive must check
 * every name anyway; one call per file keeps what is already checked.)
 *
 * As `cp -r` does: into an existing folder the copy goes under the source's base name; otherwise
 * the destination becomes the copy. Only files and folders are copied: symlinks, FIFOs, sockets
 * and devices inside the tree are skipped and reported in `skipped` (never silently).
 */
import { lstat, stat } from "node:fs/promises";
import { basename, join, posix, resolve } from "node:path";
import * as v from "valibot";
import { isGuestlinkError } from "../errors.ts";
import { createFolder, listFolder } from "../platform/file-folders.ts";
import {
  type FileEntry,
  FileEntrySchema,
  fileSystemError,
  ModeSchema,
} from "../platform/file-transfer.ts";
import type { Session } from "../session/session.ts";
import { getFile, putFile, type TransferOptions, withSide } from "./files.ts";
import { checkReply } from "./reply.ts";

export interface TreeResult {
  /** The folder (or file) the copy went to: absolute on its side. */
  path: string;
  files: number;
  folders: number;
  bytes: number;
  /** Entries that are neither files nor folders, left out; paths on the source's side. */
  skipped: { path: string; type: string }[];
}

const ListResult = v.object({
  path: v.string(),
  mode: ModeSchema,
  entries: v.array(FileEntrySchema),
});
const MkdirResult = v.object({ path: v.string(), created: v.boolean() });

/** Progress across the files of a tree: bytes of the files done plus the one moving. */
function treeProgress(options: TransferOptions, result: TreeResult) {
  return {
    ...options,
    intoFolder: false,
    onProgress: (bytes: number) => options.onProgress?.(result.bytes + bytes),
  };
}

/** Copies `remotePath` (a folder, or a file) from the agent to `localPath`. */
export async function getTree(
  session: Session,
  remotePath: string,
  localPath: string,
  options: TransferOptions = {},
): Promise<TreeResult> {
  let top: v.InferOutput<typeof ListResult>;
  try {
    top = checkReply(
      "files.list",
      ListResult,
      await session.call("files.list", { path: remotePath }, options),
    );
  } catch (err) {
    if (!isGuestlinkError(err, "NOT_A_DIRECTORY")) throw withSide(err, session);
    // Not a folder: a file is copied as `get` copies it.
    const file = await getFile(session, remotePath, localPath, options);
    return { path: file.path, files: 1, folders: 0, bytes: file.size, skipped: [] };
  }
  const name = posix.basename(top.path);
  const into = await local(() =>
    createFolder(resolve(localPath), name === "" ? undefined : name, top.mode),
  );
  const result: TreeResult = { path: into.path, files: 0, folders: 1, bytes: 0, skipped: [] };
  const walk = async (remote: string, here: string, entries: readonly FileEntry[]) => {
    for (const entry of entries) {
      const from = posix.join(remote, entry.name);
      const to = join(here, entry.name);
      if (entry.type === "folder") {
        await local(() => createFolder(to, undefined, entry.mode));
        result.folders++;
        const listed = checkReply(
          "files.list",
          ListResult,
          await session.call("files.list", { path: from }, options).catch((err: unknown) => {
            throw withSide(err, session);
          }),
        );
        await walk(from, to, listed.entries);
      } else if (entry.type === "file") {
        const file = await getFile(session, from, to, treeProgress(options, result));
        result.files++;
        result.bytes += file.size;
      } else {
        result.skipped.push({ path: from, type: entry.type });
      }
    }
  };
  await walk(top.path, into.path, top.entries);
  return result;

  async function local<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      throw withSide(err, session);
    }
  }
}

/** Copies `localPath` (a folder, or a file) to `remotePath` in the agent. */
export async function putTree(
  session: Session,
  localPath: string,
  remotePath: string,
  options: TransferOptions = {},
): Promise<TreeResult> {
  const source = resolve(localPath);
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(source);
  } catch (err) {
    throw withSide(fileSystemError(err, source), session);
  }
  if (!st.isDirectory()) {
    const file = await putFile(session, source, remotePath, options);
    return { path: file.path, files: 1, folders: 0, bytes: file.size, skipped: [] };
  }
  const mkdir = async (path: string, name: string | undefined, mode: number) => {
    try {
      const params = name === undefined ? { path, mode } : { path, name, mode };
      return checkReply(
        "files.mkdir",
        MkdirResult,
        await session.call("files.mkdir", params, options),
      ).path;
    } catch (err) {
      throw withSide(err, session);
    }
  };
  const list = async (path: string) => {
    try {
      return await listFolder(path);
    } catch (err) {
      throw withSide(err, session);
    }
  };
  const into = await mkdir(remotePath, basename(source), st.mode & 0o7777);
  const result: TreeResult = { path: into, files: 0, folders: 1, bytes: 0, skipped: [] };
  const walk = async (here: string, remote: string) => {
    for (const entry of await list(here)) {
      const from = join(here, entry.name);
      const to = posix.join(remote, entry.name);
      if (entry.type === "folder") {
        await mkdir(to, undefined, entry.mode);
        result.folders++;
        await walk(from, to);
      } else if (entry.type === "file") {
        const file = await putFile(session, from, to, treeProgress(options, result));
        result.files++;
        result.bytes += file.size;
      } else {
        // lstat again for the type's name (listFolder says only "symlink" or "other").
        const type =
          entry.type === "symlink" ? "symlink" : describe(await lstat(from).catch(() => undefined));
        result.skipped.push({ path: from, type });
      }
    }
  };
  await walk(source, into);
  return result;
}

function describe(st: Awaited<ReturnType<typeof lstat>> | undefined): string {
  if (st?.isFIFO()) return "FIFO";
  if (st?.isSocket()) return "socket";
  if (st?.isCharacterDevice()) return "character device";
  if (st?.isBlockDevice()) return "block device";
  return "other";
}

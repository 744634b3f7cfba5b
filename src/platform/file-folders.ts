/**
 * Folders on either side of a copy of a folder (`guestlink get -r` / `put -r`), which goes file
 * by file: what a folder holds, and making the folder a copy goes into.
 */
import { lstat, mkdir, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { GuestlinkError } from "../errors.ts";
import { type FileEntry, fileSystemError } from "./file-transfer.ts";

/** Bits a copied folder always has, so the files copied next can go in. */
const FOLDER_OWNER_BITS = 0o700;

/** The entries of folder `path`, each with its type, permission bits and size (not followed). */
export async function listFolder(path: string): Promise<FileEntry[]> {
  try {
    const names = (await readdir(path)).sort();
    const entries: FileEntry[] = [];
    for (const name of names) {
      let st: Awaited<ReturnType<typeof lstat>>;
      try {
        st = await lstat(join(path, name));
      } catch (err) {
        if ((err as { code?: unknown }).code === "ENOENT") continue; // gone since readdir
        throw err;
      }
      const type = st.isFile()
        ? "file"
        : st.isDirectory()
          ? "folder"
          : st.isSymbolicLink()
            ? "symlink"
            : "other";
      entries.push({ name, type, mode: st.mode & 0o7777, size: st.isFile() ? st.size : 0 });
    }
    return entries;
  } catch (err) {
    throw fileSystemError(err, path);
  }
}

/**
 * Creates folder `path` (or `path/name` when `path` is a folder and `name` is given, as `cp -r`
 * copies into an existing folder). An existing folder is used as it is. Its owner can always
 * write to it, so the files copied next can go in.
 */
export async function createFolder(
  path: string,
  name: string | undefined,
  mode: number | undefined,
): Promise<{ path: string; created: boolean }> {
  let target = path;
  if (name !== undefined) {
    const st = await stat(path).catch(() => undefined);
    if (st?.isDirectory()) target = join(path, name);
  }
  try {
    await mkdir(target, { mode: (mode ?? 0o755) | FOLDER_OWNER_BITS });
    return { path: target, created: true };
  } catch (err) {
    if ((err as { code?: unknown }).code === "EEXIST") {
      const st = await stat(target).catch(() => undefined);
      if (st?.isDirectory()) return { path: target, created: false };
      throw new GuestlinkError("NOT_A_DIRECTORY", `${target} exists and is not a folder`, {
        details: { path: target },
      });
    }
    throw fileSystemError(err, target);
  }
}

/**
 * `guestlink agent --files-root DIR`: the files service confined to one folder. A path a caller
 * names is refused with PATH_OUTSIDE_ROOT when:
 *
 * - it holds a `..` component (refused as written, before anything is looked up);
 * - it is absolute and not DIR or below it (relative paths are taken relative to DIR);
 * - its folder, resolved by the kernel (realpath, every symlink followed), is not inside DIR's
 *   own real path; and, for a file that exists, the file it finally names is not either (a
 *   symlink inside DIR that points inside DIR is fine; one that points out is not).
 *
 * Checking a path and then opening it leaves a window in which a local user who can write in DIR
 * could swap a folder for a symlink. Where it is cheap that window is closed: the last component
 * is opened with O_NOFOLLOW (a symlink put there since the check fails the open), and what was
 * opened (the file read, the temporary file a put writes, a FIFO written through) is checked
 * again by the path the kernel gives for its descriptor (/proc/self/fd/N), so bytes are never
 * read from or written to a file outside DIR. Listing a folder and making one are checked by
 * path only.
 */
import { constants } from "node:fs";
import { type FileHandle, readlink, realpath, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, resolve, sep } from "node:path";
import { GuestlinkError, InvalidOptionError } from "../errors.ts";
import { fileSystemError } from "../platform/file-transfer.ts";

/** O_NOFOLLOW where the platform has it (every Unix Node runs on). */
export const O_NOFOLLOW = constants.O_NOFOLLOW ?? 0;

export class FilesRoot {
  /** DIR as given, made absolute. */
  readonly path: string;
  /** DIR with every symlink resolved: what paths are checked against. */
  readonly real: string;

  private constructor(path: string, real: string) {
    this.path = path;
    this.real = real;
  }

  /** The root at `dir`, which must be an existing folder (INVALID_OPTION otherwise). */
  static async open(dir: string): Promise<FilesRoot> {
    const path = resolve(dir);
    let real: string;
    try {
      real = await realpath(path);
      if (!(await stat(real)).isDirectory()) throw Object.assign(new Error(), { code: "ENOTDIR" });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      throw new InvalidOptionError(
        `--files-root ${dir}: ${code === "ENOENT" ? "no such folder" : code === "ENOTDIR" ? "not a folder" : `cannot be used (${String(code)})`}`,
        { details: { option: "files-root", value: dir } },
      );
    }
    return new FilesRoot(path, real);
  }

  /** Whether `real` (a path with no symlinks) is the root or below it. */
  contains(real: string): boolean {
    return real === this.real || real.startsWith(this.real === sep ? sep : this.real + sep);
  }

  /**
   * Where `requested` is before anything is looked up: relative to the root, or an absolute
   * path under it (as given or by its real path). Refuses `..` and what lies elsewhere.
   */
  locate(requested: string): string {
    if (requested.split("/").includes("..")) {
      throw this.#outside(requested, "it holds ..");
    }
    if (!isAbsolute(requested)) return join(this.real, requested);
    const absolute = resolve(requested);
    for (const base of [this.real, this.path]) {
      if (absolute === base || absolute.startsWith(base === sep ? sep : base + sep)) {
        return join(this.real, absolute.slice(base.length));
      }
    }
    throw this.#outside(requested);
  }

  /**
   * `path` (from `locate`) with its folder resolved and checked, its last component kept as it
   * is (not followed): what a new file or folder is made as, or a symlink replaced.
   */
  async resolveParent(path: string, requested: string): Promise<string> {
    if (path === this.real) return path;
    let folder: string;
    try {
      folder = await realpath(dirname(path));
    } catch (err) {
      throw fileSystemError(err, dirname(path));
    }
    if (!this.contains(folder)) throw this.#outside(requested, "a symlink leads out of it");
    return join(folder, basename(path));
  }

  /**
   * `path` (from `locate`) resolved all the way when it exists (a symlink at its end followed),
   * and checked; when it does not, as `resolveParent` has it.
   */
  async resolveExisting(path: string, requested: string): Promise<string> {
    let real: string;
    try {
      real = await realpath(path);
    } catch (err) {
      if ((err as { code?: unknown }).code !== "ENOENT") throw fileSystemError(err, path);
      // Missing, or a dangling symlink: its folder decides; opening it then fails as it should.
      return this.resolveParent(path, requested);
    }
    if (!this.contains(real)) throw this.#outside(requested, "a symlink leads out of it");
    return real;
  }

  /**
   * Checks what `handle` has open is inside the root, by the path the kernel knows it by: the
   * check that holds even if a folder on the way was swapped after `resolve…`. Closes the
   * handle and throws PATH_OUTSIDE_ROOT when it is not. Without /proc there is nothing to ask.
   */
  async checkOpened(handle: FileHandle, requested: string): Promise<void> {
    let opened: string;
    try {
      opened = await readlink(`/proc/self/fd/${handle.fd}`);
    } catch {
      return;
    }
    if (this.contains(opened)) return;
    await handle.close().catch(() => {});
    throw this.#outside(
      requested,
      "what was opened is not in it (a path changed while it was used)",
    );
  }

  /** PATH_OUTSIDE_ROOT for `requested`. */
  #outside(requested: string, why?: string): GuestlinkError {
    return new GuestlinkError(
      "PATH_OUTSIDE_ROOT",
      `${requested} is outside ${this.path}, the folder this agent's files are confined to (--files-root)${why === undefined ? "" : `: ${why}`}`,
      { details: { path: requested, root: this.path } },
    );
  }

  /** An ELOOP from opening with O_NOFOLLOW: the last component is a symlink (swapped in, or dangling). */
  symlinkAtEnd(requested: string): GuestlinkError {
    return this.#outside(requested, "it ends in a symlink that does not resolve inside it");
  }
}

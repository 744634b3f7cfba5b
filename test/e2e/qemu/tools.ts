/** What building the test guest needs from the host, shared by image.ts and kernel.ts. */
import { execFile } from "node:child_process";
import { constants, existsSync } from "node:fs";
import { access, mkdir, mkdtemp, readdir, rename, rm } from "node:fs/promises";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/** Runs a program to its end; rejects with its stderr on a non-zero exit. */
export const run = promisify(execFile);

/** The repository's root. */
export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
/** Where kernels and images are kept between runs (outside git). */
export const CACHE_DIR = process.env.GUESTLINK_QEMU_CACHE ?? join(ROOT, ".cache", "qemu");

/** A reason the guest cannot be built on this machine; tests skip with its message. */
export class ImageUnavailable extends Error {
  override name = "ImageUnavailable";
}

/** Finds a program in PATH. */
export async function which(program: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, program);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/** Fills `dir` through a temporary sibling renamed into place, so a half-built one is never seen. */
export async function atomicDir(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  await mkdir(dirname(dir), { recursive: true });
  const tmp = await mkdtemp(`${dir}.tmp-`);
  try {
    await fill(tmp);
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Another process built the same thing first: theirs is as good.
    if (existsSync(dir) && (err as NodeJS.ErrnoException).code === "ENOTEMPTY") return;
    if (existsSync(dir) && (err as NodeJS.ErrnoException).code === "EEXIST") return;
    throw err;
  }
}

/** Every file under `dir`, recursively. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    else out.push(path);
  }
  return out;
}

/** The end of a failed command's stderr, for a one-line reason. */
export function tail(err: unknown): string {
  const e = err as { stderr?: string | Buffer; message?: string };
  const text = String(e.stderr ?? "").trim() || String(e.message ?? err);
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  const errors = lines.filter((l) => /\berror\b|✘/i.test(l));
  return (errors.length > 0 ? errors.slice(0, 3) : lines.slice(-3)).join(" | ");
}

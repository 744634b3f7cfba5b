/**
 * The host's side of the QEMU tests: guestlink's CLI and library from the TypeScript sources,
 * as the other CLI tests run it (test/helpers/cli-entry.ts through tsx), so host and guest are
 * always the same code: image.ts bundles the guest's agent from the same tree. `built: true`
 * runs `node bin/guestlink` (dist/, made by `npm run build`) instead, for figures of what ships.
 */
import { spawn } from "node:child_process";
import { statSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { ROOT } from "./image.ts";

/** The guestlink command as built. */
export const GUESTLINK_BIN = join(ROOT, "bin", "guestlink");
/** The guestlink command from the sources. */
const CLI_ENTRY = join(ROOT, "test", "helpers", "cli-entry.ts");
const BUILT_MAIN = join(ROOT, "dist", "cli", "main.js");
/** A CLI run that takes longer than this is stuck, whatever it was doing. */
const DEFAULT_CLI_TIMEOUT_MS = 120_000;

/** Whether dist/ is newer than every source file, so `built: true` runs the same code. */
export async function builtIsCurrent(): Promise<boolean> {
  let built: number;
  try {
    built = statSync(BUILT_MAIN).mtimeMs;
  } catch {
    return false;
  }
  const newest = async (dir: string): Promise<number> => {
    let max = 0;
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      max = Math.max(max, e.isDirectory() ? await newest(path) : (await stat(path)).mtimeMs);
    }
    return max;
  };
  return built > (await newest(join(ROOT, "src")));
}

export interface GuestlinkRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Standard output, unless it went to `options.stdout`. */
  stdout: Buffer;
  stderr: string;
  /** From spawn to exit. */
  ms: number;
}

export interface RunGuestlinkOptions {
  /** Where standard output goes instead of being collected (a hash, a file). */
  stdout?: Writable;
  stdin?: string | Buffer;
  /** Killed (SIGKILL) after this long; the result then has signal SIGKILL. */
  timeoutMs?: number;
  /** Run `node bin/guestlink` (dist/) rather than the sources. */
  built?: boolean;
}

/** Runs `guestlink ARGS…` to its end. */
export function runGuestlink(
  args: readonly string[],
  options: RunGuestlinkOptions = {},
): Promise<GuestlinkRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const entry = options.built ? [GUESTLINK_BIN] : ["--import", "tsx", CLI_ENTRY];
    const child = spawn(process.execPath, [...entry, ...args], {
      cwd: ROOT,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const timer = setTimeout(
      () => child.kill("SIGKILL"),
      options.timeoutMs ?? DEFAULT_CLI_TIMEOUT_MS,
    );
    const out: Buffer[] = [];
    let stderr = "";
    if (options.stdout) child.stdout.pipe(options.stdout, { end: false });
    else child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out),
        stderr,
        ms: performance.now() - started,
      });
    });
    child.stdin.on("error", () => {}); // a CLI that exits before reading its stdin
    child.stdin.end(options.stdin);
  });
}

/** A one-line account of a CLI run, for assertion messages. */
export function describeRun(args: readonly string[], r: GuestlinkRun): string {
  const how = r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
  const err = r.stderr.trim().split("\n").slice(-5).join("\n  ");
  return `guestlink ${args.join(" ")}: ${how} after ${Math.round(r.ms)} ms${err ? `\n  ${err}` : ""}`;
}

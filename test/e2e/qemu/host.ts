/**
 * The host's side of the QEMU tests: guestlink's CLI as users run it, bin/guestlink (the build;
 * test/helpers/bin.ts refuses a build older than src/), as the other CLI tests run it, so host
 * and guest are the same code: image.ts bundles the guest's agent from the same tree.
 */
import { spawn } from "node:child_process";
import type { Writable } from "node:stream";
import { guestlinkArgs } from "../../helpers/bin.ts";
import { ROOT } from "./image.ts";

/** A CLI run that takes longer than this is stuck, whatever it was doing. */
/**
 * Below the tests' own 120 s: a CLI that stalls is killed first, so that the test fails with its
 * stderr and the guest console (the agent's log) instead of a bare timeout. 20 MB over virtio-serial
 * takes 6-20 s here; CI once saw it stall until the test's timeout, with nothing left to read.
 */
const DEFAULT_CLI_TIMEOUT_MS = 90_000;

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
}

/** Runs `guestlink ARGS…` to its end. */
export function runGuestlink(
  args: readonly string[],
  options: RunGuestlinkOptions = {},
): Promise<GuestlinkRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, guestlinkArgs(args), {
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

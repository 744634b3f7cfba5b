/** Runs the guestlink CLI as a user would: a child process, its stdout, stderr and exit code. */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { GUESTLINK_BIN, guestlinkArgs } from "./bin.ts";

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The command line that runs `guestlink` (bin/guestlink, the build), for a shell pipeline. */
export const CLI_COMMAND = [process.execPath, GUESTLINK_BIN] as const;

/** Starts `guestlink ARGS…` (bin/guestlink) and leaves it running. */
export function startCli(
  args: readonly string[],
  options: { cwd?: string } = {},
): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, guestlinkArgs(args), {
    stdio: ["pipe", "pipe", "pipe"],
    cwd: options.cwd,
  });
}

/** `guestlink ARGS…` (bin/guestlink), with optional stdin, and options for node before them. */
export function runCli(
  args: readonly string[],
  options: {
    stdin?: string;
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    nodeArgs?: readonly string[];
  } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), ...guestlinkArgs(args)], {
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    if (options.stdin !== undefined) child.stdin.end(options.stdin);
    else child.stdin.end();
  });
}

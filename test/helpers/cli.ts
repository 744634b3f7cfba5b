/** Runs the guestlink CLI as a user would: a child process, its stdout, stderr and exit code. */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const ENTRY = fileURLToPath(new URL("./cli-entry.ts", import.meta.url));
/** tsx by its full address, so a CLI started in another folder (`cwd`) still finds it. */
const TSX = import.meta.resolve("tsx");

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The command line that runs `guestlink` from the source, for a shell pipeline. */
export const CLI_COMMAND = [process.execPath, "--import", TSX, ENTRY] as const;

/** Starts `guestlink ARGS…` from the source (through tsx) and leaves it running. */
export function startCli(
  args: readonly string[],
  options: { cwd?: string } = {},
): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, ["--import", TSX, ENTRY, ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    cwd: options.cwd,
  });
}

/** `guestlink ARGS…` from the source (through tsx), with optional stdin. */
export function runCli(
  args: readonly string[],
  options: { stdin?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", TSX, ENTRY, ...args], {
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

/**
 * The real agent (`guestlink agent --listen unix:PATH`) in a process of its own, so a test or a
 * benchmark can read its resident memory from /proc and treat it as a peer would: only through
 * its socket (or stop it with SIGSTOP, to hold a transfer midway).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { guestlinkArgs } from "./bin.ts";

/** Kept of the agent's log, for the error when it does not start. */
const LOG_TAIL_CHARS = 8 * 1024;

export interface AgentProcess {
  readonly pid: number;
  readonly address: string;
  readonly child: ChildProcess;
  /** Kills it (SIGKILL: nothing here is about how it stops) and resolves once it is gone. */
  kill(): Promise<void>;
  /** The last 8 KiB of what it logged on stderr. */
  log(): string;
}

/**
 * Starts the agent listening on the Unix socket `path`, run as users run it (bin/guestlink, the
 * build; see bin.ts). Resolves once it has
 * logged "agent started", when it is listening. `args` are more options for `guestlink agent`.
 */
export async function startAgent(
  path: string,
  options: { args?: readonly string[]; cwd?: string } = {},
): Promise<AgentProcess> {
  return await startAgentAt(`unix:${path}`, options);
}

/** As `startAgent`, listening on any address (`nats://HOST:PORT/ID`, `tcp:…`). */
export async function startAgentAt(
  address: string,
  options: { args?: readonly string[]; cwd?: string } = {},
): Promise<AgentProcess> {
  const child = spawn(
    process.execPath,
    guestlinkArgs(["agent", "--listen", address, ...(options.args ?? [])]),
    {
      stdio: ["ignore", "ignore", "pipe"],
      cwd: options.cwd,
    },
  );
  // A test or benchmark that dies must not leave its agent behind.
  const reap = () => child.kill("SIGKILL");
  process.once("exit", reap);
  const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  void gone.then(() => process.off("exit", reap));
  let log = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      log = (log + chunk).slice(-LOG_TAIL_CHARS);
      if (log.includes("agent started")) resolve();
    });
    child.once("error", reject);
    child.once("exit", (code, signal) =>
      reject(new Error(`the agent exited before it started (${signal ?? code}): ${log}`)),
    );
  });
  return {
    pid: child.pid as number,
    address,
    child,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await gone;
    },
    log: () => log,
  };
}

/** A memory figure of process `pid` from /proc, in bytes: VmRSS (now) or VmHWM (its peak). */
export function residentBytes(pid: number, field: "VmRSS" | "VmHWM" = "VmRSS"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1];
  if (kib === undefined) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(kib) * 1024;
}

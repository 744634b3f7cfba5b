/** What the commands share: connecting to an agent, output for people and for machines, logging. */
import type { Command } from "commander";
import pino, { type Logger } from "pino";
import { GuestlinkError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import { nodeKeepAliveClock } from "../platform/node.ts";
import { logSessionEvents, openSession } from "../platform/session.ts";
import type { Session } from "../session/session.ts";
import { Supervisor } from "../supervise/supervisor.ts";

/** How long a command waits to reach its agent before failing (a VM may still be booting). */
export const DEFAULT_CONNECT_TIMEOUT_S = 30;

export interface GlobalOptions {
  verbose?: boolean;
}

/** The CLI's logger: pino, always to stderr (stdout may be a protocol channel or the user's data). */
export function makeLogger(verbose: boolean, level?: string): Logger {
  return pino(
    { level: level ?? (verbose ? "debug" : "warn"), base: undefined },
    pino.destination(2),
  );
}

/** Parses a positive number of seconds from an option, with a clear error. */
export function seconds(name: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) {
      throw new InvalidOptionError(`${name} takes a positive number of seconds, got "${value}"`);
    }
    return n;
  };
}

/** Parses a positive integer (counts, bytes) from an option. Accepts K, M, G suffixes (powers of 1024). */
export function positiveInteger(name: string): (value: string) => number {
  return (value) => {
    const m = /^(\d+)([KMG]i?B?)?$/i.exec(value.trim());
    const unit = m?.[2]?.[0]?.toUpperCase();
    const n = m
      ? Number(m[1]) *
        (unit === "K" ? 1024 : unit === "M" ? 1024 ** 2 : unit === "G" ? 1024 ** 3 : 1)
      : Number.NaN;
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new InvalidOptionError(
        `${name} takes a positive whole number (K, M, G allowed), got "${value}"`,
      );
    }
    return n;
  };
}

/** Longest wait between attempts while an agent is not up yet: it is found this soon after it is. */
const CONNECT_RETRY_CEILING_MS = 1_000;

/** How long a command rides out a lost connection to its agent before failing (RESUME_FAILED). */
export const DEFAULT_RECONNECT_TIMEOUT_S = 30;

/** The options every command that talks to an agent has (see `agentCommand`). */
export interface AgentCommandOptions {
  connectTimeout: number;
  reconnectTimeout?: number;
  payloadChecksum?: boolean;
}

let verboseLog: Logger | undefined;

/** Set by the program before a command runs: `--verbose` logs connection events to stderr. */
export function setVerbose(verbose: boolean): void {
  verboseLog = verbose ? makeLogger(true) : undefined;
}

/**
 * Connects to the agent at `address`, waiting up to `--connect-timeout` for it to come up (a VM
 * may still be booting): a refused or missing socket is retried with backoff, anything else fails
 * at once. Once connected, a lost connection is dialled again and the session resumes, for up to
 * `--reconnect-timeout`; the user hears of it only with `--verbose`.
 */
export async function connectAgent(
  address: string,
  opts: AgentCommandOptions = { connectTimeout: DEFAULT_CONNECT_TIMEOUT_S },
): Promise<Session> {
  const timeoutS = opts.connectTimeout;
  const windowMs = (opts.reconnectTimeout ?? DEFAULT_RECONNECT_TIMEOUT_S) * 1000;
  const options = {
    resume: { windowMs },
    ...(opts.payloadChecksum === false ? { payloadChecksum: false } : {}),
  };
  const supervisor = new Supervisor<Session>({
    connect: (signal) => openSession(address, { ...options, signal }),
    closed: (session) => session.closed,
    dispose: (session) => session.abort(new GuestlinkError("SESSION_CLOSED", "no longer wanted")),
    clock: nodeKeepAliveClock,
    random: Math.random,
    backoff: { ceilingMs: CONNECT_RETRY_CEILING_MS },
    giveUpAfterMs: timeoutS * 1000,
    // Also a connection dropped before the agent said HELLO where the transport says that means
    // "not up yet": a port forwarded into a VM (QEMU's hostfwd) while the guest is still booting.
    retryable: (err) =>
      isGuestlinkError(err, "CONNECT_FAILED") ||
      (isGuestlinkError(err) && err.details?.dialAgain === true),
  });
  const session = await supervisor.ready();
  // The session is the caller's from here; the supervisor stops watching it.
  supervisor.shutdown();
  if (verboseLog !== undefined) logSessionEvents(session, verboseLog);
  return session;
}

/** Prints a value as one line of JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Formats bytes for people: 1.5 MiB. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Two columns, the first padded: for `info` and friends. */
export function table(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}

/**
 * A command that talks to an agent: `NAME <address>` with `--connect-timeout`, so every such
 * command spells its address and its wait the same way.
 */
export function agentCommand(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .argument("<address>", "where the agent is (unix:PATH, tcp:HOST:PORT, exec:COMMAND, …)")
    .option(
      "--connect-timeout <seconds>",
      "how long to wait for the agent to come up",
      seconds("--connect-timeout"),
      DEFAULT_CONNECT_TIMEOUT_S,
    )
    .option(
      "--reconnect-timeout <seconds>",
      "how long to ride out a lost connection (reconnecting and resuming) before failing",
      seconds("--reconnect-timeout"),
      DEFAULT_RECONNECT_TIMEOUT_S,
    )
    .option(
      "--no-payload-checksum",
      "go without payload checksums if the peer agrees too (never over a lossy pipe: serial, stdio, exec, mailbox)",
    );
}

/** What the commands share: connecting to an agent, output for people and for machines, logging. */
import { hostname } from "node:os";
import type { Command } from "commander";
import pino, { type Logger } from "pino";
import { openDaemonSession } from "../daemon/client.ts";
import { InvalidOptionError } from "../errors.ts";
import { dialSession } from "../platform/dial.ts";
import { readKeyFile } from "../platform/key-file.ts";
import { logSessionEvents } from "../platform/session.ts";
import type { Session } from "../session/session.ts";
import { VERSION } from "../version.ts";
import { agentLogWriter } from "./agent-log.ts";
import {
  addConnectOptions,
  addGlobalOptions,
  DEFAULT_CONNECT_TIMEOUT_S,
  DEFAULT_RECONNECT_TIMEOUT_S,
} from "./options.ts";

export { DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_RECONNECT_TIMEOUT_S, seconds } from "./options.ts";

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

/** The options every command that talks to an agent has (see `agentCommand`). */
export interface AgentCommandOptions {
  connectTimeout: number;
  reconnectTimeout?: number;
  payloadChecksum?: boolean;
  /** Who this side says it is in the handshake (default: host name and pid). */
  peerId?: string;
  /** `--key-file`: the agent's key, for a tcp: address (TLS 1.3 with a pre-shared key). */
  keyFile?: string;
  /** `--nats-creds`: the NATS credentials file, for a nats: address. */
  natsCreds?: string;
}

let verboseLog: Logger | undefined;
let terminalRaw = false;

/** `exec -t` put the local terminal in raw mode (lines told on stderr then end in CR LF). */
export function setTerminalRaw(raw: boolean): void {
  terminalRaw = raw;
}

/** Set by the program before a command runs: `--verbose` logs connection events to stderr. */
export function setVerbose(verbose: boolean): void {
  verboseLog = verbose ? makeLogger(true) : undefined;
}

/**
 * Connects to the agent at `address`, waiting up to `--connect-timeout` in all for it to come up
 * (a VM may still be booting), and saying so on a terminal after two seconds; what cannot heal
 * by waiting fails at once (platform/dial.ts). Once connected, a lost connection is dialled
 * again and the session resumes, for up to `--reconnect-timeout`; on a terminal the user is told
 * at once, and again when it is back.
 */
export async function connectAgent(
  address: string,
  opts: AgentCommandOptions = { connectTimeout: DEFAULT_CONNECT_TIMEOUT_S },
): Promise<Session> {
  // `@ID`: the agent the daemon holds by that id, through the daemon's socket.
  if (address.startsWith("@")) {
    const session = await openDaemonSession(address.slice(1), {
      ...(opts.peerId === undefined
        ? {}
        : { peer: { id: opts.peerId, hostname: hostname(), version: VERSION } }),
    });
    if (verboseLog !== undefined) logSessionEvents(session, verboseLog);
    return session;
  }
  if (opts.keyFile !== undefined && !address.startsWith("tcp:")) {
    throw new InvalidOptionError(
      `--key-file applies to tcp: addresses only, not ${address}: drop --key-file (that transport is reached without a key)`,
      { details: { address } },
    );
  }
  if (opts.natsCreds !== undefined && !address.startsWith("nats:")) {
    throw new InvalidOptionError(
      `--nats-creds applies to nats: addresses only, not ${address}: drop --nats-creds`,
      { details: { address } },
    );
  }
  const key = opts.keyFile === undefined ? undefined : await readKeyFile(opts.keyFile);
  const timeoutS = opts.connectTimeout;
  const reconnectS = opts.reconnectTimeout ?? DEFAULT_RECONNECT_TIMEOUT_S;
  const tell = process.stderr.isTTY
    ? // In raw mode (exec -t) a line feed alone does not return the cursor.
      (line: string) => process.stderr.write(`guestlink: ${line}${terminalRaw ? "\r\n" : "\n"}`)
    : undefined;
  const session = await dialSession(address, {
    // An agent started here (exec:…) talks JSON logs on its stderr: keep it readable.
    execStderr: agentLogWriter(process.stderr, verboseLog !== undefined),
    timeoutMs: timeoutS * 1000,
    resume: { windowMs: reconnectS * 1000 },
    ...(key === undefined ? {} : { key }),
    ...(opts.natsCreds === undefined ? {} : { natsCreds: opts.natsCreds }),
    ...(opts.payloadChecksum === false ? { payloadChecksum: false } : {}),
    ...(opts.peerId === undefined
      ? {}
      : { peer: { id: opts.peerId, hostname: hostname(), version: VERSION } }),
    onWaiting:
      tell &&
      ((ms) =>
        tell(
          `waiting for the agent at ${address} … (${Math.round(ms / 1000)} s of up to ${timeoutS} s; --connect-timeout)`,
        )),
  });
  if (tell !== undefined) {
    session.onEvent((e) => {
      if (e.type === "disconnected")
        tell(`connection lost; waiting up to ${reconnectS} s for the session to resume`);
      else if (e.type === "resumed") tell("connection back; the session resumed");
    });
  }
  if (verboseLog !== undefined) logSessionEvents(session, verboseLog);
  return session;
}

/**
 * The version of every `--json` output's schema (docs/cli.md). It changes only when a field is
 * removed or changes meaning; new fields may appear without it changing.
 */
export const JSON_SCHEMA_VERSION = 1;

/** Prints an object as one line of JSON on stdout, led by its `schemaVersion`. */
export function printJson(value: object): void {
  process.stdout.write(`${JSON.stringify({ schemaVersion: JSON_SCHEMA_VERSION, ...value })}\n`);
}

/** Formats bytes (or bytes per second) for people: 784 B, 1.5 MiB. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  // Rates are fractions of a byte: never print 783.8832045380567 B.
  return i === 0 ? `${Math.round(n)} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Two columns, the first padded: for `info` and friends. */
export function table(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}

/**
 * A command that talks to an agent: `NAME <address>` with the global options and
 * `--connect-timeout` and friends, so every such command spells its address and its wait the
 * same way.
 */
export function agentCommand(program: Command, name: string, description: string): Command {
  const command = program
    .command(name)
    .description(description)
    .argument(
      "<address>",
      "where the agent is (unix:PATH, tcp:HOST:PORT, exec:COMMAND, …, or @ID for an agent `guestlink serve` holds)",
    );
  return addConnectOptions(addGlobalOptions(command));
}

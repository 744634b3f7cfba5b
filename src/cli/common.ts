/**
 * What the commands share: their options, output for people and for machines. Every command's
 * help and `--version` load this file, so it holds nothing heavy: connecting and logging are in
 * connect.ts, which a command loads when it runs.
 */
import type { Command } from "commander";
import { InvalidOptionError } from "../errors.ts";
import type { Session } from "../session/session.ts";
import {
  type AgentCommandOptions,
  addConnectOptions,
  addGlobalOptions,
  DEFAULT_CONNECT_TIMEOUT_S,
} from "./options.ts";

export {
  type AgentCommandOptions,
  DEFAULT_CONNECT_TIMEOUT_S,
  DEFAULT_RECONNECT_TIMEOUT_S,
  seconds,
  setTerminalRaw,
  setVerbose,
} from "./options.ts";

export interface GlobalOptions {
  verbose?: boolean;
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

/**
 * Connects to the agent at `address` (connect.ts, loaded on the first call): waits up to
 * `--connect-timeout` for it, and rides out a lost connection for up to `--reconnect-timeout`.
 */
export async function connectAgent(
  address: string,
  opts: AgentCommandOptions = { connectTimeout: DEFAULT_CONNECT_TIMEOUT_S },
): Promise<Session> {
  const connect = await import("./connect.ts");
  const session = await connect.connectAgent(address, opts);
  connected = true;
  return session;
}

let connected = false;

/**
 * Whether this run reached an agent, and so compiled the session: bin/guestlink then keeps its
 * code cache (a cache made by `--help` alone leaves exec most of its compiling to do).
 */
export function connectedToAgent(): boolean {
  return connected;
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

/**
 * How the command line is read, as ssh and kubectl users expect:
 *
 * - Global options (`--verbose`, `--json`, `--connect-timeout`, …) are accepted before the
 *   command word and after it, anywhere before the address; the one given nearest the end wins.
 * - For `exec`, everything from the remote command on is the command's own:
 *   `guestlink exec ADDR ls --timeout 1` runs `ls --timeout 1`; `--` before it is still accepted.
 *
 * commander reads each command's own options; this file adds the global ones to every command
 * and merges what was given where into the options the command's action receives.
 */
import type { Command } from "commander";
import { InvalidOptionError } from "../errors.ts";

/** How long a command waits to reach its agent before failing (a VM may still be booting). */
export const DEFAULT_CONNECT_TIMEOUT_S = 30;
/** How long a command rides out a lost connection to its agent before failing (RESUME_FAILED). */
export const DEFAULT_RECONNECT_TIMEOUT_S = 30;

/** Parses a positive number of seconds from an option, with a clear error. */
export function seconds(name: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n <= 0) {
      throw new InvalidOptionError(`${name} takes a positive number of seconds, got "${value}"`, {
        details: { option: name, value },
      });
    }
    return n;
  };
}

/** Set once `--json` or `--verbose` is read, even if reading the rest of the line then fails. */
const requested = { json: false, verbose: false };

/** Whether the user asked for machine output: failures are then JSON on stderr too. */
export function jsonOutput(): boolean {
  return requested.json;
}

/** Whether the user asked for details of failures. */
export function verboseOutput(): boolean {
  return requested.verbose;
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

let verbose = false;
let terminalRaw = false;

/** `exec -t` put the local terminal in raw mode (lines told on stderr then end in CR LF). */
export function setTerminalRaw(raw: boolean): void {
  terminalRaw = raw;
}

/** Whether the local terminal is in raw mode now (see `setTerminalRaw`). */
export function terminalIsRaw(): boolean {
  return terminalRaw;
}

/** Set by the program before a command runs: `--verbose` logs connection events to stderr. */
export function setVerbose(on: boolean): void {
  verbose = on;
}

/** Whether `--verbose` was given to the command that runs. */
export function isVerbose(): boolean {
  return verbose;
}

/** The options every command takes, wherever it is written before the address. */
export function addGlobalOptions(command: Command): Command {
  command
    .option("-v, --verbose", "print details and causes of failures")
    .option("--json", "machine-readable output (see docs/cli.md); failures as JSON on stderr");
  command.on("option:json", () => {
    requested.json = true;
  });
  command.on("option:verbose", () => {
    requested.verbose = true;
  });
  return command;
}

/** The options of every command that reaches an agent. No defaults here: see `mergeGlobals`. */
export function addConnectOptions(command: Command): Command {
  return command
    .option(
      "--connect-timeout <seconds>",
      `how long to wait for the agent, including its handshake (default ${DEFAULT_CONNECT_TIMEOUT_S})`,
      seconds("--connect-timeout"),
    )
    .option(
      "--reconnect-timeout <seconds>",
      `how long to ride out a lost connection, reconnecting and resuming, before failing (default ${DEFAULT_RECONNECT_TIMEOUT_S})`,
      seconds("--reconnect-timeout"),
    )
    .option(
      "--no-payload-checksum",
      "go without payload checksums if the peer agrees too (never over a lossy pipe: serial, stdio, exec, mailbox)",
    )
    .option(
      "--key-file <file>",
      "for tcp: addresses, the agent's key (guestlink keygen FILE): the connection is TLS 1.3 with it",
    )
    .option(
      "--nats-creds <file>",
      "for nats: addresses, the NATS credentials file (a user JWT and NKey seed) to log in with",
    );
}

const GLOBAL_DEFAULTS: Readonly<Record<string, unknown>> = {
  verbose: false,
  json: false,
  connectTimeout: DEFAULT_CONNECT_TIMEOUT_S,
  reconnectTimeout: DEFAULT_RECONNECT_TIMEOUT_S,
  payloadChecksum: true,
  keyFile: undefined,
  natsCreds: undefined,
};

/**
 * Before a command's action runs: each global option takes the value given nearest the end of
 * the command line (on the command itself, else on the program), else its default, and the
 * command's own options then hold it.
 */
export function mergeGlobals(command: Command): void {
  const chain: Command[] = [];
  for (let c: Command | null = command; c; c = c.parent) chain.push(c);
  for (const [name, fallback] of Object.entries(GLOBAL_DEFAULTS)) {
    const given = chain.find((c) => c.getOptionValueSource(name) === "cli");
    const declared = chain.some((c) => c.options.some((o) => o.attributeName() === name));
    if (!declared) continue;
    command.setOptionValueWithSource(
      name,
      given ? given.getOptionValue(name) : fallback,
      given ? "cli" : "default",
    );
  }
}

/**
 * Makes `command` (`NAME [options] <address> [options] [--] <command...>`) hand everything from
 * the remote command on to that command: the first word after the address that is not one of
 * our options starts it, as if `--` stood before it.
 */
export function commandAfterAddress(command: Command): Command {
  const parse = command.parseOptions.bind(command);
  command.parseOptions = (args: string[]) => parse(insertDoubleDash(command, args));
  return command;
}

function insertDoubleDash(command: Command, args: readonly string[]): string[] {
  let operands = 0;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "--") break;
    if (arg.length > 1 && arg.startsWith("-")) {
      const option = command.options.find((o) => o.short === arg || o.long === arg);
      // `--timeout 5`: the value is ours too. `--timeout=5` and `-c5` are one word.
      if (option?.required) i++;
      continue;
    }
    operands++;
    if (operands === 2) return [...args.slice(0, i), "--", ...args.slice(i)];
  }
  return [...args];
}

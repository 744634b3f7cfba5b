/**
 * The daemon's configuration (`guestlink serve --config serve.yaml`, and the same as flags):
 * which agents it holds, where agents dial in, and where its API listens. docs/daemon.md.
 */

import { readYaml } from "../controller/config-file.ts";
import { ConfigInvalidError, isGuestlinkError } from "../errors.ts";
import { CheckError, readMapping } from "../fleet/check.ts";
import { isLoopbackHost, parseAddress } from "../transport/address.ts";
import { parseNatsServers } from "../transport/nats-address.ts";
import { DEFAULT_HTTP, defaultSocketPath } from "./paths.ts";

export interface ServeAgent {
  id: string;
  address: string;
  labels: Record<string, string>;
  /** `key_file`: the agent's key, for a tcp: address (docs/security.md). */
  keyFile?: string;
}

/** Where agents started with `agent --connect` dial in (`listen:`). */
export interface DialInEntry {
  address: string;
  /** `key_file`: only agents holding this key may dial in (tcp: only; docs/security.md). */
  keyFile?: string;
  /** `insecure`: allow a non-loopback tcp: address without a key (anyone could pose as an agent). */
  insecure?: boolean;
  /**
   * `max_agents`: agents held from this address at once (up or down); one more id is refused
   * with LIMIT_EXCEEDED, so a guest dialling in under ever new names cannot grow the daemon.
   */
  maxAgents: number;
  /** `max_connections`: sessions this address holds at once (default: registry.ts's). */
  maxConnections?: number;
  /** `max_pending`: connections waiting for their HELLO at once; one more drops the oldest. */
  maxPending?: number;
}

/** Agents one dial-in address may make the daemon hold, by default. */
export const DEFAULT_MAX_DIALLED_IN_AGENTS = 64;

export interface ServeConfig {
  agents: ServeAgent[];
  /** Absolute socket-path patterns with `*`: one agent per match, named by what `*` matched. */
  discover: string[];
  /** Addresses where agents started with `agent --connect` dial in. */
  listen: DialInEntry[];
  /** The API's Unix socket. */
  socket: string;
  /** The API on TCP (`host:port`, loopback only), or null for none. */
  http: string | null;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function parseServeConfig(text: string, source: string): ServeConfig {
  return readYaml(text, source, readServeConfig, ConfigInvalidError);
}

export function readServeConfig(value: unknown): ServeConfig {
  return readMapping(value ?? {}, "", (f) => {
    const agents = f.list("agents", (v, path) =>
      readMapping(v, path, (a) => {
        const id = a.string("id");
        if (!ID.test(id))
          throw new CheckError(a.at("id"), "use 1 to 64 letters, digits, '.', '_' and '-'");
        const address = a.string("address");
        checkAddress(address, a.at("address"));
        const keyFile = a.string("key_file", undefined);
        if (keyFile !== undefined && !address.startsWith("tcp:")) {
          throw new CheckError(a.at("key_file"), "a key applies to tcp: addresses only");
        }
        const labels = a.raw("labels") ?? {};
        if (
          typeof labels !== "object" ||
          labels === null ||
          Array.isArray(labels) ||
          !Object.values(labels).every((l) => typeof l === "string")
        ) {
          throw new CheckError(a.at("labels"), "expected a mapping of names to strings");
        }
        return {
          id,
          address,
          labels: labels as Record<string, string>,
          ...(keyFile === undefined ? {} : { keyFile }),
        };
      }),
    );
    const ids = new Set<string>();
    agents.forEach((a, i) => {
      if (ids.has(a.id))
        throw new CheckError(`agents[${i}].id`, `${JSON.stringify(a.id)} is named twice`);
      ids.add(a.id);
    });
    const discover = f.list("discover", (v, path) => checkPattern(v, path));
    const listen = f.list("listen", readDialIn);
    const seen = new Set<string>();
    listen.forEach((entry, i) => {
      if (seen.has(entry.address)) {
        throw new CheckError(`listen[${i}]`, `${entry.address} is listed twice`);
      }
      seen.add(entry.address);
    });
    const socket = f.string("socket", defaultSocketPath());
    const http = checkHttp(f.raw("http"), "http");
    return { agents, discover, listen, socket, http };
  });
}

/** A `listen:` entry: an address, or `{ address, key_file?, insecure?, max_agents? }`. */
export function readDialIn(value: unknown, path: string): DialInEntry {
  const entry: DialInEntry =
    typeof value === "string"
      ? { address: value, maxAgents: DEFAULT_MAX_DIALLED_IN_AGENTS }
      : readMapping(value, path, (f) => {
          const keyFile = f.string("key_file", undefined);
          const insecure = f.boolean("insecure", false);
          const maxConnections = f.integer("max_connections", 1, 1_000_000, undefined);
          const maxPending = f.integer("max_pending", 1, 1_000_000, undefined);
          return {
            address: f.string("address"),
            ...(keyFile === undefined ? {} : { keyFile }),
            ...(insecure ? { insecure } : {}),
            maxAgents: f.integer("max_agents", 1, 100_000, DEFAULT_MAX_DIALLED_IN_AGENTS),
            ...(maxConnections === undefined ? {} : { maxConnections }),
            ...(maxPending === undefined ? {} : { maxPending }),
          };
        });
  const where = typeof value === "string" ? path : `${path}.address`;
  checkAddress(entry.address, where);
  const parsed = parseAddress(entry.address);
  if (entry.keyFile !== undefined && parsed.kind !== "tcp") {
    throw new CheckError(`${path}.key_file`, "a key applies to tcp: addresses only");
  }
  if (
    parsed.kind === "tcp" &&
    entry.keyFile === undefined &&
    !entry.insecure &&
    !isLoopbackHost(parsed.host)
  ) {
    throw new CheckError(
      where,
      `${entry.address} is not a loopback address: without a key anyone who reaches it could pose as an agent; give key_file: (guestlink keygen FILE; the agents dial in with --key-file), or insecure: true if the network is trusted`,
    );
  }
  return entry;
}

export function checkAddress(address: string, path: string): void {
  try {
    parseAddress(address);
  } catch (err) {
    if (isGuestlinkError(err)) throw new CheckError(path, err.message);
    throw err;
  }
}

/**
 * A discover pattern: an absolute path (or `unix:` path) with at least one `*`, or NATS servers
 * whose agents are found by the NATS service protocol (`nats://HOST:PORT[/ID-PATTERN]`).
 */
export function checkPattern(value: unknown, path: string): string {
  if (typeof value !== "string") throw new CheckError(path, "expected a socket-path pattern");
  if (value.startsWith("nats:")) {
    parseNatsServers(
      value,
      (problem) => new CheckError(path, `${JSON.stringify(value)}: ${problem}`),
    );
    return value;
  }
  const pattern = value.startsWith("unix:") ? value.slice(5) : value;
  if (!pattern.startsWith("/") || !pattern.includes("*")) {
    throw new CheckError(
      path,
      `${JSON.stringify(value)}: a pattern is an absolute socket path with * where the agent's id is (/run/vms/*/agent.sock)`,
    );
  }
  return pattern;
}

/** `host:port` on loopback, `false`/"off" for none; absent is the default. */
export function checkHttp(value: unknown, path: string): string | null {
  if (value === undefined) return DEFAULT_HTTP;
  if (value === false || value === "off") return null;
  if (typeof value !== "string") throw new CheckError(path, "expected HOST:PORT, or off");
  const at = value.lastIndexOf(":");
  const host = value.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(value.slice(at + 1));
  if (at < 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new CheckError(path, `${JSON.stringify(value)} is not HOST:PORT`);
  }
  if (!["127.0.0.1", "::1", "localhost"].includes(host) && !host.startsWith("127.")) {
    throw new CheckError(
      path,
      `${host} is not a loopback address: the daemon has no authentication yet, so its API listens only on loopback (127.0.0.1, ::1)`,
    );
  }
  return value;
}

/**
 * The daemon's configuration (`guestlink serve --config serve.yaml`, and the same as flags):
 * which agents it holds, where agents dial in, and where its API listens. docs/daemon.md.
 */

import { readYaml } from "../controller/config-file.ts";
import { ConfigInvalidError, isGuestlinkError } from "../errors.ts";
import { CheckError, readMapping } from "../fleet/check.ts";
import { parseAddress } from "../transport/address.ts";
import { parseNatsServers } from "../transport/nats-address.ts";
import { DEFAULT_HTTP, defaultSocketPath } from "./paths.ts";

export interface ServeAgent {
  id: string;
  address: string;
  labels: Record<string, string>;
  /** `key_file`: the agent's key, for a tcp: address (docs/security.md). */
  keyFile?: string;
}

export interface ServeConfig {
  agents: ServeAgent[];
  /** Absolute socket-path patterns with `*`: one agent per match, named by what `*` matched. */
  discover: string[];
  /** Addresses where agents started with `agent --connect` dial in. */
  listen: string[];
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
    const listen = f.list("listen", (v, path) => {
      if (typeof v !== "string") throw new CheckError(path, "expected an address");
      checkAddress(v, path);
      return v;
    });
    const socket = f.string("socket", defaultSocketPath());
    const http = checkHttp(f.raw("http"), "http");
    return { agents, discover, listen, socket, http };
  });
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

/**
 * NATS addresses: `nats://[USER:PASS@|TOKEN@]HOST[:PORT][,HOST[:PORT]…]/AGENT-ID[?creds=FILE]`.
 * The servers are one NATS server or several of one cluster (the client tries them in turn); the
 * agent id names the agent on it. Without the id it names just the servers (`guestlink ls
 * --nats`, `serve --discover`, a plan's `agents: { nats }`). Credentials may sit in the URL, as
 * NATS URLs carry them, or come from a creds file (`?creds=FILE`, or `--nats-creds FILE`).
 * Descriptions for logs and errors leave every credential out (`natsDescription`).
 */

/** Where a NATS server (or cluster) is, and how to log in to it. */
export interface NatsServers {
  /** `HOST:PORT` of each server, IPv6 hosts in brackets; the port defaults to 4222. */
  readonly servers: readonly string[];
  readonly user?: string;
  readonly pass?: string;
  readonly token?: string;
  /** A NATS credentials file (a user JWT and its NKey seed). */
  readonly creds?: string;
}

/** An agent reached through NATS: the servers and the agent's id. */
export interface NatsAddress extends NatsServers {
  readonly kind: "nats";
  readonly agent: string;
}

export const NATS_DEFAULT_PORT = 4222;
/** What an agent id may hold: one NATS subject token, so no dots, wildcards or blanks. */
export const NATS_AGENT_ID = /^[A-Za-z0-9_-]{1,128}$/;
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?)$/;

/** Parses what follows `nats:` in an address; `invalid(problem)` makes the error thrown. */
export function parseNatsAddress(rest: string, invalid: (problem: string) => Error): NatsAddress {
  const { servers, path } = parseServers(rest, invalid);
  if (path === "") {
    throw invalid(
      `a nats address needs the agent's id after the servers: nats://HOST:PORT/AGENT-ID`,
    );
  }
  if (!NATS_AGENT_ID.test(path)) {
    throw invalid(
      `agent id ${JSON.stringify(path)} is not usable on NATS: use 1 to 128 letters, digits, "-" and "_" (no dots, wildcards or slashes)`,
    );
  }
  return { kind: "nats", ...servers, agent: path };
}

/**
 * Parses a discovery query, `nats://SERVERS[/PATTERN]`: the servers, and the agent ids wanted
 * (`*` matches any run of characters; none: every agent). Throws `invalid(problem)`.
 */
export function parseNatsServers(
  input: string,
  invalid: (problem: string) => Error,
): NatsServers & { match?: string } {
  if (!input.startsWith("nats:")) {
    throw invalid(`NATS servers are written nats://HOST:PORT (or nats://HOST:PORT/ID-PATTERN)`);
  }
  const { servers, path } = parseServers(input.slice("nats:".length), invalid);
  if (path === "") return servers;
  if (!/^[A-Za-z0-9_*-]{1,128}$/.test(path)) {
    throw invalid(
      `${JSON.stringify(path)} is not an agent-id pattern: letters, digits, "-", "_" and "*"`,
    );
  }
  return { ...servers, match: path };
}

function parseServers(
  rest: string,
  invalid: (problem: string) => Error,
): { servers: NatsServers; path: string } {
  if (!rest.startsWith("//")) {
    throw invalid(`nats addresses are URLs: nats://HOST:PORT/AGENT-ID`);
  }
  let body = rest.slice(2);
  let creds: string | undefined;
  const query = body.indexOf("?");
  if (query >= 0) {
    const params = new URLSearchParams(body.slice(query + 1));
    for (const name of params.keys()) {
      if (name !== "creds") {
        throw invalid(`unknown parameter ${JSON.stringify(name)} (the one accepted is creds=FILE)`);
      }
    }
    creds = params.get("creds") ?? undefined;
    if (creds === "") throw invalid(`creds= needs the path of a NATS credentials file`);
    body = body.slice(0, query);
  }
  const slash = body.indexOf("/");
  const authority = slash < 0 ? body : body.slice(0, slash);
  const path = slash < 0 ? "" : body.slice(slash + 1);
  const at = authority.lastIndexOf("@");
  const userinfo = at < 0 ? undefined : authority.slice(0, at);
  const hostList = at < 0 ? authority : authority.slice(at + 1);
  let auth: { user?: string; pass?: string; token?: string } = {};
  if (userinfo !== undefined) {
    if (userinfo === "") throw invalid(`nothing before "@": write USER:PASS@ or TOKEN@, or no "@"`);
    const colon = userinfo.indexOf(":");
    const decode = (s: string) => {
      try {
        return decodeURIComponent(s);
      } catch {
        throw invalid(`the credentials hold a malformed %-escape`);
      }
    };
    auth =
      colon < 0
        ? { token: decode(userinfo) }
        : { user: decode(userinfo.slice(0, colon)), pass: decode(userinfo.slice(colon + 1)) };
  }
  if (hostList === "") throw invalid(`a nats address needs a server: nats://HOST:PORT/AGENT-ID`);
  const servers = hostList.split(",").map((server) => {
    let host = server;
    let port = String(NATS_DEFAULT_PORT);
    if (server.startsWith("[")) {
      const close = server.indexOf("]");
      host = close < 0 ? server : server.slice(0, close + 1);
      const after = close < 0 ? "" : server.slice(close + 1);
      if (after !== "") {
        if (!after.startsWith(":")) throw invalid(`expected ":PORT" after ${host}`);
        port = after.slice(1);
      }
    } else if (server.includes(":")) {
      const colon = server.lastIndexOf(":");
      host = server.slice(0, colon);
      port = server.slice(colon + 1);
    }
    if (!HOST.test(host)) {
      throw invalid(`${JSON.stringify(host)} is not a host name or IP address`);
    }
    if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
      throw invalid(`NATS port ${JSON.stringify(port)} must be a number from 1 to 65535`);
    }
    return `${host}:${Number(port)}`;
  });
  return {
    servers: { servers, ...auth, ...(creds === undefined ? {} : { creds }) },
    path,
  };
}

/** The address in the syntax it was parsed from, credentials included. */
export function unparseNats(address: NatsAddress): string {
  const enc = encodeURIComponent;
  const auth =
    address.token !== undefined
      ? `${enc(address.token)}@`
      : address.user !== undefined
        ? `${enc(address.user)}:${enc(address.pass ?? "")}@`
        : "";
  const query = address.creds === undefined ? "" : `?creds=${enc(address.creds)}`;
  return `nats://${auth}${address.servers.join(",")}/${address.agent}${query}`;
}

/** The servers (and agent) for logs and errors: never a password, token or file path. */
export function natsDescription(servers: NatsServers, agent?: string): string {
  return `nats://${servers.servers.join(",")}${agent === undefined ? "" : `/${agent}`}`;
}

/**
 * Connecting to NATS servers: the client library, loaded on first use, and what a failed connect
 * means, said plainly (an unreachable server, or credentials refused).
 */
import { readFile } from "node:fs/promises";
import type { ConnectionOptions, NatsConnection } from "@nats-io/transport-node";
import { AuthFailedError, ConnectFailedError, TransportUnsupportedError } from "../errors.ts";
import { type NatsServers, natsDescription } from "./nats-address.ts";

/** How long connecting to a NATS server may take, and a dial waits for the agent's answer. */
export const NATS_OPEN_TIMEOUT_MS = 5_000;

type NatsModule = typeof import("@nats-io/transport-node");

let loading: Promise<NatsModule> | undefined;

/** The NATS client library, loaded on first use. */
export function loadNats(): Promise<NatsModule> {
  // A CommonJS package: Node (and a bundle of it) may show only `default` with everything on it.
  loading ??= import("@nats-io/transport-node").then(
    (m) =>
      typeof (m as Partial<NatsModule>).connect === "function"
        ? m
        : ((m as unknown as { default: NatsModule }).default ?? m),
    (err: unknown) => {
      loading = undefined;
      // The single-file agent looks for the client beside it (scripts/build-agent.ts).
      throw new TransportUnsupportedError(
        `nats: addresses need the NATS client, which cannot be loaded here (${err instanceof Error ? err.message.split("\n")[0] : String(err)}): install guestlink with its dependencies, or put guestlink-agent-nats.cjs next to the bundled agent`,
        { cause: err, details: { kind: "nats", dialAgain: false } },
      );
    },
  );
  return loading;
}

/** NATS connection options for `servers`: who we are and how we log in. */
async function natsOptions(
  nats: NatsModule,
  servers: NatsServers,
  creds: string | undefined,
  name: string,
): Promise<ConnectionOptions> {
  const options: ConnectionOptions = {
    servers: [...servers.servers],
    name,
    // A dial or listen that cannot reach any server says so; the caller decides to retry.
    waitOnFirstConnect: false,
    timeout: NATS_OPEN_TIMEOUT_MS,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
  };
  if (servers.token !== undefined) options.token = servers.token;
  if (servers.user !== undefined) {
    options.user = servers.user;
    options.pass = servers.pass ?? "";
  }
  const file = servers.creds ?? creds;
  if (file !== undefined) {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(file);
    } catch (err) {
      throw new ConnectFailedError(
        `cannot read the NATS credentials file ${file} (${(err as NodeJS.ErrnoException).code ?? "error"}): check the path (--nats-creds or ?creds=)`,
        { cause: err, details: { file, dialAgain: false } },
      );
    }
    options.authenticator = nats.credsAuthenticator(bytes);
  }
  return options;
}

/** Connects to NATS, with what failed said plainly: an unreachable server, or credentials refused. */
export async function connectNatsServer(
  servers: NatsServers,
  creds: string | undefined,
  name: string,
  extra: Partial<ConnectionOptions> = {},
): Promise<NatsConnection> {
  const nats = await loadNats();
  const description = natsDescription(servers);
  const options = { ...(await natsOptions(nats, servers, creds, name)), ...extra };
  try {
    return await nats.connect(options);
  } catch (err) {
    throw explainNatsConnect(err, description);
  }
}

/** What a failed NATS connect means, for people. */
function explainNatsConnect(err: unknown, description: string): Error {
  const message = err instanceof Error ? err.message : String(err);
  const text = `${message} ${err instanceof Error && err.cause instanceof Error ? err.cause.message : ""}`;
  if (/authori[sz]ation|authentication|permissions? violation|user.*expired/i.test(text)) {
    return new AuthFailedError(
      `the NATS server at ${description} refused our credentials (${message}): check the user and password or token in the address, or the creds file (--nats-creds)`,
      { cause: err, details: { address: description, dialAgain: false } },
    );
  }
  return new ConnectFailedError(
    `cannot reach the NATS server at ${description} (${message}): is nats-server running there, and is the port right?`,
    { cause: err, details: { address: description, reason: "nats-unreachable" } },
  );
}

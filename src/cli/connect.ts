/**
 * Connecting to an agent, for the commands that do so: loaded when such a command runs, not with
 * the program (the session, the transports and pino are most of the CLI's bytes), through
 * `connectAgent` in common.ts.
 */
import { hostname } from "node:os";
import type { Logger } from "pino";
import { InvalidOptionError } from "../errors.ts";
import { dialSession } from "../platform/dial.ts";
import { logSessionEvents } from "../platform/session.ts";
import type { Session } from "../session/session.ts";
import { VERSION } from "../version.ts";
import { agentLogWriter } from "./agent-log.ts";
import {
  type AgentCommandOptions,
  DEFAULT_CONNECT_TIMEOUT_S,
  DEFAULT_RECONNECT_TIMEOUT_S,
  isVerbose,
  terminalIsRaw,
} from "./options.ts";

/** `--verbose`: connection events logged to stderr, by one logger however many sessions open. */
let connectionLog: Logger | undefined;

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
  // What only some connections need is loaded by those: pino, the daemon's client, the key.
  if (isVerbose() && connectionLog === undefined) {
    connectionLog = (await import("./logger.ts")).makeLogger(true);
  }
  const verboseLog = isVerbose() ? connectionLog : undefined;
  // `@ID`: the agent the daemon holds by that id, through the daemon's socket.
  if (address.startsWith("@")) {
    const { openDaemonSession } = await import("../daemon/client.ts");
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
  const key =
    opts.keyFile === undefined
      ? undefined
      : await (await import("../platform/key-file.ts")).readKeyFile(opts.keyFile);
  const timeoutS = opts.connectTimeout;
  const reconnectS = opts.reconnectTimeout ?? DEFAULT_RECONNECT_TIMEOUT_S;
  const tell = process.stderr.isTTY
    ? // In raw mode (exec -t) a line feed alone does not return the cursor.
      (line: string) => process.stderr.write(`guestlink: ${line}${terminalIsRaw() ? "\r\n" : "\n"}`)
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

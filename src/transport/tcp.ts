/**
 * TCP (`tcp:HOST:PORT`). Nagle is off on every socket: the session writes whole frames and wants
 * them on the wire now. `abort()` resets the connection (RST), so the peer learns of it as an
 * error instead of a clean end of stream.
 */
import net from "node:net";
import { AddressInUseError, InvalidAddressError, ListenFailedError } from "../errors.ts";
import { formatAddress } from "./address.ts";
import { raceCallOptions, throwIfDone } from "./call-options.ts";
import { errorLabel, NodeStreamTransport } from "./node-stream.ts";
import { type AuthRefusalHandler, authFailedFrame, looksLikeTls } from "./refusal.ts";
import type { SlabReads } from "./slab-reads.ts";
import { connectSocket, NetListener, startListening } from "./socket.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";

/** Connects to HOST:PORT. Fails with CONNECT_FAILED, or the signal's reason. */
export async function connectTcp(
  host: string,
  port: number,
  options?: CallOptions,
): Promise<Transport> {
  const description = formatAddress({ kind: "tcp", host, port });
  if (port === 0) {
    throw new InvalidAddressError(
      `invalid address ${JSON.stringify(description)}: port 0 means "any port" and only makes sense for listening`,
      { details: { address: description } },
    );
  }
  return connectSocket(
    { host, port, noDelay: true },
    description,
    options,
    (err) => explainConnect(err, host, description),
    (socket, reads) => wrap(socket, description, reads),
  );
}

/**
 * Listens on HOST:PORT (port 0: any free port; `address` then names the real one). A client that
 * opens with TLS (it has a key; this listener has none) is told so at once and refused, and
 * reported to `onRefused`.
 */
export async function listenTcp(
  host: string,
  port: number,
  options?: CallOptions & { onRefused?: AuthRefusalHandler },
): Promise<Listener> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true });
  return await listenTcpServer(
    server,
    host,
    port,
    options,
    (address) =>
      new NetListener(
        server,
        address,
        (socket) => {
          // Older Node versions ignore the server's noDelay option.
          socket.setNoDelay(true);
          const peer = peerDescription(socket, address);
          socket.once("data", (chunk: Buffer) => {
            if (!looksLikeTls(chunk)) return;
            options?.onRefused?.({ peer, reason: "the client has a key and this agent has none" });
            // The TLS client reads this as "not TLS" (AUTH_FAILED on its side).
            socket.end(
              authFailedFrame(
                "this agent has no key: connect without --key-file, or give the agent one",
              ),
            );
            setTimeout(() => socket.destroy(), 1_000).unref();
          });
          return wrap(socket, peer);
        },
        async () => {},
      ),
  );
}

/**
 * Starts `server` (plain or TLS) listening on HOST:PORT under `options`, and makes its Listener
 * once the real address is known; a failure is LISTEN_FAILED or ADDRESS_IN_USE.
 */
export async function listenTcpServer(
  server: net.Server,
  host: string,
  port: number,
  options: CallOptions | undefined,
  makeListener: (address: string) => Listener,
): Promise<Listener> {
  const requested = formatAddress({ kind: "tcp", host, port });
  const onDeadline = () =>
    new ListenFailedError(`listening on ${requested} did not finish before the deadline`, {
      details: { address: requested, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  const attempt = (async () => {
    try {
      await startListening(server, { host, port });
    } catch (err) {
      throw listenFailed(err, host, port, requested);
    }
    const bound = server.address() as net.AddressInfo;
    return makeListener(formatAddress({ kind: "tcp", host: bound.address, port: bound.port }));
  })();
  return await raceCallOptions(attempt, options, {
    onDeadline,
    cancel: () => server.close(),
    discard: (listener) => void listener.close(),
  });
}

function wrap(socket: net.Socket, description: string, reads?: SlabReads): Transport {
  return new NodeStreamTransport(socket, socket, {
    description,
    reads,
    destroy: () => reset(socket),
    redialable: true,
    // QEMU's user-mode hostfwd accepts on the host and drops while the guest boots.
    dropsBeforePeer: true,
  });
}

/** Destroys with a TCP reset, so the peer sees ECONNRESET rather than an orderly end. */
function reset(socket: net.Socket): void {
  try {
    socket.resetAndDestroy();
  } catch {
    // No TCP handle to reset (already closing): a plain destroy is all there is.
    socket.destroy();
  }
}

function peerDescription(socket: net.Socket, fallback: string): string {
  const host = socket.remoteAddress;
  const port = socket.remotePort;
  if (host === undefined || port === undefined) return fallback;
  return formatAddress({ kind: "tcp", host, port });
}

/** What a failed TCP connect means, for people. */
export function explainConnect(err: Error, host: string, description: string): string {
  const code = errorLabel(err);
  switch (code) {
    case "ECONNREFUSED":
      return `no agent listening at ${description} (ECONNREFUSED): is the agent running, and is the port right?`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_FAIL":
      return `cannot resolve host ${JSON.stringify(host)} (${code}): check the name and DNS`;
    case "ETIMEDOUT":
      return `connecting to ${description} timed out (ETIMEDOUT): is the host up, and is a firewall dropping packets?`;
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `cannot reach ${host} (${code}): check the network route to it`;
    case "ECONNRESET":
      return `${description} reset the connection while it was being set up (ECONNRESET): is something other than a guestlink agent on that port?`;
    default:
      return `cannot connect to ${description} (${code}): ${err.message}`;
  }
}

function listenFailed(
  err: unknown,
  host: string,
  port: number,
  description: string,
): AddressInUseError | ListenFailedError {
  const code = errorLabel(err);
  const options = { cause: err, details: { address: description } };
  switch (code) {
    case "EADDRINUSE":
      return new AddressInUseError(
        `port ${port} on ${host} is already in use (EADDRINUSE): stop the other process, or choose another port`,
        options,
      );
    case "EACCES":
    case "EPERM":
      return new ListenFailedError(
        `permission denied listening on ${description} (${code}): ports below 1024 need privileges`,
        options,
      );
    case "EADDRNOTAVAIL":
      return new ListenFailedError(
        `${host} is not an address of this machine (EADDRNOTAVAIL): listen on one of its addresses, or 0.0.0.0`,
        options,
      );
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_FAIL":
      return new ListenFailedError(
        `cannot resolve host ${JSON.stringify(host)} (${code}): check the name`,
        options,
      );
    default:
      return new ListenFailedError(
        `cannot listen on ${description} (${code}): ${err instanceof Error ? err.message : String(err)}`,
        options,
      );
  }
}

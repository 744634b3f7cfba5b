/**
 * Keyed TCP: `tcp:HOST:PORT` with a pre-shared key. The byte stream is TLS 1.3 with an external
 * PSK (RFC 8446 §2.2, node:tls `pskCallback`): no certificates, and both ends prove they hold the
 * same 32-byte key before a single guestlink byte flows, so a peer without it can neither read,
 * write nor inject anything. The session above sees an ordinary byte stream; the wire is the same.
 *
 * A keyed listener answers a client that speaks plain guestlink (no key: its first bytes are a
 * HELLO frame, not a TLS ClientHello) with an ERROR frame on stream 0, code AUTH_FAILED, so the
 * client learns at once what is wrong instead of waiting for a handshake that never comes.
 */
import { createHash } from "node:crypto";
import type net from "node:net";
import tls from "node:tls";
import { AuthFailedError, ConnectFailedError, InvalidOptionError } from "../errors.ts";
import { formatAddress } from "./address.ts";
import { raceCallOptions, throwIfDone } from "./call-options.ts";
import { errorLabel, NodeStreamTransport } from "./node-stream.ts";
import { type AuthRefusalHandler, authFailedFrame } from "./refusal.ts";
import { NetListener } from "./socket.ts";
import { explainConnect, listenTcpServer } from "./tcp.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";

/** Connections a keyed listener lets sit in the TLS handshake at once, by default. */
const DEFAULT_MAX_TLS_HANDSHAKING = 64;
/** How long a client has to finish the TLS handshake, by default (as long as the session's HELLO). */
const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** The length of a key, in bytes (256 bits). */
export const KEY_BYTES = 32;
/** The PSK identity both ends name: there is one key per agent, so it only labels the scheme. */
const PSK_IDENTITY = "guestlink-psk-v1";
/** TLS 1.3 only; a PSK needs a SHA-256 suite. */
const TLS_SETTINGS = {
  minVersion: "TLSv1.3",
  maxVersion: "TLSv1.3",
  ciphers: "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256",
} as const;

export type { AuthRefusalHandler } from "./refusal.ts";

/**
 * A key's id for logs: 16 hex digits of SHA-256 over a fixed label and the key. It names the key
 * without revealing it (`guestlink keygen` prints it; an agent logs it with each operation).
 */
export function keyId(key: Uint8Array): string {
  return createHash("sha256").update("guestlink key id\0").update(key).digest("hex").slice(0, 16);
}

function checkKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) {
    throw new InvalidOptionError(
      `a key is ${KEY_BYTES} bytes (guestlink keygen FILE makes one), got ${key instanceof Uint8Array ? key.length : typeof key}`,
    );
  }
}

/** Connects to HOST:PORT over TLS with `key`. Fails with AUTH_FAILED, CONNECT_FAILED or the signal's reason. */
export async function connectTls(
  host: string,
  port: number,
  key: Uint8Array,
  options?: CallOptions,
): Promise<Transport> {
  checkKey(key);
  const description = formatAddress({ kind: "tcp", host, port });
  const onDeadline = () =>
    new ConnectFailedError(`connecting to ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  const psk = Buffer.from(key);
  const connectOptions: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
    host,
    port,
    ...TLS_SETTINGS,
    allowHalfOpen: true,
    // The key authenticates both ends; there is no certificate or name to check.
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ psk, identity: PSK_IDENTITY }),
  };
  const socket = tls.connect(connectOptions);
  /** Whether TCP connected: an error after it happened in the TLS handshake. */
  let tcpUp = false;
  socket.once("connect", () => {
    tcpUp = true;
  });
  const secured = new Promise<tls.TLSSocket>((resolve, reject) => {
    const onError = (err: Error) => {
      socket.off("secureConnect", onSecure);
      reject(handshakeError(err, host, description, tcpUp));
    };
    const onSecure = () => {
      socket.off("error", onError);
      resolve(socket);
    };
    socket.once("error", onError);
    socket.once("secureConnect", onSecure);
  });
  await raceCallOptions(secured, options, {
    onDeadline,
    cancel: () => socket.destroy(),
    discard: (s) => s.destroy(),
  });
  socket.setNoDelay(true);
  return wrap(socket, description, keyId(key));
}

/**
 * Listens on HOST:PORT for TLS with `key`. A connection that fails the handshake is closed and
 * reported to `onRefused`; it never reaches the consumer.
 */
export async function listenTls(
  host: string,
  port: number,
  key: Uint8Array,
  options?: CallOptions & {
    onRefused?: AuthRefusalHandler;
    handshakeTimeoutMs?: number;
    maxHandshaking?: number;
  },
): Promise<Listener> {
  checkKey(key);
  const psk = Buffer.from(key);
  const id = keyId(key);
  const server = tls.createServer({
    ...TLS_SETTINGS,
    allowHalfOpen: true,
    noDelay: true,
    // Node's default is 120 s: a client that connects and says nothing holds a socket that long.
    handshakeTimeout: options?.handshakeTimeoutMs ?? DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
    pskCallback: (_socket, identity) => (identity === PSK_IDENTITY ? psk : null),
  });
  server.on("tlsClientError", (err, socket) => refuse(err, socket, options?.onRefused));
  // Connections still in the TLS handshake, oldest first: past the bound the oldest goes, so
  // clients that connect and stall cannot hold more, and one that completes at once gets in.
  const maxHandshaking = options?.maxHandshaking ?? DEFAULT_MAX_TLS_HANDSHAKING;
  const handshaking = new Set<net.Socket>();
  server.on("connection", (raw: net.Socket) => {
    handshaking.add(raw);
    raw.once("close", () => handshaking.delete(raw));
    while (handshaking.size > maxHandshaking) {
      const oldest = handshaking.values().next().value as net.Socket;
      handshaking.delete(oldest);
      oldest.destroy();
    }
  });
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    const raw = rawSocket(socket);
    if (raw !== undefined) handshaking.delete(raw);
  });
  return await listenTcpServer(server, host, port, options, (address) => {
    return new NetListener(
      server,
      address,
      (socket) => {
        socket.setNoDelay(true);
        return wrap(socket as tls.TLSSocket, peerOf(socket, address), id);
      },
      async () => {},
      "secureConnection",
    );
  });
}

function wrap(socket: tls.TLSSocket, description: string, id: string): Transport {
  return new NodeStreamTransport(socket, socket, {
    description,
    keyId: id,
    destroy: () => reset(socket),
    redialable: true,
    // QEMU's user-mode hostfwd accepts on the host and drops while the guest boots.
    dropsBeforePeer: true,
  });
}

/** The TCP socket under a TLS socket (node:tls keeps it as `_parent`), if there is one. */
function rawSocket(socket: tls.TLSSocket): net.Socket | undefined {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  return parent !== null && typeof parent === "object" && "resetAndDestroy" in parent
    ? (parent as net.Socket)
    : undefined;
}

/** Destroys with a TCP reset where it can, so the peer sees ECONNRESET rather than an orderly end. */
function reset(socket: tls.TLSSocket): void {
  const raw = rawSocket(socket);
  try {
    if (raw === undefined) throw new Error("no TCP socket");
    raw.resetAndDestroy();
    socket.destroy();
  } catch {
    socket.destroy();
  }
}

function peerOf(socket: net.Socket, fallback: string): string {
  const host = socket.remoteAddress;
  const port = socket.remotePort;
  if (host === undefined || port === undefined) return fallback;
  return formatAddress({ kind: "tcp", host, port });
}

/** A guestlink frame starts with 0xAB; a TLS record with 0x14..0x17. */
const PLAIN_GUESTLINK = /WRONG_VERSION_NUMBER|HTTP_REQUEST|PACKET_LENGTH_TOO_LONG|UNKNOWN_PROTOCOL/;

/** Ends a connection that failed the TLS handshake, telling a plain guestlink client why. */
function refuse(err: Error, socket: tls.TLSSocket, onRefused: AuthRefusalHandler | undefined) {
  const code = errorLabel(err);
  const peer = peerOf(rawSocket(socket) ?? socket, "tcp:?");
  const plain = PLAIN_GUESTLINK.test(code);
  onRefused?.({ peer, reason: refusalReason(code, plain) });
  const raw = rawSocket(socket);
  if (plain && raw !== undefined && !raw.destroyed) {
    // The client is a session waiting for our HELLO: an ERROR on stream 0 ends its handshake
    // with this reason (protocol.md 9.1).
    raw.end(
      authFailedFrame(
        "this agent requires a key: connect with --key-file FILE (the key the agent was started with)",
      ),
    );
    setTimeout(() => raw.destroy(), 1_000).unref();
    return;
  }
  socket.destroy();
  raw?.destroy();
}

/** Why a connection failed the handshake, for the agent's log. */
function refusalReason(code: string, plain: boolean): string {
  if (plain) return "the client has no key (it spoke plain guestlink)";
  if (/ECONNRESET|EPIPE|ETIMEDOUT/.test(code)) {
    return `the client went away during the TLS handshake (${code})`;
  }
  if (code === "ERR_TLS_HANDSHAKE_TIMEOUT") return "the client did not finish the TLS handshake";
  return `the TLS handshake failed (${code}): most likely the client's key is not this agent's`;
}

/** What a failed TLS connect means, as AUTH_FAILED or CONNECT_FAILED. */
function handshakeError(
  err: Error,
  host: string,
  description: string,
  tcpUp: boolean,
): AuthFailedError | ConnectFailedError {
  const code = errorLabel(err);
  const details = { address: description, errno: code };
  if (!tcpUp) {
    return new ConnectFailedError(explainConnect(err, host, description), { cause: err, details });
  }
  if (/ALERT_ILLEGAL_PARAMETER|ALERT_DECRYPT_ERROR|ALERT_HANDSHAKE_FAILURE|BINDER/.test(code)) {
    return new AuthFailedError(
      `the agent at ${description} refused our key (${code}): use the key file the agent was started with (--key-file)`,
      { cause: err, details },
    );
  }
  if (PLAIN_GUESTLINK.test(code)) {
    return new AuthFailedError(
      `the agent at ${description} does not use a key (it answered without TLS): drop --key-file, or restart the agent with --key-file`,
      { cause: err, details },
    );
  }
  // A forwarded port (QEMU hostfwd) drops connections until the guest listens: worth redialling.
  return new ConnectFailedError(
    `${description} closed the connection during the TLS handshake (${code}): is the agent up, and was it started with --key-file?`,
    { cause: err, details: { ...details, dialAgain: true } },
  );
}

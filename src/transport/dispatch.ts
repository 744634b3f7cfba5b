/**
 * `connect` and `listen` for any address (a string or a parsed `Address`), dispatching on its
 * kind. Each transport is loaded when an address of its kind is first used, so that a program
 * reaching one agent over a Unix socket does not load the mailbox, NATS, serial or vsock code
 * (the CLI starts sooner for it).
 */
import { InvalidAddressError } from "../errors.ts";
import { loadOnce } from "../platform/require.ts";
import { type Address, toAddress } from "./address.ts";
import type { NatsListenOptions } from "./nats.ts";
import type { AuthRefusalHandler } from "./refusal.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";

/** What `connect` takes: the call's signal and deadline, and options of one transport. */
export interface ConnectOptions extends CallOptions {
  /** For `exec:` addresses: where the child's stderr goes (see `ExecOptions.stderr`). */
  execStderr?: NodeJS.WritableStream;
  /**
   * For `tcp:` addresses: the agent's 32-byte key. The connection is then TLS 1.3 with this
   * pre-shared key (see tls.ts), and fails with AUTH_FAILED if the agent's key differs.
   */
  key?: Uint8Array;
  /** For `nats:` addresses that name no creds file: a NATS credentials file (`--nats-creds`). */
  natsCreds?: string;
}

/** What `listen` takes: the call's signal and deadline, and for `tcp:` a key. */
export interface ListenOptions extends CallOptions {
  /** For `tcp:` addresses: accept only TLS 1.3 connections with this 32-byte pre-shared key. */
  key?: Uint8Array;
  /** For `tcp:`: told of every connection refused because its key was wrong or missing. */
  onRefused?: AuthRefusalHandler;
  /** For `nats:` addresses that name no creds file: a NATS credentials file (`--nats-creds`). */
  natsCreds?: string;
  /** For `nats:`: what the agent tells discovery of itself (`$SRV.INFO` metadata). */
  natsMetadata?: NatsListenOptions["metadata"];
  /**
   * For keyed `tcp:`: how long a client has to finish the TLS handshake (the session's own
   * handshake timeout then bounds its HELLO). Default `HANDSHAKE_TIMEOUT_MS`.
   */
  handshakeTimeoutMs?: number;
  /**
   * For keyed `tcp:`: connections in the TLS handshake at once; one more drops the oldest.
   * Default 64.
   */
  maxHandshaking?: number;
}

/**
 * Each transport's module, imported once: a redial after a lost connection then waits a
 * microtask for it, not a pass through the module loader (measured: 0.8 ms of the 2 ms from a
 * loss to the new connect over a Unix socket).
 */
const transports = {
  unix: loadOnce(() => import("./unix.ts")),
  tcp: loadOnce(() => import("./tcp.ts")),
  tls: loadOnce(() => import("./tls.ts")),
  stdio: loadOnce(() => import("./stdio.ts")),
  exec: loadOnce(() => import("./exec.ts")),
  vsock: loadOnce(() => import("./vsock.ts")),
  fc: loadOnce(() => import("./fc.ts")),
  mailbox: loadOnce(() => import("./mailbox.ts")),
  serial: loadOnce(() => import("./serial.ts")),
  nats: loadOnce(() => import("./nats.ts")),
};

function keyOnlyForTcp(a: Address, key: Uint8Array | undefined): void {
  if (key !== undefined && a.kind !== "tcp") {
    throw new InvalidAddressError(
      `a key applies to tcp: addresses only, not ${a.kind}: (it is reached without one)`,
      { details: { address: a.kind } },
    );
  }
}

/** Connects to an address. Fails with INVALID_ADDRESS, TRANSPORT_UNSUPPORTED or CONNECT_FAILED. */
export async function connect(
  address: string | Address,
  options?: ConnectOptions,
): Promise<Transport> {
  const a = toAddress(address);
  keyOnlyForTcp(a, options?.key);
  switch (a.kind) {
    case "unix":
      return (await transports.unix()).connectUnix(a.path, options);
    case "tcp":
      return options?.key === undefined
        ? (await transports.tcp()).connectTcp(a.host, a.port, options)
        : (await transports.tls()).connectTls(a.host, a.port, options.key, options);
    case "stdio":
      return (await transports.stdio()).connectStdio(options);
    case "exec":
      return (await transports.exec()).connectExec(a.argv, {
        signal: options?.signal,
        deadline: options?.deadline,
        stderr: options?.execStderr,
      });
    case "vsock":
      return (await transports.vsock()).connectVsock(a.cid, a.port, options);
    case "fc":
      return (await transports.fc()).connectFc(a.path, a.port, options);
    case "mailbox":
      return (await transports.mailbox()).connectMailbox(a.folder, options);
    case "nats":
      return (await transports.nats()).connectNats(a, {
        signal: options?.signal,
        deadline: options?.deadline,
        creds: options?.natsCreds,
      });
    case "serial":
      throw new InvalidAddressError(
        `cannot connect to serial:${a.path}: the agent in the guest listens on its port (guestlink agent --listen serial:${a.path}); the host reaches the port through the hypervisor's socket for it, e.g. unix:PATH for QEMU's chardev`,
        { details: { address: `serial:${a.path}` } },
      );
  }
}

/** Listens on an address (unix or tcp). Fails with INVALID_ADDRESS, ADDRESS_IN_USE or LISTEN_FAILED. */
export async function listen(
  address: string | Address,
  options?: ListenOptions,
): Promise<Listener> {
  const a = toAddress(address);
  keyOnlyForTcp(a, options?.key);
  switch (a.kind) {
    case "unix":
      return (await transports.unix()).listenUnix(a.path, options);
    case "tcp":
      return options?.key === undefined
        ? (await transports.tcp()).listenTcp(a.host, a.port, options)
        : (await transports.tls()).listenTls(a.host, a.port, options.key, options);
    case "stdio":
      throw new InvalidAddressError(
        "cannot listen on stdio: stdio is this process's one connection, so connect to it instead (guestlink agent --stdio)",
        { details: { address: "stdio" } },
      );
    case "exec":
      throw new InvalidAddressError(
        "cannot listen on exec:COMMAND: it starts a process to talk to, so connect to it instead",
        { details: { address: "exec" } },
      );
    case "vsock":
      return (await transports.vsock()).listenVsock(a.cid, a.port, options);
    case "fc":
      return (await transports.fc()).listenFc(a.path, a.port, options);
    case "mailbox":
      return (await transports.mailbox()).listenMailbox(a.folder, options);
    case "serial":
      return (await transports.serial()).listenSerial(a.path, options);
    case "nats":
      return (await transports.nats()).listenNats(a, {
        signal: options?.signal,
        deadline: options?.deadline,
        creds: options?.natsCreds,
        metadata: options?.natsMetadata,
      });
  }
}

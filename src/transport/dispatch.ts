/**
 * `connect` and `listen` for any address (a string or a parsed `Address`), dispatching on its
 * kind. Each transport is loaded when an address of its kind is first used, so that a program
 * reaching one agent over a Unix socket does not load the mailbox, NATS, serial or vsock code
 * (the CLI starts sooner for it).
 */
import { InvalidAddressError } from "../errors.ts";
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

const loaded = new Map<string, Promise<unknown>>();

/**
 * A transport's module, imported once: a redial after a lost connection then waits a microtask
 * for it, not a pass through the module loader (measured: 0.8 ms of the 2 ms from a loss to the
 * new connect over a Unix socket).
 */
function load<T>(name: string, importer: () => Promise<T>): Promise<T> {
  let module = loaded.get(name) as Promise<T> | undefined;
  if (module === undefined) {
    module = importer();
    loaded.set(name, module);
  }
  return module;
}

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
      return (await load("./unix.ts", () => import("./unix.ts"))).connectUnix(a.path, options);
    case "tcp":
      return options?.key === undefined
        ? (await load("./tcp.ts", () => import("./tcp.ts"))).connectTcp(a.host, a.port, options)
        : (await load("./tls.ts", () => import("./tls.ts"))).connectTls(
            a.host,
            a.port,
            options.key,
            options,
          );
    case "stdio":
      return (await load("./stdio.ts", () => import("./stdio.ts"))).connectStdio(options);
    case "exec":
      return (await load("./exec.ts", () => import("./exec.ts"))).connectExec(a.argv, {
        signal: options?.signal,
        deadline: options?.deadline,
        stderr: options?.execStderr,
      });
    case "vsock":
      return (await load("./vsock.ts", () => import("./vsock.ts"))).connectVsock(
        a.cid,
        a.port,
        options,
      );
    case "fc":
      return (await load("./fc.ts", () => import("./fc.ts"))).connectFc(a.path, a.port, options);
    case "mailbox":
      return (await load("./mailbox.ts", () => import("./mailbox.ts"))).connectMailbox(
        a.folder,
        options,
      );
    case "nats":
      return (await load("./nats.ts", () => import("./nats.ts"))).connectNats(a, {
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
      return (await load("./unix.ts", () => import("./unix.ts"))).listenUnix(a.path, options);
    case "tcp":
      return options?.key === undefined
        ? (await load("./tcp.ts", () => import("./tcp.ts"))).listenTcp(a.host, a.port, options)
        : (await load("./tls.ts", () => import("./tls.ts"))).listenTls(
            a.host,
            a.port,
            options.key,
            options,
          );
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
      return (await load("./vsock.ts", () => import("./vsock.ts"))).listenVsock(
        a.cid,
        a.port,
        options,
      );
    case "fc":
      return (await load("./fc.ts", () => import("./fc.ts"))).listenFc(a.path, a.port, options);
    case "mailbox":
      return (await load("./mailbox.ts", () => import("./mailbox.ts"))).listenMailbox(
        a.folder,
        options,
      );
    case "serial":
      return (await load("./serial.ts", () => import("./serial.ts"))).listenSerial(a.path, options);
    case "nats":
      return (await load("./nats.ts", () => import("./nats.ts"))).listenNats(a, {
        signal: options?.signal,
        deadline: options?.deadline,
        creds: options?.natsCreds,
        metadata: options?.natsMetadata,
      });
  }
}

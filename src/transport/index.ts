/**
 * The transport layer's entry points: `connect` and `listen` take any address (a string or a
 * parsed `Address`) and dispatch on its kind.
 */
import { InvalidAddressError } from "../errors.ts";
import { type Address, toAddress } from "./address.ts";
import { connectExec } from "./exec.ts";
import { connectFc, listenFc } from "./fc.ts";
import { connectMailbox, listenMailbox } from "./mailbox.ts";
import { connectNats, listenNats, type NatsListenOptions } from "./nats.ts";
import type { AuthRefusalHandler } from "./refusal.ts";
import { listenSerial } from "./serial.ts";
import { connectStdio } from "./stdio.ts";
import { connectTcp, listenTcp } from "./tcp.ts";
import { connectTls, listenTls } from "./tls.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";
import { connectUnix, listenUnix } from "./unix.ts";
import { connectVsock, listenVsock } from "./vsock.ts";

export {
  ADDRESS_FORMS,
  type Address,
  AddressKind,
  formatAddress,
  isLoopbackHost,
  parseAddress,
  toAddress,
} from "./address.ts";
export {
  connectExec,
  EXEC_KILL_GRACE_MS,
  EXEC_OUTPUT_GRACE_MS,
  EXEC_TERMINATE_GRACE_MS,
  type ExecOptions,
  ExecTransport,
  type ExitStatus,
} from "./exec.ts";
export { MEMORY_HIGH_WATER_MARK_BYTES, type MemoryPairOptions, memoryPair } from "./memory.ts";
export {
  type NatsAddress,
  type NatsServers,
  natsDescription,
  parseNatsServers,
} from "./nats-address.ts";
export {
  NodeStreamTransport,
  type NodeStreamTransportOptions,
  READ_HIGH_WATER_MARK_BYTES,
} from "./node-stream.ts";
export { connectStdio } from "./stdio.ts";
export { connectTcp, listenTcp } from "./tcp.ts";
export { type AuthRefusalHandler, connectTls, KEY_BYTES, listenTls } from "./tls.ts";
export type { CallOptions, Listener, Transport } from "./transport.ts";
export { connectUnix, listenUnix, MAX_UNIX_PATH_BYTES } from "./unix.ts";

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
      return connectUnix(a.path, options);
    case "tcp":
      return options?.key === undefined
        ? connectTcp(a.host, a.port, options)
        : connectTls(a.host, a.port, options.key, options);
    case "stdio":
      return connectStdio(options);
    case "exec":
      return connectExec(a.argv, {
        signal: options?.signal,
        deadline: options?.deadline,
        stderr: options?.execStderr,
      });
    case "vsock":
      return connectVsock(a.cid, a.port, options);
    case "fc":
      return connectFc(a.path, a.port, options);
    case "mailbox":
      return connectMailbox(a.folder, options);
    case "nats":
      return connectNats(a, {
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
      return listenUnix(a.path, options);
    case "tcp":
      return options?.key === undefined
        ? listenTcp(a.host, a.port, options)
        : listenTls(a.host, a.port, options.key, options);
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
      return listenVsock(a.cid, a.port, options);
    case "fc":
      return listenFc(a.path, a.port, options);
    case "mailbox":
      return listenMailbox(a.folder, options);
    case "serial":
      return listenSerial(a.path, options);
    case "nats":
      return listenNats(a, {
        signal: options?.signal,
        deadline: options?.deadline,
        creds: options?.natsCreds,
        metadata: options?.natsMetadata,
      });
  }
}

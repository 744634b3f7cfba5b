/**
 * The transport layer's entry points: `connect` and `listen` take any address (a string or a
 * parsed `Address`) and dispatch on its kind.
 */
import { InvalidAddressError, TransportUnsupportedError } from "../errors.ts";
import { ADDRESS_FORMS, type Address, toAddress } from "./address.ts";
import { connectExec } from "./exec.ts";
import { connectStdio } from "./stdio.ts";
import { connectTcp, listenTcp } from "./tcp.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";
import { connectUnix, listenUnix } from "./unix.ts";

export {
  ADDRESS_FORMS,
  type Address,
  AddressKind,
  formatAddress,
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
  NodeStreamTransport,
  type NodeStreamTransportOptions,
  READ_HIGH_WATER_MARK_BYTES,
} from "./node-stream.ts";
export { connectStdio } from "./stdio.ts";
export { connectTcp, listenTcp } from "./tcp.ts";
export type { CallOptions, Listener, Transport } from "./transport.ts";
export { connectUnix, listenUnix, MAX_UNIX_PATH_BYTES } from "./unix.ts";

/** Connects to an address. Fails with INVALID_ADDRESS, TRANSPORT_UNSUPPORTED or CONNECT_FAILED. */
export async function connect(
  address: string | Address,
  options?: CallOptions,
): Promise<Transport> {
  const a = toAddress(address);
  switch (a.kind) {
    case "unix":
      return connectUnix(a.path, options);
    case "tcp":
      return connectTcp(a.host, a.port, options);
    case "stdio":
      return connectStdio(options);
    case "exec":
      return connectExec(a.argv, options);
    case "vsock":
    case "fc":
    case "serial":
    case "mailbox":
      throw unsupported(a);
  }
}

/** Listens on an address (unix or tcp). Fails with INVALID_ADDRESS, ADDRESS_IN_USE or LISTEN_FAILED. */
export async function listen(address: string | Address, options?: CallOptions): Promise<Listener> {
  const a = toAddress(address);
  switch (a.kind) {
    case "unix":
      return listenUnix(a.path, options);
    case "tcp":
      return listenTcp(a.host, a.port, options);
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
    case "fc":
    case "serial":
    case "mailbox":
      throw unsupported(a);
  }
}

function unsupported(address: Address): TransportUnsupportedError {
  return new TransportUnsupportedError(
    `the ${address.kind} transport (${ADDRESS_FORMS[address.kind]}) is not available in this version of guestlink`,
    { details: { kind: address.kind } },
  );
}

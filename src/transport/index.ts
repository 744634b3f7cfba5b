/**
 * The transport layer's entry points: `connect` and `listen` take any address (a string or a
 * parsed `Address`) and dispatch on its kind (dispatch.ts).
 */
export {
  ADDRESS_FORMS,
  type Address,
  AddressKind,
  formatAddress,
  isLoopbackHost,
  parseAddress,
  toAddress,
} from "./address.ts";
export { type ConnectOptions, connect, type ListenOptions, listen } from "./dispatch.ts";
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

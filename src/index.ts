/** guestlink's public API: what a program embedding guestlink uses. */
export type { AbortSignalLike, CallOptions } from "./abort.ts";
export { Agent, type AgentOptions } from "./agent/agent.ts";
export type {
  ExecControlMessage,
  ExecRequest,
  ExecResult,
  ForwardableSignal,
} from "./agent/exec.ts";
export {
  type AgentLogger,
  type RunAgentOptions,
  type RunningAgent,
  runAgent,
} from "./agent/run.ts";
export type { Service } from "./agent/service.ts";
export { ExecControl, remoteExec } from "./controller/exec.ts";
export { getFile, putFile } from "./controller/files.ts";
export {
  Helper,
  type HelperEvent,
  type HelperOptions,
  type HelperProtocol,
  type HelperState,
  spawnHelper,
} from "./controller/helpers/helper.ts";
export type { RpcContext, RpcHandler } from "./controller/helpers/jsonrpc.ts";
export { HelperPool, spawnHelpers } from "./controller/helpers/pool.ts";
export {
  type MediatorConfig,
  parseMediatorConfig,
  readMediatorConfig,
} from "./controller/mediator/config.ts";
export {
  Mediator,
  type MediatorOptions,
  type MediatorStatus,
} from "./controller/mediator/mediator.ts";
export { mediatorStatus, type SubmitOptions, submitWork } from "./controller/mediator/submit.ts";
export { type TelemetrySample, watchTelemetry } from "./controller/telemetry.ts";
export * from "./errors.ts";
export { toDuplex } from "./platform/duplex.ts";
export { nodeClock, nodeCrc32, nodeRuntime } from "./platform/node.ts";
export {
  type EventLogger,
  logSessionEvents,
  type NodeSessionOptions,
  type OpenSessionOptions,
  openSession,
  type SessionServer,
  serveSessions,
} from "./platform/session.ts";
export type { ResumeOptions, SessionOptions } from "./session/options.ts";
export { SessionRegistry } from "./session/registry.ts";
export type { Clock, Runtime, Timer } from "./session/runtime.ts";
export {
  type CallContext,
  type Handler,
  type Liveness,
  type OpenCall,
  type OpenOptions,
  type PeerInfo,
  RemoteError,
  Session,
  type SessionConnection,
  type SessionEvent,
  type SessionState,
} from "./session/session.ts";
export type { SessionStream } from "./session/stream.ts";
export {
  Backoff,
  DEFAULT_BACKOFF_BASE_MS,
  DEFAULT_BACKOFF_CEILING_MS,
} from "./supervise/backoff.ts";
export { Supervisor, SupervisorState } from "./supervise/supervisor.ts";
export {
  type Address,
  connect,
  formatAddress,
  type Listener,
  listen,
  memoryPair,
  parseAddress,
  type Transport,
} from "./transport/index.ts";
export { VERSION } from "./version.ts";
export * from "./wire/index.ts";

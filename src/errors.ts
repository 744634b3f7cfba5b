/**
 * The error catalogue. Every failure guestlink reports is a `GuestlinkError` with a stable string
 * `code`; callers match on `code`, never on the message. Each code has one entry in
 * `docs/errors.md` (a test keeps the two in step).
 *
 * This file sits below every layer: it imports nothing and uses no Node API, so the wire and
 * session layers (compiled without Node's types) can use it.
 */

/** Every stable error code, with the one-line summary that `docs/errors.md` expands on. */
export const ERROR_CODES = {
  INVALID_OPTION: "an option passed to guestlink is out of range or of the wrong type",
  INVALID_FRAME: "a frame handed to the encoder cannot be encoded as it is",
  FRAME_TOO_LARGE: "a frame's payload is larger than the maximum frame size",
  BAD_CONTROL_PAYLOAD:
    "a control payload is not valid msgpack or holds types guestlink never sends",
  INVALID_ADDRESS: "an address is not one of the accepted forms, or cannot be used the way it was",
  TRANSPORT_UNSUPPORTED:
    "the address names a transport that cannot work here (not built, not this platform, or missing from the kernel)",
  CONNECT_FAILED: "a connection to an address (or a process to talk to) could not be established",
  ADDRESS_IN_USE: "something else already occupies the address guestlink was asked to listen on",
  LISTEN_FAILED: "guestlink could not listen on an address for a reason other than it being in use",
  AUTH_FAILED:
    "the two ends of a keyed tcp: connection do not share a key, or a NATS server refused the credentials",
  TRANSPORT_FAILED: "a connection broke: the peer aborted, the link failed or the process died",
  TRANSPORT_CLOSED: "the transport is closed or closing, so nothing more can be sent on it",
  PROTOCOL_ERROR: "the peer broke the protocol; the session was ended",
  VERSION_MISMATCH: "the two sides speak no protocol version in common",
  HANDSHAKE_TIMEOUT: "no handshake arrived from the other end in time",
  PEER_UNRESPONSIVE: "the peer stopped answering and is presumed dead",
  FRAMES_LOST: "frames were damaged in transit and dropped, and could not be recovered",
  RESUME_FAILED:
    "a lost connection could not be resumed (the peer restarted, the replay buffer overflowed, or it stayed lost too long); work in flight failed",
  METHOD_NOT_FOUND: "the peer has no handler for the method called",
  CANCELLED: "the call or stream was cancelled",
  DEADLINE_EXCEEDED: "the call did not complete before its deadline",
  HANDLER_FAILED: "the peer's handler failed with an error that has no code of its own",
  REMOTE_ERROR: "the peer reported an error with a code this side does not know",
  SESSION_CLOSED: "the session ended before the operation completed",
  SESSION_CLOSING: "the session is closing and starts or accepts no new calls",
  STREAM_RESET: "a stream was reset by one side, so neither direction carries more bytes",
  STREAM_CLOSED: "a stream was used after it was ended or closed",
  POLICY_DENIED: "the agent's allow-list does not include the service called",
  PATH_OUTSIDE_ROOT:
    "a file operation named a path outside the folder the agent's files are confined to (--files-root)",
  FORBIDDEN_ORIGIN:
    "the daemon's HTTP API refused a request for another host name, or one a web page of another origin sent",
  LIMIT_EXCEEDED:
    "a peer went past a limit the agent, mediator or daemon sets on what one peer may hold (connections, streams, kept replies, agents)",
  FILE_NOT_FOUND: "a file or folder named in the request does not exist",
  PERMISSION_DENIED:
    "the user guestlink runs as (here or in the agent) may not read or write the file named",
  IS_A_DIRECTORY: "a file operation named a folder",
  NOT_A_DIRECTORY: "a path goes through something that is not a folder",
  CHECKSUM_MISMATCH: "the bytes received do not hash to what the sender said it sent",
  FILE_CHANGED: "a file changed size while it was being sent",
  UNSUPPORTED_FILE_TYPE:
    "a transfer named something it cannot read or write: a socket, or a device or FIFO to read from",
  NO_SPACE: "a file could not be written: no space left on the device, or over quota",
  BAD_RESULT: "the peer answered a call with a result of the wrong shape",
  HELPER_EXITED:
    "the helper process is not running, or exited before it answered: it is being started again, or was stopped",
  HELPER_FAILED: "the helper process kept exiting and is not started again until restarted by hand",
  HELPER_QUEUE_FULL:
    "the helper process is not reading its stdin and the queue of lines for it is full",
  PLAN_INVALID:
    "a fleet run's plan cannot be run as written: not YAML, an unknown key or a wrong value",
  POOL_NOT_FOUND: "the mediator has no pool of the name submitted to",
  QUEUE_FULL: "the mediator's queue for that pool (or for this guest in it) is full",
  QUEUE_TIMEOUT: "the request waited in the mediator's queue for max_wait and was not started",
  WORKER_FAILED: "the mediator's worker for the pool failed to run the request",
  CONFIG_INVALID: "a service's configuration file cannot be used as written",
  AGENT_NOT_FOUND: "the daemon holds no agent with that id",
  AGENT_UNAVAILABLE: "the daemon holds that agent but has no connection to it now",
  DAEMON_UNREACHABLE: "no guestlink daemon answers on its socket (is `guestlink serve` running?)",
  NOT_FOUND: "the daemon's API has no such path",
  TTY_UNSUPPORTED:
    "the agent cannot give the command a terminal (exec -t): its spawn addon is not built or not loaded",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface GuestlinkErrorOptions {
  cause?: unknown;
  /** Machine-readable facts about the failure (sizes, limits, names); shown with `--verbose`. */
  details?: Record<string, unknown>;
}

/** The base of every error guestlink throws or rejects with. */
export class GuestlinkError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: GuestlinkErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details;
  }
}

/** An option is out of range or of the wrong type. The message names the option and its range. */
export class InvalidOptionError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("INVALID_OPTION", message, options);
  }
}

/** A fleet run's plan cannot be run as written. The message names the file and the key's path. */
export class PlanInvalidError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("PLAN_INVALID", message, options);
  }
}

/** A service's configuration file cannot be used as written. The message names the file and key. */
export class ConfigInvalidError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("CONFIG_INVALID", message, options);
  }
}

/** A frame handed to the encoder has a field outside what the wire can carry. */
export class InvalidFrameError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("INVALID_FRAME", message, options);
  }
}

/** A payload exceeds the maximum frame size; split it (streams do) or raise the limit. */
export class FrameTooLargeError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("FRAME_TOO_LARGE", message, options);
  }
}

/** A control payload could not be decoded, or decoded to something guestlink never sends. */
export class BadControlPayloadError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("BAD_CONTROL_PAYLOAD", message, options);
  }
}

/** True when `err` is a guestlink error, optionally with the given code. */
export function isGuestlinkError(err: unknown, code?: ErrorCode): err is GuestlinkError {
  return err instanceof GuestlinkError && (code === undefined || err.code === code);
}

/** An address string is malformed, or names a transport that cannot be used that way. */
export class InvalidAddressError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("INVALID_ADDRESS", message, options);
  }
}

/** The address is well formed but its transport is not available in this version. */
export class TransportUnsupportedError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("TRANSPORT_UNSUPPORTED", message, options);
  }
}

/** Connecting (or spawning the process to talk to) failed; `cause` holds the system error. */
export class ConnectFailedError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("CONNECT_FAILED", message, options);
  }
}

/** Something is already listening on (or occupying) the address to listen on. */
export class AddressInUseError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("ADDRESS_IN_USE", message, options);
  }
}

/** Listening failed for another reason (permissions, a missing folder, no such local address). */
export class ListenFailedError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("LISTEN_FAILED", message, options);
  }
}

/** The peers of a keyed connection do not share a key; `details.address` names the peer. */
export class AuthFailedError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("AUTH_FAILED", message, options);
  }
}

/** The connection broke; `cause` holds the peer's reason or the system error. */
export class TransportFailedError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("TRANSPORT_FAILED", message, options);
  }
}

/** The transport was closed or aborted (here, or because it failed) before the operation. */
export class TransportClosedError extends GuestlinkError {
  constructor(message: string, options?: GuestlinkErrorOptions) {
    super("TRANSPORT_CLOSED", message, options);
  }
}

/** Any thrown value as a GuestlinkError: one of ours as it is, an abort or anything else CANCELLED. */
export function toGuestlinkError(err: unknown): GuestlinkError {
  if (isGuestlinkError(err)) return err;
  if (err instanceof Error && err.name === "AbortError") {
    return new GuestlinkError("CANCELLED", err.message || "aborted", { cause: err });
  }
  return new GuestlinkError(
    "CANCELLED",
    err instanceof Error ? err.message : String(err ?? "aborted"),
    { cause: err },
  );
}

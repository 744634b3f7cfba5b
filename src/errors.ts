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

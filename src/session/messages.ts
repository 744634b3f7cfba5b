/**
 * The control payloads of the session protocol (docs/protocol.md, "Session layer"), validated
 * with valibot: a peer is untrusted input, so every field is checked before it is used.
 */
import * as v from "valibot";

/** Protocol versions this implementation speaks: [lowest, highest]. */
export const PROTOCOL_VERSIONS = [4, 4] as const;

const u32 = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0xffffffff));
const positiveInt = (max: number) =>
  v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(max));
const shortText = (max: number) => v.pipe(v.string(), v.maxLength(max));
/** A sequence number: what the wire's u64 carries, at most 2^53-1. */
const seqNumber = v.pipe(
  v.number(),
  v.integer(),
  v.minValue(0),
  v.maxValue(Number.MAX_SAFE_INTEGER),
);

export const HelloSchema = v.object({
  /** Lowest and highest protocol version the sender speaks. */
  protocol: v.tuple([u32, u32]),
  /** Who the sender is. */
  peer: v.object({
    id: shortText(256),
    hostname: shortText(256),
    version: shortText(64),
  }),
  /** Names of the services (call methods) the sender offers. */
  services: v.pipe(v.array(shortText(128)), v.maxLength(1024)),
  /** The sender's receive limits: frames and windows it accepts. */
  limits: v.object({
    maxFrameBytes: positiveInt(64 * 1024 * 1024),
    streamWindowBytes: positiveInt(2 ** 31 - 1),
    sessionWindowBytes: positiveInt(2 ** 31 - 1),
  }),
  /** Identifies the session across reconnects (resume). */
  sessionId: shortText(128),
  /** Secret the peer must present to resume this session. */
  resumeToken: shortText(128),
  /** Changes each time the sender's process starts: tells a restart from a reconnect. */
  incarnation: shortText(128),
  /** The sender's wall clock when it sent this frame (ms since the epoch). */
  wallTime: v.number(),
  /**
   * A reconnecting side asks to go on with a session: the receiver's own session id and resume
   * token from the earlier connection, and the last sequence number it received from it.
   */
  resume: v.optional(
    v.object({ sessionId: shortText(128), token: shortText(128), received: seqNumber }),
  ),
  /** The answer to `resume` when the session goes on: the last sequence number received. */
  resumed: v.optional(v.object({ received: seqNumber })),
  /** The answer to `resume` when it cannot: this is a new session, and why. */
  resumeRefused: v.optional(v.object({ reason: shortText(64), message: shortText(1024) })),
  /** The dialling side's mark for this connection: new for every connection it makes. */
  nonce: v.optional(shortText(64)),
  /** The accepting side's answer carries the dialler's `nonce`: a HELLO without it is stale. */
  answers: v.optional(shortText(64)),
  /**
   * The accepting side cannot see the connection end (a guest on a virtio-serial port): while
   * closing, frames are acknowledged at once, and a side waits for its last ones to be before it
   * hangs up.
   */
  confirmsClose: v.optional(v.boolean()),
  /**
   * The sender agrees to go without payload checksums on this connection, in both directions.
   * They are off only when both HELLOs say so; a side that receives over a lossy pipe never does.
   */
  uncheckedPayloads: v.optional(v.boolean()),
});
export type Hello = v.InferOutput<typeof HelloSchema>;

export const CallSchema = v.object({
  method: v.pipe(v.string(), v.minLength(1), v.maxLength(256)),
  params: v.optional(v.unknown()),
  /** Time left until the caller's deadline, in ms, when the frame was sent. */
  timeoutMs: v.optional(v.pipe(v.number(), v.minValue(0))),
  /** A notification: the sender expects no reply. */
  notify: v.optional(v.boolean()),
  /** Streams opened with the call: name -> stream id (allocated by the caller). */
  streams: v.optional(v.record(shortText(64), v.pipe(u32, v.minValue(1)))),
});
export type CallMessage = v.InferOutput<typeof CallSchema>;

export const ResultSchema = v.object({ value: v.optional(v.unknown()) });

export const ErrorSchema = v.object({
  code: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
  message: shortText(4096),
  details: v.optional(v.record(v.string(), v.unknown())),
});
export type ErrorMessage = v.InferOutput<typeof ErrorSchema>;

export const CancelSchema = v.object({
  reason: v.optional(shortText(256)),
  /** Why, as a code: CANCELLED (the default) or DEADLINE_EXCEEDED. */
  code: v.optional(v.picklist(["CANCELLED", "DEADLINE_EXCEEDED"])),
});

export const WindowSchema = v.object({ credit: positiveInt(2 ** 31 - 1) });

export const ResetSchema = ErrorSchema;

export const AckSchema = v.object({
  /** The last sequence number received in order. */
  received: seqNumber,
  /**
   * Asks the peer to send again, on this connection, its frames after `received` up to and
   * including this number: they were lost or damaged on the way (docs/protocol.md 9.2).
   */
  resend: v.optional(seqNumber),
});

export const PingSchema = v.object({ sentAt: v.number() });

export const PongSchema = v.object({
  /** The `sentAt` of the PING answered. */
  sentAt: v.number(),
  /** The answerer's wall clock when it answered (ms since the epoch). */
  wallTime: v.number(),
});

export const GoawaySchema = v.object({ reason: v.optional(shortText(256)) });

// ---- quick checks ------------------------------------------------------------------------------
//
// CALL, RESULT, ERROR and WINDOW come with every call or stream window, and valibot's general
// machinery was a measurable part of a call's cost. Each check below is the schema above written
// out by hand, for a decoded control payload (a plain object). It returns true only when the
// schema accepts the input AND its output would hold the input's own values (valibot copies the
// fields it knows into a new object, and drops "__proto__", "prototype" and "constructor" keys
// of records): then the session uses the input as it is. false means "ask the schema", which
// accepts or refuses the input and says why, exactly as before (test/session/messages.test.ts
// checks the two against each other).

const hasOwn = Object.prototype.hasOwnProperty;

function isShortText(value: unknown, min: number, max: number): boolean {
  return typeof value === "string" && value.length >= min && value.length <= max;
}

function isIntegerIn(value: unknown, min: number, max: number): boolean {
  return Number.isInteger(value) && (value as number) >= min && (value as number) <= max;
}

/** A key valibot's records leave out of their output. */
function isDroppedKey(key: string): boolean {
  return key === "__proto__" || key === "prototype" || key === "constructor";
}

/** A plain object (as a decoded map is), none of whose keys a record would drop. */
function isPlainRecord(value: unknown): value is Record<string, unknown> {
  if (
    typeof value !== "object" ||
    value === null ||
    Object.getPrototypeOf(value) !== Object.prototype
  ) {
    return false;
  }
  for (const key in value) if (!hasOwn.call(value, key) || isDroppedKey(key)) return false;
  return true;
}

/** `CallSchema`, for a decoded payload. */
export function isPlainCall(input: Record<string, unknown>): boolean {
  if (!isShortText(input.method, 1, 256)) return false;
  const timeoutMs = input.timeoutMs;
  if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs >= 0)) return false;
  const notify = input.notify;
  if (notify !== undefined && typeof notify !== "boolean") return false;
  const streams = input.streams;
  if (streams === undefined) return true;
  if (!isPlainRecord(streams)) return false;
  for (const name in streams) {
    if (name.length > 64 || !isIntegerIn(streams[name], 1, 0xffffffff)) return false;
  }
  return true;
}

/** `ResultSchema`, for a decoded payload: any map is a RESULT (`value` may be anything or absent). */
export function isPlainResult(_input: Record<string, unknown>): boolean {
  return true;
}

/** `ErrorSchema` (and `ResetSchema`), for a decoded payload. */
export function isPlainError(input: Record<string, unknown>): boolean {
  return (
    isShortText(input.code, 1, 64) &&
    isShortText(input.message, 0, 4096) &&
    (input.details === undefined || isPlainRecord(input.details))
  );
}

/** `WindowSchema`, for a decoded payload. */
export function isPlainWindow(input: Record<string, unknown>): boolean {
  return isIntegerIn(input.credit, 1, 2 ** 31 - 1);
}

/** Parses with a schema; returns the problem as text instead of throwing. */
export function parseMessage<S extends v.GenericSchema>(
  schema: S,
  value: unknown,
): { ok: true; value: v.InferOutput<S> } | { ok: false; problem: string } {
  const result = v.safeParse(schema, value);
  if (result.success) return { ok: true, value: result.output };
  const issue = result.issues[0];
  const path = issue.path?.map((p: { key: unknown }) => String(p.key)).join(".") ?? "";
  return { ok: false, problem: `${path ? `${path}: ` : ""}${issue.message}` };
}

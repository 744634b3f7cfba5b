/**
 * A peer breaking the protocol, as the session's parts report it: they throw `ProtocolViolation`
 * and the dispatch of received frames turns it into the session's end (ERROR on stream 0 with
 * code PROTOCOL_ERROR and `details.violation`, docs/protocol.md 9.6), in one place.
 */
import { decodeControl } from "../wire/control.ts";
import { type Frame, frameTypeName } from "../wire/frame.ts";
import { parseMessage } from "./messages.ts";

export class ProtocolViolation extends Error {
  /** What was broken, as `details.violation` names it (`FLOW_CONTROL`, `UNKNOWN_STREAM`, …). */
  readonly violation: string;

  constructor(violation: string, message: string) {
    super(message);
    this.name = "ProtocolViolation";
    this.violation = violation;
  }
}

/**
 * Decodes and validates a control payload, or throws a `ProtocolViolation` saying why not.
 * `quick` is a hand-written check of the schema for the messages of every call: when it says
 * yes, the payload is the message as it is; otherwise the schema decides (and says why not).
 */
export function parseFrame<T>(
  schema: Parameters<typeof parseMessage>[0],
  frame: Frame,
  quick?: (input: Record<string, unknown>) => boolean,
): T {
  let value: Record<string, unknown>;
  try {
    value = decodeControl(frame.payload);
  } catch (err) {
    throw new ProtocolViolation(
      "BAD_CONTROL_PAYLOAD",
      `${frameTypeName(frame.type)}: ${(err as Error).message}`,
    );
  }
  if (quick?.(value)) return value as T;
  const parsed = parseMessage(schema, value);
  if (!parsed.ok) {
    throw new ProtocolViolation("BAD_MESSAGE", `${frameTypeName(frame.type)}: ${parsed.problem}`);
  }
  return parsed.value as T;
}

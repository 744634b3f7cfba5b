/** What every service does with what a caller sends: check the params, find the streams. */
import * as v from "valibot";
import { InvalidOptionError } from "../errors.ts";
import type { CallContext } from "../session/session.ts";
import type { SessionStream } from "../session/stream.ts";

/** Checks `params` against `schema`; a mismatch is INVALID_OPTION naming the method and field. */
export function parseParams<S extends v.GenericSchema>(
  method: string,
  schema: S,
  params: unknown,
): v.InferOutput<S> {
  const parsed = v.safeParse(schema, params);
  if (parsed.success) return parsed.output;
  const issue = parsed.issues[0];
  const field = v.getDotPath(issue);
  throw new InvalidOptionError(`${method}: ${field ? `${field} ` : "params "}${issue.message}`, {
    details: { method, ...(field ? { option: field } : {}) },
  });
}

/** The stream named `name` that the caller must open with `method`. */
export function requireStream(ctx: CallContext, name: string): SessionStream {
  const stream = ctx.streams[name];
  if (!stream) {
    throw new InvalidOptionError(`${ctx.method} needs a stream named "${name}"`, {
      details: { method: ctx.method, stream: name },
    });
  }
  return stream;
}

/** What the host does with an agent's reply: check its shape before believing any of it. */
import * as v from "valibot";
import { GuestlinkError } from "../errors.ts";

/** `value` as `schema` says, or BAD_RESULT naming `method` and what was wrong. */
export function checkReply<S extends v.GenericSchema>(
  method: string,
  schema: S,
  value: unknown,
): v.InferOutput<S> {
  const parsed = v.safeParse(schema, value);
  if (parsed.success) return parsed.output;
  throw new GuestlinkError(
    "BAD_RESULT",
    `the agent's result for ${method} is malformed: ${v.summarize(parsed.issues)}`,
    { details: { method, problems: parsed.issues.map((issue) => issue.message) } },
  );
}

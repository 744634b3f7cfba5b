/** The guest's side of the mediator: submitting work over a session (`guestlink submit`). */
import type { CallOptions } from "../../abort.ts";
import type { Session } from "../../session/session.ts";
import { STATUS_METHOD, SUBMIT_METHOD } from "./contract.ts";
import type { MediatorStatus, SubmitParams } from "./mediator.ts";

export interface SubmitOptions extends CallOptions {
  /** 1 is the most urgent; default the pool's least urgent level. */
  priority?: number;
  /**
   * Submitting again with the same key (from this guest, to this pool) returns the reply kept
   * for it, or attaches to the work still running, instead of running it again.
   */
  key?: string;
}

/** Submits `input` to `pool` through the mediator at the other end of `session`; its result. */
export function submitWork(
  session: Session,
  pool: string,
  input: unknown,
  options: SubmitOptions = {},
): Promise<unknown> {
  const { priority, key, signal, deadline } = options;
  const params: SubmitParams = { pool, input };
  if (priority !== undefined) params.priority = priority;
  if (key !== undefined) params.key = key;
  return session.call(SUBMIT_METHOD, params, { signal, deadline });
}

/** The mediator's pools, levels, guests and queue, as `mediate` shows them. */
export function mediatorStatus(
  session: Session,
  options: CallOptions = {},
): Promise<MediatorStatus> {
  return session.call(STATUS_METHOD, undefined, options) as Promise<MediatorStatus>;
}

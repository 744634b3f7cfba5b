/**
 * A service is a named group of methods the agent offers (exec, files, info, telemetry). The
 * agent advertises services by name in the handshake and applies its allow-list per service.
 * A service that holds state for a session (temporary files, subscriptions) releases it when
 * that session's `closed` settles (`ctx.session.closed`).
 */
import type { Handler } from "../session/session.ts";

export interface Service {
  /** The name used in `--allow` and in the handshake's service list. */
  readonly name: string;
  /** Method name (as called on the session) -> handler. */
  readonly methods: Readonly<Record<string, Handler>>;
}

/** Where the daemon's API socket is, for the daemon and for the CLI's `@ID` and `ls`. */
import { join } from "node:path";

/** `$GUESTLINK_SOCKET`, else `$XDG_RUNTIME_DIR/guestlink/serve.sock`, else `/run/guestlink/serve.sock`. */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.GUESTLINK_SOCKET) return env.GUESTLINK_SOCKET;
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, "guestlink", "serve.sock");
  return "/run/guestlink/serve.sock";
}

/** The HTTP API's default address. */
export const DEFAULT_HTTP = "127.0.0.1:7780";
/** The path a client upgrades on to talk to agent ID through the daemon. */
export const sessionPath = (id: string) => `/v1/agents/${encodeURIComponent(id)}/session`;
/** The `Upgrade:` protocol name of that tunnel. */
export const UPGRADE_PROTOCOL = "guestlink";

/**
 * Which HTTP requests the daemon's API answers at all: its loopback TCP address is reachable by
 * any web page the user's browser opens, so a request must be for a loopback host name (a page
 * that rebinds its own name to 127.0.0.1 sends its own name in `Host`), and one a browser sent on
 * behalf of a page (it carries `Origin`) must come from the daemon's own pages (the dashboard).
 * Without this a page could open the exec WebSocket, which browsers allow across origins, and run
 * commands in every agent. Programs (curl, kubectl-style clients, the CLI) send no `Origin`.
 */
import type { IncomingMessage } from "node:http";
import { isIP } from "node:net";
import { GuestlinkError } from "../errors.ts";

/** A host name (no port, no brackets) that can only mean this machine. */
function isLoopbackName(name: string): boolean {
  const host = name.toLowerCase().replace(/\.$/, "");
  if (host === "localhost" || host.endsWith(".localhost") || host === "::1") return true;
  return isIP(host) === 4 && host.startsWith("127.");
}

/** The host name of a `Host` header or an origin's authority: brackets and port taken off. */
function hostName(authority: string): string {
  const bracketed = /^\[([^\]]*)\](?::\d+)?$/.exec(authority);
  if (bracketed) return bracketed[1] as string;
  const at = authority.lastIndexOf(":");
  return at >= 0 && authority.indexOf(":") === at ? authority.slice(0, at) : authority;
}

/**
 * Undefined when the daemon may answer `req`, else why not (FORBIDDEN_ORIGIN). `overTcp`: it came
 * to the loopback TCP address, not the Unix socket (which browsers cannot reach, and where the
 * CLI names no real host).
 */
export function refusedOrigin(req: IncomingMessage, overTcp: boolean): GuestlinkError | undefined {
  const host = req.headers.host ?? "";
  if (overTcp && !isLoopbackName(hostName(host))) {
    return new GuestlinkError(
      "FORBIDDEN_ORIGIN",
      `a request for host "${host}": the daemon answers only requests for this machine (localhost, 127.0.0.1 or [::1]); a web page that makes its own name point here names itself`,
      { details: { host } },
    );
  }
  const origin = req.headers.origin;
  if (origin === undefined) return undefined;
  if (overTcp && (origin === `http://${host}` || origin === `https://${host}`)) return undefined;
  return new GuestlinkError(
    "FORBIDDEN_ORIGIN",
    `a request sent by a web page from ${origin}: the daemon answers browsers only for its own pages (http://${host}/)`,
    { details: { origin, host } },
  );
}

/**
 * The daemon's API answers: JSON bodies, and errors as `{schemaVersion, code, message, details}`
 * with a status that fits the code (a missing file is 404, a folder where a file was asked for
 * 409, …). Kept apart from daemon.ts so the endpoints need nothing from it (and no import cycle).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import { GuestlinkError, isGuestlinkError } from "../errors.ts";
import type { HeldAgent } from "./held-agent.ts";

const STATUS: Record<string, number> = {
  AGENT_NOT_FOUND: 404,
  NOT_FOUND: 404,
  FILE_NOT_FOUND: 404,
  AGENT_UNAVAILABLE: 503,
  INVALID_OPTION: 400,
  PERMISSION_DENIED: 403,
  POLICY_DENIED: 403,
  FORBIDDEN_ORIGIN: 403,
  IS_A_DIRECTORY: 409,
  NOT_A_DIRECTORY: 409,
  UNSUPPORTED_FILE_TYPE: 409,
  FILE_CHANGED: 409,
  CHECKSUM_MISMATCH: 422,
  NO_SPACE: 507,
  METHOD_NOT_FOUND: 501,
  DEADLINE_EXCEEDED: 504,
};

/** The HTTP status for an error: by its code; 502 for other failures reported by the agent. */
export function httpStatus(err: unknown): number {
  if (!isGuestlinkError(err)) return 500;
  return STATUS[err.code] ?? 502;
}

export function errorBody(err: unknown): { code: string; message: string; details?: unknown } {
  if (isGuestlinkError(err)) return { code: err.code, message: err.message, details: err.details };
  return { code: "INTERNAL", message: err instanceof Error ? err.message : String(err) };
}

export function sendJson(res: ServerResponse, status: number, value: object): void {
  const body = `${JSON.stringify({ schemaVersion: 1, ...value })}\n`;
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
  });
  res.end(body);
}

/**
 * Answers with the error as JSON; once the headers are out (a download half sent) the
 * connection is cut instead, so the client sees a broken transfer rather than a short one.
 */
export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  sendJson(res, httpStatus(err), errorBody(err));
}

/** Refuses an upgrade request with the error as a JSON HTTP answer, then closes the socket. */
export function refuseUpgrade(socket: Socket, err: unknown): void {
  const status = httpStatus(err);
  const body = `${JSON.stringify({ schemaVersion: 1, ...errorBody(err) })}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** `/v1/agents/ID/<what>` → ID, or undefined for any other path. */
export function agentPath(req: IncomingMessage, what: string): string | undefined {
  const url = new URL(req.url ?? "/", "http://daemon");
  const parts = url.pathname.split("/").filter(Boolean);
  if (parts.length !== 4 || parts[0] !== "v1" || parts[1] !== "agents" || parts[3] !== what)
    return undefined;
  try {
    return decodeURIComponent(parts[2] as string);
  } catch {
    return undefined;
  }
}

/** The agent and its live session, or AGENT_NOT_FOUND / AGENT_UNAVAILABLE. */
export function liveAgent(agents: ReadonlyMap<string, HeldAgent>, id: string) {
  const held = agents.get(id);
  if (held === undefined) {
    throw new GuestlinkError("AGENT_NOT_FOUND", `the daemon holds no agent ${id}`, {
      details: { id, available: [...agents.keys()] },
    });
  }
  const session = held.session;
  if (session === undefined) {
    throw new GuestlinkError(
      "AGENT_UNAVAILABLE",
      `agent ${held.id} is ${held.state} (not connected now)`,
      { details: { id: held.id, state: held.state } },
    );
  }
  return { held, session };
}

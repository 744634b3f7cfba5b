/**
 * Files of a held agent over plain HTTP (issue 18): `GET /v1/agents/ID/files?path=P` streams
 * the file down, `PUT /v1/agents/ID/files?path=P` streams the request's body up. Both are
 * `guestlink get … -` and `guestlink put - …` with the HTTP message as the stream: the bytes move
 * with backpressure end to end (a slow client slows the agent's reads; a slow agent stops the
 * daemon reading the upload), are hashed on both sides, and an upload replaces the file only
 * once the agent's sha256 matches the daemon's — and the client's, when it sent
 * `x-guestlink-sha256`. A client that goes away mid-transfer cancels it: an upload replaces
 * nothing and the agent deletes its temporary file.
 *
 * A download's sha256 (and size) come as HTTP trailers once the agent has confirmed them, so the
 * body is chunked: the agent says how big the file is only at its end (and a Content-Length
 * would rule trailers out). A download that fails once its first bytes are out is cut off
 * (no final chunk), never ended as if it were complete.
 */
import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { PassThrough, Readable } from "node:stream";
import { getFile, putFile } from "../controller/files.ts";
import { GuestlinkError, InvalidOptionError } from "../errors.ts";
import type { Session } from "../session/session.ts";
import type { HeldAgent } from "./held-agent.ts";
import { agentPath, liveAgent, sendError, sendJson } from "./http-errors.ts";

/** The trailer with the hex sha256 of a download, and the request header checked on upload. */
export const SHA256_HEADER = "x-guestlink-sha256";
export const SIZE_TRAILER = "x-guestlink-size";

/**
 * Serves `GET`/`PUT /v1/agents/ID/files?path=…`; resolves false (touching nothing) for any other
 * request, which the daemon's router then handles.
 */
export async function serveFiles(
  req: IncomingMessage,
  res: ServerResponse,
  agents: ReadonlyMap<string, HeldAgent>,
): Promise<boolean> {
  const id = agentPath(req, "files");
  if (id === undefined || (req.method !== "GET" && req.method !== "PUT")) return false;
  const stop = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) {
      stop.abort(new GuestlinkError("CANCELLED", "the HTTP client went away mid-transfer"));
    }
  });
  try {
    const { session } = liveAgent(agents, id);
    const path = new URL(req.url ?? "/", "http://daemon").searchParams.get("path");
    if (path === null || path === "") {
      throw new InvalidOptionError(
        "files: name the file in the agent with ?path= (a path in the agent; relative to its working folder)",
        { details: { path } },
      );
    }
    if (req.method === "GET") await download(session, path, res, stop.signal);
    else await upload(session, path, req, res, stop.signal);
  } catch (err) {
    if (!stop.signal.aborted) {
      // What the client has not sent yet is not read: end the connection with the answer.
      if (!req.complete) res.setHeader("connection", "close");
      sendError(res, err);
    }
  }
  return true;
}

async function download(
  session: Session,
  path: string,
  res: ServerResponse,
  signal: AbortSignal,
): Promise<void> {
  // Sent with the first bytes (or the end): a failure before them is still a JSON error.
  res.setHeader("content-type", "application/octet-stream");
  res.setHeader("cache-control", "no-store");
  res.setHeader("trailer", `${SHA256_HEADER}, ${SIZE_TRAILER}`);
  const result = await getFile(session, path, res, { signal });
  res.addTrailers({ [SHA256_HEADER]: result.sha256, [SIZE_TRAILER]: String(result.size) });
  res.end();
}

async function upload(
  session: Session,
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
  signal: AbortSignal,
): Promise<void> {
  const expected = expectedSha256(req);
  // The body through a stream of our own: when the transfer fails, it is this one that is torn
  // down, not the request (that would cut the connection before the error could be answered).
  const body = new PassThrough();
  const hash = createHash("sha256");
  let size = 0;
  const gone = () => {
    if (!req.complete) body.destroy(new GuestlinkError("CANCELLED", "the upload was cut off"));
  };
  req.once("close", gone);
  req.once("error", gone);
  signal.addEventListener("abort", gone, { once: true });
  req.pipe(body);
  async function* checked() {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
      yield chunk;
    }
    if (expected === undefined) return;
    const sha256 = hash.digest("hex");
    if (sha256 !== expected) {
      // Thrown before the end of the data: the agent never commits, and deletes its temp file.
      throw new GuestlinkError(
        "CHECKSUM_MISMATCH",
        `${path}: the ${size} bytes uploaded have sha256 ${sha256}, not ${expected} as ${SHA256_HEADER} says; ${path} in the agent was not replaced`,
        { details: { path, sha256, expectedSha256: expected, size } },
      );
    }
  }
  try {
    const result = await putFile(session, Readable.from(checked()), path, { signal });
    sendJson(res, 200, {
      path: result.path,
      size: result.size,
      sha256: result.sha256,
      mode: result.mode,
    });
  } finally {
    req.unpipe(body);
    req.off("close", gone);
    req.off("error", gone);
  }
}

function expectedSha256(req: IncomingMessage): string | undefined {
  const value = req.headers[SHA256_HEADER];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !/^[0-9a-fA-F]{64}$/.test(value.trim())) {
    throw new InvalidOptionError(`${SHA256_HEADER} must be one hex sha256 (64 hex digits)`, {
      details: { [SHA256_HEADER]: value },
    });
  }
  return value.trim().toLowerCase();
}

/**
 * Exec in a held agent over a WebSocket, the way Kubernetes does it (issue 18):
 * `ws://HOST/v1/agents/ID/exec?command=ls&command=-l` with the subprotocol `v5.channel.k8s.io`
 * (or `v4.channel.k8s.io`). Every binary message starts with the number of its stream: 0 stdin
 * (client → daemon), 1 stdout, 2 stderr, 3 the status once the command is over (a Kubernetes
 * `Status` as JSON, the shape kubectl reads its exit code from); with v5 a client ends stdin
 * with `[255, 0]`. The daemon answers with the status, then closes the WebSocket (1000).
 *
 * Bytes move with backpressure both ways: while more than `WS_BUFFER_BOUND` bytes wait to go out
 * on the WebSocket, the agent's stdout and stderr streams are not read (so the agent stops
 * reading the command's pipes); while the command's stdin stream is full, the WebSocket is not
 * read. A client that goes away cancels the command (the agent kills its process group), unless
 * the request has `keep=SECONDS`: then the command runs on (stdin at end, output dropped) until
 * it ends or that time has passed, then is cancelled. With `tty=true` the command gets a terminal
 * in the agent (stdout carries it, there is no stderr), sized by the client's messages on stream 4
 * (`{"Width": W, "Height": H}`, as kubectl sends them). docs/daemon.md, "Exec over WebSocket".
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { Readable, Writable } from "node:stream";
import { WebSocket, WebSocketServer } from "ws";
import { type ExecRequest, type ExecResult, parseExecRequest } from "../agent/exec-contract.ts";
import { ExecControl, remoteExec } from "../controller/exec.ts";
import { GuestlinkError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import type { Session } from "../session/session.ts";
import type { HeldAgent } from "./held-agent.ts";
import { agentPath, httpStatus, liveAgent, refuseUpgrade, sendError } from "./http-errors.ts";

/** The subprotocols spoken, the preferred first. */
export const EXEC_PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"] as const;
export type ExecProtocol = (typeof EXEC_PROTOCOLS)[number];

/** Stream numbers: the first byte of every message. */
export const CHANNEL = { stdin: 0, stdout: 1, stderr: 2, status: 3, resize: 4, close: 255 };

/** Bytes queued on the WebSocket past which the command's output is not read. */
export const WS_BUFFER_BOUND = 1024 * 1024;
/** The largest message a client may send (a stdin chunk and its channel byte). */
const MAX_INCOMING_MESSAGE = 1024 * 1024;
/** Longest timeout= and keep= (a day), so a typo does not hold a command for ages. */
const MAX_SECONDS = 24 * 3600;

/** A Kubernetes `metav1.Status` as the kubelet writes it on the status stream. */
export interface ExecStatus {
  metadata: Record<string, never>;
  status: "Success" | "Failure";
  message?: string;
  reason?: string;
  details?: { causes: { reason: string; message: string }[] };
  code?: number;
}

interface ExecPlan {
  request: ExecRequest;
  timeoutMs: number | undefined;
  keepMs: number | undefined;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  /** A terminal in the agent, resized by the client's messages on stream 4. */
  tty: boolean;
}

const wss = new WebSocketServer({
  noServer: true,
  clientTracking: false,
  perMessageDeflate: false,
  maxPayload: MAX_INCOMING_MESSAGE,
});

/**
 * Takes an upgrade request for `/v1/agents/ID/exec` (answering errors as JSON HTTP responses);
 * false for any other path, which the daemon then handles.
 */
export function serveExecUpgrade(
  req: IncomingMessage,
  socket: Socket,
  head: Buffer,
  agents: ReadonlyMap<string, HeldAgent>,
): boolean {
  const id = agentPath(req, "exec");
  if (id === undefined) return false;
  let session: Session;
  let protocol: ExecProtocol;
  let plan: ExecPlan;
  try {
    if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket") throw needsWebSocket();
    session = liveAgent(agents, id).session;
    protocol = pickProtocol(req.headers["sec-websocket-protocol"]);
    plan = parseQuery(new URL(req.url ?? "/", "http://daemon").searchParams);
  } catch (err) {
    refuseUpgrade(socket, err);
    return true;
  }
  const chosen = protocol;
  wss.handleUpgrade(req, socket, head, (ws) => void runExec(ws, chosen, session, plan));
  return true;
}

/** A plain HTTP request for `/v1/agents/ID/exec`: a clear 400 rather than "no such path". */
export function serveExecHttp(req: IncomingMessage, res: ServerResponse): boolean {
  if (agentPath(req, "exec") === undefined) return false;
  sendError(res, needsWebSocket());
  return true;
}

function needsWebSocket(): GuestlinkError {
  return new InvalidOptionError(
    `exec is a WebSocket endpoint: connect with Upgrade: websocket and the subprotocol ${EXEC_PROTOCOLS.join(" or ")}`,
    { details: { protocols: [...EXEC_PROTOCOLS] } },
  );
}

function pickProtocol(header: string | undefined): ExecProtocol {
  const asked = (header ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
  const chosen = asked.find((p): p is ExecProtocol =>
    (EXEC_PROTOCOLS as readonly string[]).includes(p),
  );
  if (chosen === undefined) {
    throw new InvalidOptionError(
      `exec speaks the WebSocket subprotocol ${EXEC_PROTOCOLS.join(" or ")} (Sec-WebSocket-Protocol); the client asked for ${asked.length === 0 ? "none" : asked.join(", ")}`,
      { details: { asked, protocols: [...EXEC_PROTOCOLS] } },
    );
  }
  return chosen;
}

const QUERY_KEYS = new Set([
  "command",
  "cwd",
  "env",
  "timeout",
  "keep",
  "stdin",
  "stdout",
  "stderr",
  "tty",
  "container",
]);

/** The query string as an exec request; INVALID_OPTION naming what is wrong. */
export function parseQuery(query: URLSearchParams): ExecPlan {
  for (const key of query.keys()) {
    if (!QUERY_KEYS.has(key)) {
      throw new InvalidOptionError(
        `exec: unknown query parameter ${key}= (known: ${[...QUERY_KEYS].join(", ")})`,
        { details: { parameter: key } },
      );
    }
  }
  const argv = query.getAll("command");
  if (argv.length === 0) {
    throw new InvalidOptionError(
      "exec: no command: give it as command=PROGRAM&command=ARG…, one command= per argument",
      { details: { parameter: "command" } },
    );
  }
  const env: Record<string, string> = {};
  for (const pair of query.getAll("env")) {
    const at = pair.indexOf("=");
    if (at <= 0) {
      throw new InvalidOptionError(`exec: env=${pair} is not NAME=VALUE`, {
        details: { parameter: "env", value: pair },
      });
    }
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  // A terminal joins stderr to stdout, so with tty=true there is no stderr (the kubelet refuses
  // both too); its size comes from the client's resize messages (stream 4), 80x24 until then.
  const tty = flag(query, "tty", false);
  if (tty && flag(query, "stderr", false)) {
    throw new InvalidOptionError(
      "exec: tty=true joins stderr to stdout, as a terminal does: leave out stderr=true",
      { details: { parameter: "stderr" } },
    );
  }
  const cwd = query.get("cwd");
  const request = parseExecRequest({
    argv,
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...(cwd !== null ? { cwd } : {}),
    ...(tty ? { tty: { rows: 24, cols: 80 } } : {}),
  });
  return {
    request,
    timeoutMs: seconds(query, "timeout", false),
    keepMs: seconds(query, "keep", true),
    stdin: flag(query, "stdin", true),
    stdout: flag(query, "stdout", true),
    stderr: !tty && flag(query, "stderr", true),
    tty,
  };
}

/** A resize message's `{"Width": W, "Height": H}` (as kubectl sends it), or undefined. */
function terminalSize(json: Uint8Array): { rows: number; cols: number } | undefined {
  try {
    const size = JSON.parse(Buffer.from(json).toString("utf8")) as {
      Width?: unknown;
      Height?: unknown;
    };
    const { Width: cols, Height: rows } = size;
    if (
      Number.isInteger(cols) &&
      Number.isInteger(rows) &&
      (cols as number) > 0 &&
      (rows as number) > 0
    ) {
      return { rows: Math.min(rows as number, 0xffff), cols: Math.min(cols as number, 0xffff) };
    }
  } catch {
    // Not JSON: ignored, as the kubelet ignores a resize it cannot read.
  }
  return undefined;
}

function seconds(query: URLSearchParams, key: string, zero: boolean): number | undefined {
  const text = query.get(key);
  if (text === null) return undefined;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < 0 || (value === 0 && !zero)) {
    throw new InvalidOptionError(
      `exec: ${key}= is seconds, ${zero ? "0" : "more than 0"} to ${MAX_SECONDS} (got ${JSON.stringify(text)})`,
      { details: { parameter: key, value: text } },
    );
  }
  if (value > MAX_SECONDS) {
    throw new InvalidOptionError(`exec: ${key}= is at most ${MAX_SECONDS} seconds`, {
      details: { parameter: key, value: text },
    });
  }
  return Math.round(value * 1000);
}

function flag(query: URLSearchParams, key: string, byDefault: boolean): boolean {
  const text = query.get(key);
  if (text === null) return byDefault;
  if (text === "true" || text === "1") return true;
  if (text === "false" || text === "0") return false;
  throw new InvalidOptionError(`exec: ${key}= is true or false (got ${JSON.stringify(text)})`, {
    details: { parameter: key, value: text },
  });
}

async function runExec(
  ws: WebSocket,
  protocol: ExecProtocol,
  session: Session,
  plan: ExecPlan,
): Promise<void> {
  const cancel = new AbortController();
  const control = plan.tty ? new ExecControl() : undefined;
  let finished = false;
  let keepTimer: NodeJS.Timeout | undefined;

  // stdin: messages on stream 0 fed into a stream the exec call reads; the WebSocket is not read
  // while that stream is full.
  let stdinEnded = false;
  const stdin = plan.stdin
    ? new Readable({
        highWaterMark: 64 * 1024,
        read() {
          ws.resume();
        },
      })
    : null;
  const endStdin = () => {
    if (stdin === null || stdinEnded) return;
    stdinEnded = true;
    stdin.push(null);
    ws.resume();
  };
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (!isBinary || data.length === 0) return;
    const channel = data[0];
    if (channel === CHANNEL.stdin) {
      if (stdin === null || stdinEnded || data.length === 1) return;
      if (!stdin.push(data.subarray(1))) ws.pause();
    } else if (channel === CHANNEL.close && protocol === "v5.channel.k8s.io") {
      if (data.length === 2 && data[1] === CHANNEL.stdin) endStdin();
    } else if (channel === CHANNEL.resize && control !== undefined) {
      const size = terminalSize(data.subarray(1));
      if (size !== undefined) control.resize(size.rows, size.cols);
    }
    // Anything else (a resize without tty=true, closes of streams that do not flow this way, a
    // size that is not one) is ignored.
  });

  const released = new Set<() => void>();
  ws.on("error", () => {});
  ws.once("close", () => {
    for (const release of released) release();
    released.clear();
    endStdin();
    if (finished) return;
    const gone = new GuestlinkError("CANCELLED", "the WebSocket client went away");
    if (plan.keepMs === undefined) cancel.abort(gone);
    else keepTimer = setTimeout(() => cancel.abort(gone), plan.keepMs);
  });

  const output = (channel: number, wanted: boolean) =>
    new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _encoding, callback) {
        // A client gone (with keep=): what the command still writes is dropped.
        if (!wanted || ws.readyState !== WebSocket.OPEN) {
          callback();
          return;
        }
        let called = false;
        const release = () => {
          if (called) return;
          called = true;
          released.delete(release);
          callback();
        };
        ws.send(Buffer.concat([Buffer.of(channel), chunk]), { binary: true }, () => release());
        // Over the bound, this write completes (and the next is taken) only once the frame is
        // out on the socket, which pauses the agent's stream behind it.
        if (ws.bufferedAmount <= WS_BUFFER_BOUND) release();
        else released.add(release);
      },
    });

  // As the kubelet does: an empty message on the first output stream says the streams are up.
  if (plan.stdout || plan.stderr) {
    ws.send(Buffer.of(plan.stdout ? CHANNEL.stdout : CHANNEL.stderr), { binary: true });
  }

  let status: ExecStatus;
  try {
    const result = await remoteExec(
      session,
      plan.request,
      {
        stdin,
        stdout: output(CHANNEL.stdout, plan.stdout),
        stderr: output(CHANNEL.stderr, plan.stderr),
        ...(control === undefined ? {} : { control }),
      },
      {
        signal: cancel.signal,
        deadline: plan.timeoutMs === undefined ? undefined : performance.now() + plan.timeoutMs,
      },
    );
    status = resultStatus(result, plan.timeoutMs);
  } catch (err) {
    status = failureStatus(err);
  } finally {
    finished = true;
    clearTimeout(keepTimer);
  }
  if (ws.readyState === WebSocket.OPEN) {
    ws.send(Buffer.concat([Buffer.of(CHANNEL.status), Buffer.from(JSON.stringify(status))]), {
      binary: true,
    });
    ws.close(1000);
  }
}

/** How the command ended, as the kubelet reports it: kubectl exits with the ExitCode cause. */
export function resultStatus(result: ExecResult, timeoutMs?: number): ExecStatus {
  if (result.status === 0) return { metadata: {}, status: "Success" };
  const why =
    result.reason === "exited"
      ? ""
      : result.reason === "timeout" && timeoutMs !== undefined
        ? ` (timeout: killed after ${timeoutMs / 1000} s)`
        : ` (${result.reason}${result.signal ? `, ${result.signal}` : ""}${result.message ? `: ${result.message}` : ""})`;
  return {
    metadata: {},
    status: "Failure",
    message: `command terminated with non-zero exit code: ${result.status}${why}`,
    reason: "NonZeroExitCode",
    details: { causes: [{ reason: "ExitCode", message: String(result.status) }] },
  };
}

const K8S_REASONS: Record<number, string> = {
  400: "BadRequest",
  404: "NotFound",
  503: "ServiceUnavailable",
  504: "Timeout",
};

/** A failure to run the command at all (the agent went away, …): the guestlink code as cause. */
export function failureStatus(err: unknown): ExecStatus {
  const code = httpStatus(err);
  const message = err instanceof Error ? err.message : String(err);
  return {
    metadata: {},
    status: "Failure",
    message,
    reason: K8S_REASONS[code] ?? "InternalError",
    details: {
      causes: [{ reason: isGuestlinkError(err) ? err.code : "INTERNAL", message }],
    },
    code: K8S_REASONS[code] === undefined ? 500 : code,
  };
}

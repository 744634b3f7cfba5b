/**
 * The CLI's side of the daemon: `@ID` addresses (a session to agent ID through the daemon's
 * socket: an HTTP upgrade, then guestlink's own protocol, forwarded by the daemon) and the API's
 * JSON (`guestlink ls`).
 */
import { request } from "node:http";
import { connect as netConnect, type Socket } from "node:net";
import { GuestlinkError } from "../errors.ts";
import { sessionOptions } from "../platform/session.ts";
import { Session } from "../session/session.ts";
import { NodeStreamTransport } from "../transport/node-stream.ts";
import { SlabReads } from "../transport/slab-reads.ts";
import { defaultSocketPath, sessionPath, UPGRADE_PROTOCOL } from "./paths.ts";

function unreachable(socketPath: string, err: NodeJS.ErrnoException): GuestlinkError {
  return new GuestlinkError(
    "DAEMON_UNREACHABLE",
    `no guestlink daemon answers on ${socketPath} (${err.code ?? err.message}): start \`guestlink serve\`, or set GUESTLINK_SOCKET to its socket`,
    { cause: err, details: { socket: socketPath } },
  );
}

/** A client session to agent `id` through the daemon. */
export async function openDaemonSession(
  id: string,
  options: { socketPath?: string; peer?: { id: string; hostname: string; version: string } } = {},
): Promise<Session> {
  const socketPath = options.socketPath ?? defaultSocketPath();
  // Read into slabs used again, as a direct unix: address is (slab-reads.ts): the answer's head is
  // read from them first, then the session's frames.
  const reads = new SlabReads();
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = netConnect({ path: socketPath, onread: reads.onread });
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", (err: NodeJS.ErrnoException) => reject(unreachable(socketPath, err)));
  });
  socket.write(
    `GET ${sessionPath(id)} HTTP/1.1\r\nhost: guestlink\r\nconnection: Upgrade\r\nupgrade: ${UPGRADE_PROTOCOL}\r\n\r\n`,
  );
  await readResponseHead(socket, reads, id);
  const transport = new NodeStreamTransport(socket, socket, { description: `@${id}`, reads });
  const session = new Session(
    transport,
    sessionOptions("client", { resume: false, ...(options.peer ? { peer: options.peer } : {}) }),
  );
  await session.ready;
  return session;
}

/**
 * Reads the upgrade's answer from `reads`: resolves after a 101's head, what came after it left
 * for the next reader of `reads`, or throws the daemon's error.
 */
function readResponseHead(socket: Socket, reads: SlabReads, id: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Uint8Array) => {
      buffered = Buffer.concat([buffered, chunk]);
      // Used up here, as far as the slabs are concerned; what follows the head is a copy.
      reads.decoded(chunk);
      const end = buffered.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buffered.length > 64 * 1024)
          fail(new GuestlinkError("PROTOCOL_ERROR", "the daemon's answer has no end of head"));
        return;
      }
      const head = buffered.subarray(0, end).toString("latin1");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
      if (status === 101) {
        cleanup();
        reads.detach(buffered.subarray(end + 4));
        resolve();
        return;
      }
      const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      const body = buffered.subarray(end + 4);
      if (body.length < length) return;
      let parsed: { code?: string; message?: string; details?: Record<string, unknown> } = {};
      try {
        parsed = JSON.parse(body.subarray(0, length).toString("utf8"));
      } catch {
        // Not ours: said below.
      }
      fail(
        new GuestlinkError(
          (parsed.code as "AGENT_NOT_FOUND") ?? "PROTOCOL_ERROR",
          parsed.message ?? `the daemon refused @${id} with HTTP ${status}`,
          { details: parsed.details },
        ),
      );
    };
    const onEnd = () =>
      fail(
        new GuestlinkError(
          "DAEMON_UNREACHABLE",
          "the daemon closed the connection before answering",
        ),
      );
    const cleanup = () => {
      reads.detach();
      socket.off("end", onEnd);
    };
    const fail = (err: Error) => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    reads.attach(onData);
    socket.once("end", onEnd);
  });
}

/** GETs a path of the daemon's API on its socket; its JSON, or its error as a GuestlinkError. */
export function daemonGet(
  path: string,
  socketPath = defaultSocketPath(),
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: "GET" }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        let body: Record<string, unknown>;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch {
          reject(
            new GuestlinkError(
              "PROTOCOL_ERROR",
              `the daemon answered ${path} with something that is not JSON`,
            ),
          );
          return;
        }
        if ((res.statusCode ?? 500) >= 400) {
          reject(
            new GuestlinkError(
              (body.code as "NOT_FOUND") ?? "PROTOCOL_ERROR",
              String(body.message ?? `HTTP ${res.statusCode}`),
              { details: body.details as Record<string, unknown> },
            ),
          );
        } else resolve(body);
      });
    });
    req.once("error", (err: NodeJS.ErrnoException) => reject(unreachable(socketPath, err)));
    req.end();
  });
}

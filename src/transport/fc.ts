/**
 * Firecracker's vsock as the host sees it (`fc:UDS_PATH:PORT`). Firecracker does not use the
 * host kernel's vsock: it listens on a Unix socket (the device's `uds_path`) and forwards
 * connections to and from the guest's AF_VSOCK ports (Firecracker's docs/vsock.md):
 *
 * - Host to guest: connect to UDS_PATH, send `CONNECT <port>\n`; Firecracker answers
 *   `OK <host port>\n` and from then on the stream is the guest's connection. When nothing in
 *   the guest listens on the port, Firecracker closes the connection instead. The guest agent may
 *   simply not be up yet (the VM is booting), so that is retried, backing off from
 *   FC_RETRY_INITIAL_MS to FC_RETRY_MAX_MS, until the caller's deadline (FC_GUEST_WAIT_MS
 *   without one).
 * - Guest to host: a guest connecting to CID 2 port P makes Firecracker connect to the Unix
 *   socket `UDS_PATH_P`, so listening on `fc:UDS_PATH:P` is listening there.
 */
import net from "node:net";
import { ConnectFailedError, InvalidAddressError } from "../errors.ts";
import { formatAddress } from "./address.ts";
import { raceCallOptions, throwIfDone } from "./call-options.ts";
import { errorLabel, NodeStreamTransport } from "./node-stream.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";
import { listenUnix, MAX_UNIX_PATH_BYTES } from "./unix.ts";

/** First pause before asking again after Firecracker closed for want of a guest listener. */
export const FC_RETRY_INITIAL_MS = 20;
/** The pause doubles up to this. */
export const FC_RETRY_MAX_MS = 500;
/**
 * How long a connect waits for a guest listener when the caller gave no deadline. Short, so that
 * a supervisor retrying on its own schedule (the CLI's --connect-timeout) hears why soon.
 */
export const FC_GUEST_WAIT_MS = 1_000;
/** The longest answer accepted before its newline: `OK 4294967295` is 13 bytes. */
export const FC_MAX_ANSWER_BYTES = 64;

const OK_LINE = /^OK (\d{1,10})$/;

/** What happened to the connection attempts so far, for the error that ends them. */
interface Tries {
  refused: number;
  readonly startedAt: number;
  socket: net.Socket | undefined;
  cancelled: boolean;
  wake: (() => void) | undefined;
}

/**
 * Connects to guest port `port` through Firecracker's vsock socket at `path`, waiting for the
 * guest to listen. Fails with CONNECT_FAILED, or the signal's reason.
 */
export async function connectFc(
  path: string,
  port: number,
  options?: CallOptions,
): Promise<Transport> {
  const description = describe(path, port);
  const tries: Tries = {
    refused: 0,
    startedAt: performance.now(),
    socket: undefined,
    cancelled: false,
    wake: undefined,
  };
  const onDeadline = () =>
    tries.refused > 0
      ? nobodyListens(description, port, tries, "deadline")
      : new ConnectFailedError(`connecting to ${description} did not finish before the deadline`, {
          details: { address: description, reason: "deadline" },
        });
  throwIfDone(options, onDeadline);
  const waitUntil = options?.deadline ?? performance.now() + FC_GUEST_WAIT_MS;

  const attempt = (async () => {
    let pause = FC_RETRY_INITIAL_MS;
    for (;;) {
      const transport = await handshake(path, port, description, tries);
      if (transport !== undefined) return transport;
      if (tries.cancelled) break;
      tries.refused++;
      const left = waitUntil - performance.now();
      if (left <= 0) throw nobodyListens(description, port, tries, "timeout");
      await sleep(Math.min(pause, left), tries);
      if (tries.cancelled) break;
      pause = Math.min(pause * 2, FC_RETRY_MAX_MS);
    }
    // Only reached once the race has settled the call: nobody sees this.
    throw new ConnectFailedError(`connecting to ${description} was given up`);
  })();
  return await raceCallOptions(attempt, options, {
    onDeadline,
    cancel: () => {
      tries.cancelled = true;
      tries.socket?.destroy();
      tries.wake?.();
    },
    discard: (transport) => transport.abort(),
  });
}

/**
 * Listens for the guest's connections to host port `port`: on the Unix socket `PATH_PORT`,
 * where Firecracker forwards them. The listener's address is `fc:PATH:PORT`.
 */
export async function listenFc(
  path: string,
  port: number,
  options?: CallOptions,
): Promise<Listener> {
  const description = describe(path, port);
  return await listenUnix(`${path}_${port}`, options, description);
}

function describe(path: string, port: number): string {
  const description = formatAddress({ kind: "fc", path, port });
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_UNIX_PATH_BYTES) {
    throw new InvalidAddressError(
      `invalid address ${JSON.stringify(description)}: the socket path is ${bytes} bytes, longer than the ${MAX_UNIX_PATH_BYTES} this system allows; give Firecracker a shorter uds_path`,
      { details: { address: description, bytes, max: MAX_UNIX_PATH_BYTES } },
    );
  }
  return description;
}

function nobodyListens(
  description: string,
  port: number,
  tries: Tries,
  reason: "deadline" | "timeout",
): ConnectFailedError {
  const seconds = ((performance.now() - tries.startedAt) / 1000).toFixed(1);
  return new ConnectFailedError(
    `nothing listens on guest port ${port} behind ${description}: Firecracker closed the connection ${tries.refused} ${tries.refused === 1 ? "time" : "times"} in ${seconds} s; is the agent running in the guest (guestlink agent --listen vsock:4294967295:${port})?`,
    { details: { address: description, reason, refused: tries.refused } },
  );
}

/** Resolves after `ms`, or at once when the attempt is cancelled. */
function sleep(ms: number, tries: Tries): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      tries.wake = undefined;
      resolve();
    }
    tries.wake = done;
  });
}

/**
 * One connection and CONNECT: the transport once Firecracker said OK, undefined when it closed
 * the connection without a word (nothing listens on the guest port). Bytes that came after the
 * OK line, in the same read, are put back for the transport's reader.
 */
function handshake(
  path: string,
  port: number,
  description: string,
  tries: Tries,
): Promise<Transport | undefined> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path, allowHalfOpen: true });
    tries.socket = socket;
    let connected = false;
    let settled = false;
    let received: Buffer = Buffer.alloc(0);
    const settle = () => {
      settled = true;
      tries.socket = undefined;
      socket.off("connect", onConnect);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("error", onError);
      socket.off("close", onClose);
    };
    const refused = () => {
      settle();
      socket.destroy();
      resolve(undefined);
    };
    const fail = (err: Error) => {
      settle();
      socket.destroy();
      reject(err);
    };
    const onConnect = () => {
      connected = true;
      socket.write(`CONNECT ${port}\n`);
    };
    const onData = (chunk: Buffer) => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const newline = received.indexOf(0x0a);
      if (newline < 0) {
        if (received.length > FC_MAX_ANSWER_BYTES) fail(garbled(description, port, received));
        return;
      }
      const line = received.subarray(0, newline).toString("latin1");
      const match = OK_LINE.exec(line);
      if (match === null || Number(match[1]) > 0xffffffff) {
        fail(garbled(description, port, received.subarray(0, newline + 1)));
        return;
      }
      settle();
      socket.pause();
      const rest = received.subarray(newline + 1);
      if (rest.length > 0) socket.unshift(rest);
      const transport = new NodeStreamTransport(socket, socket, { description, redialable: true });
      // Paused above, so the transport's 'data' listener did not start the flow: start it now.
      socket.resume();
      resolve(transport);
    };
    const onEnd = () => {
      if (received.length === 0) refused();
      else fail(garbled(description, port, received, true));
    };
    const onError = (err: Error) => {
      const code = errorLabel(err);
      if (!connected) {
        fail(
          new ConnectFailedError(explainSocket(err, path, description), {
            cause: err,
            details: { address: description, errno: code },
          }),
        );
      } else if ((code === "ECONNRESET" || code === "EPIPE") && received.length === 0) {
        // Firecracker dropped the connection before reading all of CONNECT, or reset it.
        refused();
      } else {
        fail(
          new ConnectFailedError(
            `the connection to ${description} broke during Firecracker's handshake (${code})`,
            { cause: err, details: { address: description, errno: code } },
          ),
        );
      }
    };
    // Destroyed from outside (the attempt was cancelled): the race already settled the call.
    const onClose = () => {
      if (!settled) refused();
    };
    socket.once("connect", onConnect);
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.on("error", onError);
    socket.once("close", onClose);
  });
}

function garbled(
  description: string,
  port: number,
  answer: Buffer,
  closed = false,
): ConnectFailedError {
  const text = answer.subarray(0, FC_MAX_ANSWER_BYTES).toString("latin1");
  const shown = JSON.stringify(text) + (answer.length > FC_MAX_ANSWER_BYTES ? "…" : "");
  return new ConnectFailedError(
    `${description} answered CONNECT ${port} with ${shown}${closed ? " and closed" : ""}, not "OK <port>": is the path Firecracker's vsock socket (the vsock device's uds_path, not its API socket)?`,
    { details: { address: description, answer: text } },
  );
}

function explainSocket(err: Error, path: string, description: string): string {
  const code = errorLabel(err);
  switch (code) {
    case "ENOENT":
      return `no Firecracker vsock socket at ${path} (ENOENT) for ${description}: is the VM running, with a vsock device whose uds_path is ${path}?`;
    case "ECONNREFUSED":
      return `nothing listens on ${path} (ECONNREFUSED) for ${description}: the socket file is there but Firecracker is not running (left over from a VM that exited?)`;
    case "EACCES":
    case "EPERM":
      return `permission denied connecting to ${path} (${code}) for ${description}: check the socket file's permissions (a jailed Firecracker's socket is inside its chroot) and which user you run as`;
    case "ENOTSOCK":
      return `${path} is not a socket (ENOTSOCK): give the vsock device's uds_path`;
    default:
      return `cannot connect to ${path} for ${description} (${code}): ${err.message}`;
  }
}

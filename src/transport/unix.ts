/**
 * Unix domain sockets (`unix:PATH`). Listening replaces a stale socket file left by a process
 * that died, but only after checking that nothing answers on it, and removes its own file on
 * close. Note that a Unix socket has no reset: a peer's `abort()` reaches us as an error only when
 * bytes were in flight to it, and otherwise looks like a normal end of stream.
 */
import { lstat, stat, unlink } from "node:fs/promises";
import net from "node:net";
import { dirname } from "node:path";
import {
  AddressInUseError,
  ConnectFailedError,
  InvalidAddressError,
  ListenFailedError,
} from "../errors.ts";
import { formatAddress } from "./address.ts";
import { raceCallOptions, throwIfDone } from "./call-options.ts";
import { errorLabel, NodeStreamTransport } from "./node-stream.ts";
import type { SlabReads } from "./slab-reads.ts";
import { connectSocket, NetListener, startListening } from "./socket.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";

/**
 * The longest socket path the kernel takes (`sun_path` less its NUL). Longer paths are refused
 * here: some libuv versions silently truncate them and would bind somewhere else.
 */
export const MAX_UNIX_PATH_BYTES = process.platform === "linux" ? 107 : 103;

/**
 * Connects to a Unix socket. Fails with CONNECT_FAILED, or the signal's reason. A failure that
 * waiting cannot heal has `details.dialAgain` false: see `cannotHeal`.
 */
export async function connectUnix(path: string, options?: CallOptions): Promise<Transport> {
  const description = describe(path);
  try {
    return await connectSocket(
      { path },
      description,
      options,
      (err) => explainConnect(err, description),
      (socket, reads) => wrap(socket, description, reads),
    );
  } catch (err) {
    if (!(err instanceof ConnectFailedError) || !(err.cause instanceof Error)) throw err;
    const why = await cannotHeal(err.cause, path, description);
    if (why === undefined) throw err;
    throw new ConnectFailedError(why, {
      cause: err.cause,
      details: { ...err.details, dialAgain: false },
    });
  }
}

/**
 * Why a failed connect cannot succeed by waiting, or undefined if it may (an agent starting up
 * creates its socket in a moment, and a stale socket file answers again once it restarts).
 * A missing socket in a folder that exists is worth waiting for; one whose folder does not exist
 * is a wrong path (an agent creates its socket, not the folders above it). A path that is not a
 * socket, and a socket this user may not open, stay so.
 */
async function cannotHeal(
  err: Error,
  path: string,
  description: string,
): Promise<string | undefined> {
  const code = errorLabel(err);
  switch (code) {
    case "ENOENT": {
      const folder = dirname(path);
      const there = await stat(folder).then(
        (s) => s.isDirectory(),
        () => false,
      );
      return there
        ? undefined
        : `no socket at ${description}: its folder ${folder} does not exist (ENOENT); is the path right?`;
    }
    case "ENOTDIR":
      return `no socket at ${description}: a part of the path is not a folder (ENOTDIR); is the path right?`;
    case "ECONNREFUSED":
    case "ENOTSOCK": {
      const kind = await lstat(path).then(
        (s) => (s.isSocket() ? undefined : s.isDirectory() ? "a folder" : "a file"),
        () => undefined,
      );
      return kind === undefined
        ? undefined
        : `${description} is ${kind}, not a socket (${code}): is the path right?`;
    }
    case "EACCES":
    case "EPERM":
      return explainConnect(err, description);
    default:
      return undefined;
  }
}

/**
 * Listens on a Unix socket, replacing a stale socket file that nobody answers on. `presentAs`
 * names the listener and its connections when the socket stands for another kind of address
 * (Firecracker's `fc:PATH:PORT` is a socket at `PATH_PORT`); errors name the socket.
 */
export async function listenUnix(
  path: string,
  options?: CallOptions,
  presentAs?: string,
): Promise<Listener> {
  const description = describe(path);
  const name = presentAs ?? description;
  const onDeadline = () =>
    new ListenFailedError(`listening on ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  const attempt = (async () => {
    let server = net.createServer({ allowHalfOpen: true });
    try {
      await startListening(server, { path });
    } catch (err) {
      if (errorLabel(err) !== "EADDRINUSE") throw await bindFailed(err, path, description);
      await removeStaleSocket(path, description);
      server = net.createServer({ allowHalfOpen: true });
      try {
        await startListening(server, { path });
      } catch (again) {
        if (errorLabel(again) !== "EADDRINUSE") throw await bindFailed(again, path, description);
        throw new AddressInUseError(
          `${description} was taken by another process while the stale socket file was replaced`,
          { cause: again, details: { address: description } },
        );
      }
    }
    // The listener takes connections from now on: one that arrives while the socket file is
    // looked at would otherwise sit unread on the server, and its HELLO go unanswered.
    const ours = lstat(path).then(
      (s) => s.ino,
      () => undefined,
    );
    return new NetListener(
      server,
      name,
      (socket) => wrap(socket, name),
      async () => removeOwnSocket(path, await ours, description),
    );
  })();
  return await raceCallOptions(attempt, options, {
    onDeadline,
    cancel: () => {},
    discard: (listener) => void listener.close().catch(() => {}),
  });
}

function describe(path: string): string {
  const description = formatAddress({ kind: "unix", path });
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_UNIX_PATH_BYTES) {
    throw new InvalidAddressError(
      `invalid address ${JSON.stringify(description)}: the socket path is ${bytes} bytes, longer than the ${MAX_UNIX_PATH_BYTES} this system allows; use a shorter path`,
      { details: { address: description, bytes, max: MAX_UNIX_PATH_BYTES } },
    );
  }
  return description;
}

function wrap(socket: net.Socket, description: string, reads?: SlabReads): Transport {
  return new NodeStreamTransport(socket, socket, { description, redialable: true, reads });
}

function explainConnect(err: Error, description: string): string {
  const code = errorLabel(err);
  switch (code) {
    case "ECONNREFUSED":
      return `no agent listening at ${description} (ECONNREFUSED): is the agent running?`;
    case "ENOENT":
      return `no socket at ${description} (ENOENT): is the agent running, and is the path right?`;
    case "EACCES":
    case "EPERM":
      return `permission denied connecting to ${description} (${code}): check the socket file's permissions and which user you run as`;
    case "ENOTSOCK":
      return `${description} is not a socket (ENOTSOCK): is the path right?`;
    case "EAGAIN":
      return `the agent at ${description} is not accepting connections (EAGAIN): its backlog is full; is it overloaded or stuck?`;
    default:
      return `cannot connect to ${description} (${code}): ${err.message}`;
  }
}

/** libuv reports a missing folder as EACCES when binding a socket, so look before blaming permissions. */
async function bindFailed(
  err: unknown,
  path: string,
  description: string,
): Promise<ListenFailedError> {
  if (errorLabel(err) === "EACCES") {
    const folder = await stat(dirname(path)).catch((e: unknown) => e);
    if (folder instanceof Error) return listenFailed(folder, description, err);
  }
  return listenFailed(err, description);
}

function listenFailed(err: unknown, description: string, cause = err): ListenFailedError {
  const code = errorLabel(err);
  let message: string;
  switch (code) {
    case "EACCES":
    case "EPERM":
      message = `permission denied creating ${description} (${code}): check the folder's permissions`;
      break;
    case "ENOENT":
    case "ENOTDIR":
      message = `cannot create ${description} (${code}): the folder does not exist`;
      break;
    default:
      message = `cannot listen on ${description} (${code}): ${err instanceof Error ? err.message : String(err)}`;
  }
  return new ListenFailedError(message, { cause, details: { address: description } });
}

/**
 * Unlinks the socket file at `path` only if nothing answers on it: a live agent's socket must
 * never be taken over, and a file that is not a socket is never removed.
 */
async function removeStaleSocket(path: string, description: string): Promise<void> {
  let stat: Awaited<ReturnType<typeof lstat>>;
  try {
    stat = await lstat(path);
  } catch (err) {
    if (errorLabel(err) === "ENOENT") return;
    throw listenFailed(err, description);
  }
  if (!stat.isSocket()) {
    throw new AddressInUseError(
      `${description} exists and is not a socket; guestlink will not remove it: choose another path, or remove the file yourself`,
      { details: { address: description } },
    );
  }
  const answer = await probe(path);
  if (answer === "connected" || answer === "EAGAIN") {
    throw new AddressInUseError(
      `another process is listening at ${description}: stop it, or choose another path`,
      { details: { address: description } },
    );
  }
  if (answer === "ENOENT") return;
  if (answer !== "ECONNREFUSED") {
    throw new ListenFailedError(
      `cannot tell whether ${description} is still in use (${answer}): remove it if it is stale`,
      { details: { address: description } },
    );
  }
  try {
    await unlink(path);
  } catch (err) {
    if (errorLabel(err) !== "ENOENT") throw listenFailed(err, description);
  }
}

/** Tries to connect to `path`: "connected", or the errno code of the failure. */
function probe(path: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ path });
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (err) => resolve(errorLabel(err)));
  });
}

/** Removes our socket file, unless something else has since replaced it. */
async function removeOwnSocket(
  path: string,
  ino: number | undefined,
  description: string,
): Promise<void> {
  try {
    const now = await lstat(path);
    if (ino !== undefined && now.ino === ino) await unlink(path);
  } catch (err) {
    if (errorLabel(err) === "ENOENT") return;
    throw new ListenFailedError(
      `cannot remove the socket file of ${description} (${errorLabel(err)})`,
      {
        cause: err,
        details: { address: description },
      },
    );
  }
}

/**
 * Accepting connections on a listening socket descriptor that `net.Server` will not take: an
 * AF_VSOCK socket. `server.listen({ fd })` asks libuv what the descriptor is, and libuv knows
 * only Unix and TCP sockets; `server.listen(handle)` takes only TCP handles. libuv's pipe handle,
 * though, listens and accepts on any stream socket once it is opened on one (the accept is
 * `accept4` on the descriptor, driven by epoll), and each connection it accepts comes as a pipe
 * handle of its own, which `net.Socket` wraps as it does in `net.Server`. So this is the same
 * accept loop as `net.Server`'s (measured: 3000 sequential connect-echo-close rounds over a Unix
 * socket take the same time through either), with no thread and no native code of ours.
 */
import { EventEmitter } from "node:events";
import { closeSync } from "node:fs";
import net from "node:net";
import { getSystemErrorName } from "node:util";
import { pipeBinding } from "./fd-socket.ts";

type ServerHandle = {
  open(fd: number): number;
  listen(backlog: number): number;
  close(callback?: () => void): void;
  onconnection: ((status: number, client: { fd: number } | undefined) => void) | null;
};
/** An errno-style error, as Node's own are: `code` is the errno name. */
function uvError(status: number, syscall: string): Error {
  let code: string;
  try {
    code = getSystemErrorName(status);
  } catch {
    code = `E${-status}`;
  }
  return Object.assign(new Error(`${syscall} ${code}`), { code, errno: status, syscall });
}

export interface FdServerOptions {
  /** The listen backlog; libuv calls `listen()` again with it (harmless on a listening socket). */
  backlog: number;
  /** Passed to each accepted `net.Socket`. Default true. */
  allowHalfOpen?: boolean;
  /** Called with each accepted socket and its descriptor before 'connection' is emitted. */
  onAccepted?: (socket: net.Socket, fd: number) => void;
}

/**
 * Emits 'connection' (a `net.Socket`) for each accepted connection and 'error' when accepting
 * fails, as `net.Server` does; `close()` stops listening and closes the descriptor.
 */
export class FdServer extends EventEmitter {
  readonly #handle: ServerHandle;
  #closed = false;

  /** Takes ownership of the listening descriptor `fd`, also when it throws. */
  constructor(fd: number, options: FdServerOptions) {
    super();
    const b = pipeBinding<ServerHandle>();
    if (b === null) {
      closeSync(fd);
      throw new Error("this Node has no pipe_wrap binding to accept on a descriptor with");
    }
    const handle = new b.Pipe(b.constants.SOCKET);
    const opened = handle.open(fd);
    if (opened !== 0) {
      closeSync(fd);
      throw uvError(opened, "open");
    }
    const allowHalfOpen = options.allowHalfOpen ?? true;
    handle.onconnection = (status, client) => {
      if (status !== 0 || client === undefined) {
        this.emit("error", uvError(status, "accept"));
        return;
      }
      const socket = new net.Socket({
        handle: client,
        readable: true,
        writable: true,
        allowHalfOpen,
      } as net.SocketConstructorOpts);
      options.onAccepted?.(socket, client.fd);
      this.emit("connection", socket);
    };
    const listening = handle.listen(options.backlog);
    if (listening !== 0) {
      handle.close();
      throw uvError(listening, "listen");
    }
    this.#handle = handle;
  }

  /** Stops accepting and closes the descriptor; connections already accepted are not touched. */
  close(): this {
    if (this.#closed) return this;
    this.#closed = true;
    this.#handle.onconnection = null;
    this.#handle.close();
    return this;
  }
}

/** Whether `FdServer` can work on this Node. */
export function fdServerSupported(): boolean {
  return pipeBinding() !== null;
}

/**
 * A `net.Socket` over a file descriptor that Node will not wrap itself: an AF_VSOCK socket or a
 * virtio-serial character device. `new net.Socket({ fd })` accepts only pipes and TCP/Unix
 * sockets (libuv guesses a character device to be a file, and knows nothing of vsock), and a file
 * is read through libuv's thread pool, which caps a virtio-serial port at about a third of what
 * epoll reaches. libuv's pipe handle polls any descriptor with epoll once it is opened on it, so
 * this opens one on `fd` and hands it to `net.Socket`. The pipe handle comes from Node's
 * `pipe_wrap` binding, which `process.binding` still serves on Node 20 to 24; where it is gone,
 * `fdSocketSupported()` says so and callers fall back or fail with a clear error.
 */
import net from "node:net";

type PipeHandle = { open(fd: number): number };
/** Node's `pipe_wrap` binding; `H` is the part of the pipe handle a caller uses. */
export type PipeBinding<H = PipeHandle> = {
  Pipe: new (type: number) => H;
  constants: { SOCKET: number };
};

let binding: PipeBinding<unknown> | null | undefined;

/** The `pipe_wrap` binding, or null where this Node has none. */
export function pipeBinding<H = PipeHandle>(): PipeBinding<H> | null {
  if (binding === undefined) {
    try {
      const b = (process as unknown as { binding(name: string): unknown }).binding(
        "pipe_wrap",
      ) as Partial<PipeBinding<unknown>>;
      binding =
        typeof b.Pipe === "function" && b.constants !== undefined
          ? (b as PipeBinding<unknown>)
          : null;
    } catch {
      binding = null;
    }
  }
  return binding as PipeBinding<H> | null;
}

/** Whether `fdSocket` can work on this Node. */
export function fdSocketSupported(): boolean {
  return pipeBinding() !== null;
}

/**
 * Wraps an open descriptor (made non-blocking here) in an epoll-driven `net.Socket` that owns it:
 * destroying the socket closes `fd`. Throws an errno-style error if libuv cannot poll it.
 */
export function fdSocket(fd: number, options: { allowHalfOpen?: boolean } = {}): net.Socket {
  const b = pipeBinding();
  if (b === null) throw new Error("this Node has no pipe_wrap binding to poll a descriptor with");
  const handle = new b.Pipe(b.constants.SOCKET);
  const status = handle.open(fd);
  if (status !== 0) {
    const err = new Error(`cannot poll descriptor ${fd} (libuv error ${status})`) as Error & {
      errno: number;
    };
    err.errno = status;
    throw err;
  }
  return new net.Socket({
    handle,
    readable: true,
    writable: true,
    allowHalfOpen: options.allowHalfOpen ?? true,
  } as net.SocketConstructorOpts);
}

/**
 * What the Unix-socket and TCP transports share: connecting a `net.Socket` under
 * `{ signal, deadline }`, listening, and a Listener that hands out accepted connections through
 * async iteration. Sockets are half-open capable (`allowHalfOpen`), so closing our side leaves the
 * peer free to finish sending, as the Transport contract requires.
 */
import net from "node:net";
import { ConnectFailedError, ListenFailedError, TransportClosedError } from "../errors.ts";
import { raceCallOptions, throwIfDone } from "./call-options.ts";
import { errorLabel } from "./node-stream.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";

/** Connects a socket and wraps it; `explain` turns a connect error into a message. */
export async function connectSocket(
  connectOptions: net.NetConnectOpts,
  description: string,
  options: CallOptions | undefined,
  explain: (err: Error) => string,
  wrap: (socket: net.Socket) => Transport,
): Promise<Transport> {
  const onDeadline = () =>
    new ConnectFailedError(`connecting to ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  const socket = net.connect({ ...connectOptions, allowHalfOpen: true });
  const connected = new Promise<net.Socket>((resolve, reject) => {
    const onError = (err: Error) => {
      socket.off("connect", onConnect);
      reject(
        new ConnectFailedError(explain(err), {
          cause: err,
          details: { address: description, errno: errorLabel(err) },
        }),
      );
    };
    const onConnect = () => {
      socket.off("error", onError);
      resolve(socket);
    };
    socket.once("error", onError);
    socket.once("connect", onConnect);
  });
  await raceCallOptions(connected, options, {
    onDeadline,
    cancel: () => socket.destroy(),
    discard: (s) => s.destroy(),
  });
  return wrap(socket);
}

/** Starts `server` listening; rejects with the listen error (mapped by the caller). */
export function startListening(
  server: net.Server,
  listenOptions: net.ListenOptions,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      server.off("listening", onListening);
      reject(err);
    };
    const onListening = () => {
      server.off("error", onError);
      resolve();
    };
    server.once("error", onError);
    server.once("listening", onListening);
    server.listen(listenOptions);
  });
}

type Waiter = { resolve(r: IteratorResult<Transport>): void; reject(err: unknown): void };

/**
 * Accepted connections, in order, for one consumer. Connections accepted but not yet taken are
 * aborted when the listener closes; those already taken belong to the consumer.
 */
export class NetListener implements Listener {
  readonly address: string;
  readonly #server: net.Server;
  readonly #wrap: (socket: net.Socket) => Transport;
  readonly #release: () => Promise<void>;
  #accepted: Transport[] = [];
  #waiters: Waiter[] = [];
  #error: Error | undefined;
  #closing: Promise<void> | undefined;
  #iterated = false;

  /**
   * @param server a server that is already listening.
   * @param release frees the address once the server stopped (removes a Unix socket file).
   */
  constructor(
    server: net.Server,
    address: string,
    wrap: (socket: net.Socket) => Transport,
    release: () => Promise<void>,
  ) {
    this.address = address;
    this.#server = server;
    this.#wrap = wrap;
    this.#release = release;
    server.on("connection", (socket) => this.#onConnection(socket));
    server.on("error", (err) => this.#onError(err));
  }

  [Symbol.asyncIterator](): AsyncIterator<Transport> {
    if (this.#iterated) {
      throw new TypeError(`the listener on ${this.address} already has a reader`);
    }
    this.#iterated = true;
    return {
      next: () => this.#next(),
      // Leaving the accept loop early means no more connections are wanted.
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }

  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    // Closing the server closes the listening handle now; its callback would wait for every
    // accepted connection to end, which belongs to the consumer, so it is not awaited.
    this.#server.close();
    const unclaimed = this.#accepted;
    this.#accepted = [];
    const reason = new TransportClosedError(`the listener on ${this.address} was closed`);
    for (const t of unclaimed) t.abort(reason);
    this.#closing = this.#release();
    this.#wake();
    return this.#closing;
  }

  #next(): Promise<IteratorResult<Transport>> {
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      this.#wake();
    });
  }

  #onConnection(socket: net.Socket): void {
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    this.#accepted.push(this.#wrap(socket));
    this.#wake();
  }

  #onError(err: Error): void {
    // After listening, the server reports only accept failures (EMFILE and the like): the
    // consumer hears of it, and the address is released rather than left half-working.
    this.#error ??= new ListenFailedError(
      `accepting connections on ${this.address} failed (${errorLabel(err)})`,
      { cause: err },
    );
    void this.close().catch(() => {});
    this.#wake();
  }

  #wake(): void {
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters[0] as Waiter;
      const transport = this.#accepted.shift();
      if (transport !== undefined) {
        this.#waiters.shift();
        waiter.resolve({ done: false, value: transport });
      } else if (this.#error !== undefined) {
        this.#waiters.shift();
        waiter.reject(this.#error);
      } else if (this.#closing !== undefined) {
        this.#waiters.shift();
        waiter.resolve({ done: true, value: undefined });
      } else {
        return;
      }
    }
  }
}

/**
 * What the Unix-socket and TCP transports share: connecting a `net.Socket` under
 * `{ signal, deadline }`, listening, and a Listener that hands out accepted connections through
 * async iteration. Sockets are half-open capable (`allowHalfOpen`), so closing our side leaves the
 * peer free to finish sending, as the Transport contract requires.
 */
import net from "node:net";
import { ConnectFailedError, ListenFailedError } from "../errors.ts";
import { AcceptQueue } from "./accept-queue.ts";
import { raceCallOptions, throwIfDone } from "./call-options.ts";
import { errorLabel } from "./node-stream.ts";
import { SlabReads } from "./slab-reads.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";

/** Connects a socket and wraps it; `explain` turns a connect error into a message. */
export async function connectSocket(
  connectOptions: net.NetConnectOpts,
  description: string,
  options: CallOptions | undefined,
  explain: (err: Error) => string,
  wrap: (socket: net.Socket, reads: SlabReads) => Transport,
): Promise<Transport> {
  const onDeadline = () =>
    new ConnectFailedError(`connecting to ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  const reads = new SlabReads();
  const socket = net.connect({ ...connectOptions, allowHalfOpen: true, onread: reads.onread });
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
  return wrap(socket, reads);
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

/** A listening `net.Server` (Unix socket or TCP): its connections, through an AcceptQueue. */
export class NetListener implements Listener {
  readonly address: string;
  readonly #server: net.Server;
  readonly #wrap: (socket: net.Socket) => Transport;
  readonly #release: () => Promise<void>;
  readonly #queue: AcceptQueue;
  #closing: Promise<void> | undefined;

  /**
   * @param server a server that is already listening.
   * @param release frees the address once the server stopped (removes a Unix socket file).
   * @param event the server's event for a connection ready to use (TLS: "secureConnection").
   */
  constructor(
    server: net.Server,
    address: string,
    wrap: (socket: net.Socket) => Transport,
    release: () => Promise<void>,
    event: "connection" | "secureConnection" = "connection",
  ) {
    this.address = address;
    this.#server = server;
    this.#wrap = wrap;
    this.#release = release;
    this.#queue = new AcceptQueue(address);
    server.on(event, (socket: net.Socket) => this.#onConnection(socket));
    server.on("error", (err) => this.#onError(err));
  }

  [Symbol.asyncIterator](): AsyncIterator<Transport> {
    return this.#queue.iterator(() => this.close());
  }

  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    // Closing the server closes the listening handle now; its callback would wait for every
    // accepted connection to end, which belongs to the consumer, so it is not awaited.
    this.#server.close();
    this.#closing = this.#release();
    this.#queue.close();
    return this.#closing;
  }

  #onConnection(socket: net.Socket): void {
    if (this.#queue.closed) {
      socket.destroy();
      return;
    }
    this.#queue.push(this.#wrap(socket));
  }

  #onError(err: Error): void {
    // After listening, the server reports only accept failures (EMFILE and the like): the
    // consumer hears of it, and the address is released rather than left half-working.
    this.#queue.fail(
      new ListenFailedError(
        `accepting connections on ${this.address} failed (${errorLabel(err)})`,
        {
          cause: err,
        },
      ),
    );
    void this.close().catch(() => {});
  }
}

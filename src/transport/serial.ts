/**
 * The guest's side of a virtio-serial port (`serial:/dev/virtio-ports/NAME`). The host side is
 * the hypervisor's socket for the port (QEMU's chardev: `unix:PATH`), so the guest never sees a
 * host come and go, and this listener's connections are made up:
 *
 * - The port is one byte stream for the life of the agent. The listener hands out one connection
 *   at a time on it; when the session drops that connection (damaged frames, a dead host), the
 *   next one begins on the same port with the bytes not yet read. Connections say
 *   `reconnectsInBand`, so the session takes a host's HELLO in mid-stream as a new connection.
 * - While no host is connected, `read()` on the port returns 0 at once. That is "no host yet",
 *   not an end: the port is closed and opened again a little later (a read on a closed port is
 *   the only way to learn that a host came). Bytes sent meanwhile are dropped: no host would get
 *   them, and the session's resume sends again whatever the host did not acknowledge.
 * - The port is polled with epoll (see fd-socket.ts): libuv's thread pool, which reads files,
 *   caps host-to-guest traffic at about a third of that, and a read blocked in it keeps the
 *   process from exiting.
 * - A port is opened by one process at a time (a second open fails with EBUSY).
 */
import { constants, openSync } from "node:fs";
import type { Duplex } from "node:stream";
import { ListenFailedError, TransportClosedError, TransportUnsupportedError } from "../errors.ts";
import { formatAddress } from "./address.ts";
import { throwIfDone } from "./call-options.ts";
import { fdSocket, fdSocketSupported } from "./fd-socket.ts";
import { abortedError, CloseLatch, SendGate } from "./gates.ts";
import { Inbound } from "./inbound.ts";
import { errorLabel, READ_HIGH_WATER_MARK_BYTES } from "./node-stream.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";

/** How long to wait before opening a port again after it said no host is connected. */
export const SERIAL_REOPEN_MS = 20;
/** The longest wait between opens after the port failed (not just "no host"). */
const SERIAL_REOPEN_MAX_MS = 1_000;
/** How long a closed listener waits for its last bytes to leave before it closes the port. */
const SERIAL_RELEASE_MS = 2_000;

/** Opens the port's device: an epoll-driven stream over it. */
export type OpenPort = () => Duplex;

/** Runs `fn` after `ms` unless cancelled. Tests pass their fake clock's. */
export type Schedule = (ms: number, fn: () => void) => { cancel(): void };

const realTime: Schedule = (ms, fn) => {
  const timer = setTimeout(fn, ms);
  return { cancel: () => clearTimeout(timer) };
};

/** Listens on a guest's virtio-serial port. Fails with LISTEN_FAILED or TRANSPORT_UNSUPPORTED. */
export async function listenSerial(path: string, options?: CallOptions): Promise<Listener> {
  const description = formatAddress({ kind: "serial", path });
  throwIfDone(
    options,
    () =>
      new ListenFailedError(`opening ${description} did not finish before the deadline`, {
        details: { address: description, reason: "deadline" },
      }),
  );
  if (!fdSocketSupported()) {
    throw new TransportUnsupportedError(
      `${description} needs Node's pipe_wrap binding to poll the port, and this Node has none: use tcp: or vsock: in this guest`,
      { details: { kind: "serial" } },
    );
  }
  const open: OpenPort = () =>
    fdSocket(openSync(path, constants.O_RDWR | constants.O_NONBLOCK | constants.O_NOCTTY));
  let first: Duplex;
  try {
    first = open();
  } catch (err) {
    throw new ListenFailedError(explainOpen(err, description), {
      cause: err,
      details: { address: description, errno: errorLabel(err) },
    });
  }
  return new SerialListener(description, open, first);
}

function explainOpen(err: unknown, description: string): string {
  const code = errorLabel(err);
  switch (code) {
    case "ENOENT":
      return `no port at ${description} (ENOENT): is the VM given a virtserialport of that name, and is /dev/virtio-ports/ filled in (by udev, or from /sys/class/virtio-ports/*/name)?`;
    case "EBUSY":
      return `${description} is already open in another process (EBUSY): a port has one reader; is another agent running?`;
    case "EACCES":
    case "EPERM":
      return `permission denied opening ${description} (${code}): run the agent as a user that may open the port`;
    default:
      return `cannot open ${description} (${code})`;
  }
}

/**
 * The port and the connections made up on it. Exported for tests, which give it a port of their
 * own (`openPort`) that behaves as QEMU's does.
 */
export class SerialListener implements Listener {
  readonly address: string;
  readonly #open: OpenPort;
  readonly #schedule: Schedule;
  #port: Duplex | undefined;
  /** Connections that ended with writes still in the port, whose close waits for them. */
  readonly #flushing = new Set<SerialConnection>();
  /** The port a closed listener is waiting to close (see `#release`). */
  #draining: Duplex | undefined;
  #reopenTimer: { cancel(): void } | undefined;
  #reopenMs = SERIAL_REOPEN_MS;
  #closed = false;
  #current: SerialConnection | undefined;
  /** Bytes read that no connection has taken yet (between connections). */
  #carry: Uint8Array[] = [];
  #paused = false;
  #waiter: ((result: IteratorResult<Transport>) => void) | undefined;
  #iterated = false;

  constructor(description: string, open: OpenPort, first?: Duplex, schedule = realTime) {
    this.address = description;
    this.#open = open;
    this.#schedule = schedule;
    if (first !== undefined) this.#attach(first);
    else this.#reopen();
  }

  [Symbol.asyncIterator](): AsyncIterator<Transport> {
    if (this.#iterated) {
      throw new TypeError(`${this.address} is already being accepted from: a port has one reader`);
    }
    this.#iterated = true;
    return {
      next: () => this.#next(),
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }

  /**
   * Stops making connections. Like a socket listener's, it leaves the current connection be: the
   * port stays open (and is reopened while no host is there) until that connection is over, so a
   * session closing gracefully still gets its last frames to the host.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#waiter?.({ done: true, value: undefined });
    this.#waiter = undefined;
    if (this.#current === undefined) this.#release();
  }

  /** Closes the port for good once what was written to it has gone (or no host took it). */
  #release(): void {
    this.#reopenTimer?.cancel();
    const port = this.#port;
    this.#port = undefined;
    if (port === undefined) return;
    if (port.writableLength === 0) {
      port.destroy();
      return;
    }
    this.#draining = port;
    const done = () => {
      timer.cancel();
      this.#draining = undefined;
      port.destroy();
      this.#drained();
    };
    port.once("drain", done);
    port.once("error", done);
    // A host that never reads would hold the process open: give it a little while, then go.
    const timer = this.#schedule(SERIAL_RELEASE_MS, done);
  }

  #next(): Promise<IteratorResult<Transport>> {
    if (this.#closed) return Promise.resolve({ done: true, value: undefined });
    if (this.#current === undefined) return Promise.resolve(this.#begin());
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }

  /** A new connection, fed first with what was read and not taken. */
  #begin(): IteratorResult<Transport> {
    const connection = new SerialConnection(this);
    this.#current = connection;
    const carried = this.#carry;
    this.#carry = [];
    for (const chunk of carried) this.#deliver(chunk);
    this.#resumeReading();
    return { done: false, value: connection };
  }

  /** `connection` is over; its unread bytes go to the next one. For SerialConnection only. */
  ended(connection: SerialConnection, unread: Uint8Array[]): void {
    if (this.#current !== connection) return;
    this.#current = undefined;
    // Its close waits for what it wrote to leave; the port's next drain must reach it.
    if (!this.flushed) this.#flushing.add(connection);
    if (this.#closed) {
      this.#release();
      return;
    }
    this.#carry.push(...unread);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter !== undefined && !this.#closed) waiter(this.#begin());
  }

  /** Writes to the port; while no host is connected the bytes are dropped (see the top). */
  write(chunks: readonly Uint8Array[]): boolean {
    const port = this.#port;
    if (port === undefined) return true;
    port.cork();
    for (const chunk of chunks) if (chunk.length > 0) port.write(chunk);
    port.uncork();
    return !port.writableNeedDrain;
  }

  get needsDrain(): boolean {
    return this.#port?.writableNeedDrain ?? false;
  }

  /** Whether everything written has left for the host (or was dropped). */
  get flushed(): boolean {
    return ((this.#port ?? this.#draining)?.writableLength ?? 0) === 0;
  }

  /** The consumer took bytes: read on if it has room. For SerialConnection only. */
  resumeIfRoom(): void {
    this.#resumeReading();
  }

  #resumeReading(): void {
    if (!this.#paused || this.#port === undefined) return;
    if (this.#current !== undefined && !this.#current.hasRoom) return;
    this.#paused = false;
    this.#port.resume();
  }

  #attach(port: Duplex): void {
    this.#port = port;
    this.#paused = false;
    port.on("data", (chunk: Uint8Array) => {
      if (this.#port !== port) return;
      if (!this.#deliver(chunk)) {
        this.#paused = true;
        port.pause();
      }
    });
    port.on("drain", () => this.#drained());
    // A read of 0 bytes: no host is connected. Look again shortly.
    port.once("end", () => this.#lost(port, SERIAL_REOPEN_MS));
    port.on("error", () => this.#lost(port, Math.min(this.#reopenMs * 2, SERIAL_REOPEN_MAX_MS)));
    port.once("close", () => this.#lost(port, this.#reopenMs));
  }

  /** Queues `chunk` for the current connection; false once reading should pause. */
  #deliver(chunk: Uint8Array): boolean {
    const current = this.#current;
    if (current === undefined) {
      this.#carry.push(chunk);
      return false;
    }
    return current.push(chunk);
  }

  /** The port's buffer drained (or the port is gone): wake whoever waits on that. */
  #drained(): void {
    this.#current?.drained();
    for (const connection of this.#flushing) connection.drained();
    if (this.flushed) this.#flushing.clear();
  }

  #lost(port: Duplex, delayMs: number): void {
    if (this.#port !== port) return;
    this.#port = undefined;
    port.destroy();
    // Writes waiting for this port are gone with it: wake the sender, whose bytes were dropped.
    this.#drained();
    if (this.#closed && this.#current === undefined) return;
    this.#reopenMs = delayMs;
    this.#reopenTimer = this.#schedule(delayMs, () => this.#reopen());
  }

  #reopen(): void {
    this.#reopenTimer = undefined;
    if (this.#closed && this.#current === undefined) return;
    let port: Duplex;
    try {
      port = this.#open();
    } catch {
      // The port went away (the device was unplugged) or is busy: keep trying, more slowly.
      this.#reopenMs = Math.min(this.#reopenMs * 2, SERIAL_REOPEN_MAX_MS);
      this.#reopenTimer = this.#schedule(this.#reopenMs, () => this.#reopen());
      return;
    }
    this.#attach(port);
  }
}

/** One connection made up on the port: the bytes from now until the session drops it. */
class SerialConnection implements Transport {
  readonly description: string;
  readonly reconnectsInBand = true;
  /** A virtio-serial port keeps stale bytes and loses what is in flight when the host goes. */
  readonly lossy = true;
  readonly #port: SerialListener;
  readonly #inbound: Inbound;
  readonly #send = new SendGate();
  readonly #close = new CloseLatch();
  #over = false;

  constructor(port: SerialListener) {
    this.#port = port;
    this.description = port.address;
    this.#inbound = new Inbound(port.address, READ_HIGH_WATER_MARK_BYTES, () =>
      port.resumeIfRoom(),
    );
  }

  get hasRoom(): boolean {
    return this.#inbound.belowHighWater;
  }

  push(chunk: Uint8Array): boolean {
    return this.#inbound.push(chunk);
  }

  drained(): void {
    this.#send.wake();
    if (this.#close.pending && this.#port.flushed) this.#close.finish();
  }

  send(chunks: readonly Uint8Array[]): boolean {
    this.#send.check();
    return this.#port.write(chunks);
  }

  drain(): Promise<void> {
    return this.#send.drain(!this.#port.needsDrain);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.#inbound.iterator();
  }

  close(): Promise<void> {
    if (this.#close.promise !== undefined) return this.#close.promise;
    const closing = this.#close.begin(this.#over);
    this.#finish(new TransportClosedError(`${this.description} is closed`));
    if (this.#port.flushed) this.#close.finish();
    return closing;
  }

  abort(reason?: Error): void {
    if (this.#over && !this.#close.pending) return;
    this.#finish(abortedError(this.description, reason));
    this.#close.finish();
  }

  /** Ends this connection; what the session has not read yet goes to the next. */
  #finish(err: TransportClosedError): void {
    if (this.#over) return;
    this.#over = true;
    this.#send.stop(err);
    const unread = this.#inbound.takeQueued();
    this.#inbound.fail(err, true);
    this.#port.ended(this, unread);
  }
}

/**
 * A virtio-serial port as QEMU and a Linux guest make it, in memory, with the behaviour measured
 * on a real one (issue 6):
 *
 * - the guest opens the port once at a time (a second open fails with EBUSY);
 * - while no host is connected, a read returns 0 at once (the stream ends) unless bytes are held;
 * - bytes the guest writes while no host is connected wait, and go to the next host to connect;
 * - bytes the host sent before the guest opened the port are held and delivered;
 * - one host connection at a time; bytes in flight when the host disconnects are lost;
 * - closing the port in the guest discards what it has not read.
 */
import { Duplex } from "node:stream";
import { memoryPair } from "../../src/transport/memory.ts";
import type { Transport } from "../../src/transport/transport.ts";

export interface FakeVirtioPortOptions {
  /**
   * Carries each chunk the host sends to the guest later (`deliver` runs after the port's
   * latency, on the test's clock). Chunks not yet carried when the host disconnects are lost, as
   * QEMU drops what is still in the socket when it sees the host hang up.
   */
  hostToGuest?: (deliver: () => void) => void;
}

export class FakeVirtioPort {
  readonly #hostToGuest: FakeVirtioPortOptions["hostToGuest"];
  /** Host bytes the guest has not read. */
  #fromHost: Uint8Array[] = [];
  /** Guest bytes waiting for a host. */
  #toHost: Uint8Array[] = [];
  #guest: GuestEnd | undefined;
  #host: Transport | undefined;
  constructor(options: FakeVirtioPortOptions = {}) {
    this.#hostToGuest = options.hostToGuest;
  }

  /** How many times the guest opened the port. */
  opens = 0;
  /** Host bytes lost because the guest closed the port before reading them. */
  discardedBytes = 0;
  /**
   * Called as a guest's read finds no host. The guest's close of the port waits for what it
   * returns: the window in which a host that connects loses what it sends.
   */
  onNoHost: (() => Promise<void> | undefined) | undefined;
  /** The window `onNoHost` opened, which the guest's close waits out. */
  noHostWindow: Promise<void> | undefined;

  /** The guest's `open()` of the device. */
  readonly open = (): Duplex => {
    if (this.#guest !== undefined) {
      throw Object.assign(new Error("EBUSY: resource busy"), { code: "EBUSY" });
    }
    this.opens++;
    const guest = new GuestEnd(this);
    this.#guest = guest;
    queueMicrotask(() => this.pump());
    return guest;
  };

  /** Whether the guest has the port open. */
  get guestOpen(): boolean {
    return this.#guest !== undefined;
  }

  get hostConnected(): boolean {
    return this.#host !== undefined;
  }

  /** A host connects to the chardev socket: its end of the connection. */
  connectHost(): Transport {
    if (this.#host !== undefined) throw new Error("QEMU serves one host connection at a time");
    const [host, far] = memoryPair({ highWaterMark: 64 * 1024 });
    this.#host = far;
    const held = this.#toHost;
    this.#toHost = [];
    if (held.length > 0) far.send(held);
    void (async () => {
      try {
        for await (const chunk of far) {
          const deliver = () => {
            if (this.#host !== far) return; // the host hung up first: lost
            this.#fromHost.push(chunk);
            this.pump();
          };
          if (this.#hostToGuest === undefined) deliver();
          else this.#hostToGuest(deliver);
        }
      } catch {
        // the host went away
      }
      if (this.#host === far) this.disconnectHost();
    })();
    return host;
  }

  /** The host's connection breaks: what was in flight is lost. */
  disconnectHost(): void {
    const host = this.#host;
    if (host === undefined) return;
    this.#host = undefined;
    host.abort(new Error("host disconnected"));
    this.pump();
  }

  /** For GuestEnd. */
  fromGuest(chunk: Uint8Array): void {
    if (this.#host === undefined) {
      this.#toHost.push(chunk);
      return;
    }
    try {
      this.#host.send([chunk]);
    } catch {
      // The host is going away: bytes in flight are lost.
      this.disconnectHost();
    }
  }

  /** For GuestEnd. */
  guestClosed(guest: GuestEnd): void {
    if (this.#guest !== guest) return;
    this.#guest = undefined;
    for (const chunk of this.#fromHost) this.discardedBytes += chunk.length;
    this.#fromHost = [];
  }

  /** For GuestEnd: hand the guest what it may read now. */
  pump(): void {
    const guest = this.#guest;
    if (guest === undefined || !guest.reading || guest.eof) return;
    while (this.#fromHost.length > 0) {
      guest.reading = guest.push(this.#fromHost.shift() as Uint8Array);
      if (!guest.reading) return;
    }
    if (this.#host === undefined && !guest.eof) {
      guest.eof = true;
      guest.push(null);
      this.noHostWindow = this.onNoHost?.();
    }
  }
}

class GuestEnd extends Duplex {
  readonly #port: FakeVirtioPort;
  reading = false;
  eof = false;

  constructor(port: FakeVirtioPort) {
    super({ allowHalfOpen: true });
    this.#port = port;
  }

  override _read(): void {
    this.reading = true;
    this.#port.pump();
  }

  override _write(chunk: Uint8Array, _encoding: BufferEncoding, done: () => void): void {
    this.#port.fromGuest(chunk);
    done();
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    const port = this.#port;
    const window = port.noHostWindow;
    port.noHostWindow = undefined;
    if (window === undefined) {
      port.guestClosed(this);
      done(err);
      return;
    }
    void window.then(() => {
      port.guestClosed(this);
      done(err);
    });
  }
}

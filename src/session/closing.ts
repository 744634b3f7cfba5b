/**
 * Closing a session gracefully (docs/protocol.md 9.6): GOAWAY either way stops new calls, the
 * calls and streams in flight finish, then the transport is closed. When one side cannot see the
 * connection end (a guest on a virtio-serial port, `confirmsClose`), the port loses what the host
 * sent last if it hangs up before the guest read it; so while closing each side acknowledges
 * every frame at once, and a side that is done waits (up to `CLOSE_LINGER_MS`) until the peer has
 * acknowledged all it sent before it goes. A session asked to close while disconnected, owing
 * the peer frames it needs (a call's final RESULT), waits for the peer to resume.
 */
import { type Deferred, deferred } from "../abort.ts";
import type { Clock, Timer } from "./runtime.ts";

/** How long a side whose work is done waits for the peer's last ACK before it closes anyway. */
export const CLOSE_LINGER_MS = 1_000;

/** What closing needs to know of its session, and what it asks of it. */
export interface ClosingPort {
  /** Calls and streams still in flight. */
  busy(): number;
  /** Disconnected, able to resume, owing the peer frames it needs (a call's final RESULT). */
  owesResumedPeer(): boolean;
  /** On a live connection whose close is acknowledged (`confirmsClose`). */
  confirmsOnLive(): boolean;
  /** Sequenced frames sent and not yet acknowledged. */
  unacknowledged(): number;
  /** Acknowledges what arrived, at once. */
  ackNow(): void;
  /** Writes what is queued and closes the transport; the session is over. */
  finish(): void;
}

export class Closing {
  goawaySent = false;
  goawayReceived = false;
  /** Whether closing on the current connection waits for the peer's ACKs (see above). */
  confirmed = false;
  #requested: Deferred<void> | undefined;
  #linger: Timer | undefined;
  readonly #port: ClosingPort;
  readonly #clock: Clock;

  constructor(port: ClosingPort, clock: Clock) {
    this.#port = port;
    this.#clock = clock;
  }

  /** GOAWAY went either way, or a close was asked for: no new calls. */
  get underway(): boolean {
    return this.goawaySent || this.goawayReceived || this.#requested !== undefined;
  }

  get requested(): boolean {
    return this.#requested !== undefined;
  }

  /** Whether each frame received is acknowledged at once. */
  get acksAtOnce(): boolean {
    return this.confirmed && (this.goawaySent || this.goawayReceived);
  }

  /** The close asked for; settles when the session has ended. */
  request(): Promise<void> {
    this.#requested ??= deferred<void>();
    return this.#requested.promise;
  }

  /** Closes if nothing is left to wait for; call whenever that may have changed. */
  maybeFinish(): void {
    const port = this.#port;
    if (port.busy() > 0 || port.owesResumedPeer()) return;
    if (port.confirmsOnLive()) {
      port.ackNow(); // our last word: the peer may be waiting for it
      if (port.unacknowledged() > 0) {
        this.#linger ??= this.#clock.setTimer(CLOSE_LINGER_MS, () => {
          this.#linger = undefined;
          port.finish();
        });
        return;
      }
    }
    this.connectionLost(); // a linger that waited for what has now arrived
    port.finish();
  }

  /** The connection is gone: waiting for its ACKs is over (a resume asks again). */
  connectionLost(): void {
    this.#linger?.cancel();
    this.#linger = undefined;
  }

  /** The session ended. */
  ended(): void {
    this.connectionLost();
    this.#requested?.resolve();
  }
}

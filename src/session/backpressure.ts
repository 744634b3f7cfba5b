/**
 * Holding back a peer that would make the session hold unbounded memory (docs/protocol.md 9.9):
 * when as many of its calls as the session runs at once are running (`maxIncomingCalls`, or
 * their CALL frames add up to `maxIncomingCallBytes`), or
 * what we owe it has piled up because it does not read (`maxQueuedBytes`), the session stops
 * reading from it. Not reading is the backpressure that reaches the peer through the transport
 * (its writes block); other sessions are unaffected. Reading resumes when either eases.
 */
import { type Deferred, deferred } from "../abort.ts";

export interface ReadGatePort {
  /** The peer's calls (and notifications) running now. */
  running(): number;
  /** Bytes of the CALL frames of those calls. */
  runningBytes(): number;
  /** Bytes queued toward the peer and not yet taken by its transport. */
  queuedBytes(): number;
  /** The session has ended: nothing is held back any more. */
  ended(): boolean;
}

export class ReadGate {
  readonly #port: ReadGatePort;
  readonly #maxRunning: number;
  readonly #maxRunningBytes: number;
  readonly #maxQueuedBytes: number;
  #waiter: Deferred<void> | undefined;

  constructor(
    port: ReadGatePort,
    limits: { maxIncomingCalls: number; maxIncomingCallBytes: number; maxQueuedBytes: number },
  ) {
    this.#port = port;
    this.#maxRunning = limits.maxIncomingCalls;
    this.#maxRunningBytes = limits.maxIncomingCallBytes;
    this.#maxQueuedBytes = limits.maxQueuedBytes;
  }

  /** Whether reading from the peer must wait now. */
  get closed(): boolean {
    const port = this.#port;
    return (
      !port.ended() &&
      (port.running() >= this.#maxRunning ||
        port.runningBytes() >= this.#maxRunningBytes ||
        port.queuedBytes() >= this.#maxQueuedBytes)
    );
  }

  /** Settles when reading may go on (or `release` says the connection is over). */
  opened(): Promise<void> {
    this.#waiter ??= deferred<void>();
    return this.#waiter.promise;
  }

  /** Something eased (a call finished, the transport drained, the session ended): look again. */
  check(): void {
    if (this.#waiter !== undefined && !this.closed) this.release();
  }

  /** Lets a waiting reader go, to see for itself that its connection is over. */
  release(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve();
  }
}

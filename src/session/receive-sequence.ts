/**
 * The receiving side of sequence numbers (docs/protocol.md 9.2): which frame comes next, what has
 * arrived and not yet been acknowledged, and asking the peer to send again what was lost on the
 * live connection.
 *
 * A frame dropped on the way (its payload checksum failed, junk broke its header) shows as a gap:
 * the next frame carries a higher number than expected. Frames after a gap are not delivered
 * (order is the contract), so the receiver asks the sender to go back: an ACK with `resend`, after
 * which the sender writes again every kept frame after the last one received in order (go-back-N,
 * as the frames after the lost one were discarded anyway). One ask covers one loss; it is made
 * again only when the sender's go-back arrived and still lacks the frame (the numbers went
 * backwards and there is a gap again), or when nothing at all arrived for a while (the ask itself
 * was lost, or the lost frame was the last one sent), or after a few such waits in any case. After `MAX_RESEND_ASKS` asks that did not
 * bring a frame surely missing (one after it arrived), resending is not healing the connection
 * and the port is told so. Asks made only because the decoder dropped something, with nothing
 * numbered after it, just stop: what was damaged was unnumbered (a PING, PONG or ACK).
 */
import type { Clock, Timer } from "./runtime.ts";

/** Asks for the same missing frame before the connection is given up as not healing. */
export const MAX_RESEND_ASKS = 8;
/** Least wait for a go-back before asking again when nothing arrives; grows with the round trip. */
export const RESEND_WAIT_MIN_MS = 200;
/** Waits that saw frames flowing, but not the missing one, before asking again all the same. */
const MAX_FLOWING_WAITS = 4;
/** An ACK goes back after this many sequenced frames or bytes received (and at each keepalive). */
export const ACK_EVERY_FRAMES = 256;
export const ACK_EVERY_BYTES = 1024 * 1024;

/** What became of an arriving sequenced frame. */
export const Arrival = {
  /** The next one expected: deliver it. */
  NEXT: 0,
  /** Already delivered (a replay or a go-back): ignore it. */
  DUPLICATE: 1,
  /** After a gap: ignore it, the missing frames are asked for again. */
  AFTER_GAP: 2,
} as const;
export type Arrival = (typeof Arrival)[keyof typeof Arrival];

export interface ReceiveSequencePort {
  /** Send ACK `{received, resend: true}`: the peer writes again everything after `received`. */
  askResend(received: number): void;
  /** `asks` asks did not bring frame `expected`: the connection is not healing. */
  unhealed(expected: number, asks: number): void;
  /** The current round trip, if known, to scale the wait for a go-back. */
  rttMs(): number | undefined;
}

export class ReceiveSequence {
  /** The sequence number the next frame must carry. */
  expected = 1;
  #lastSeen = 0;
  /** The frame asked for again (0: none); `#asks` asks so far for it. */
  #askedFor = 0;
  #asks = 0;
  /** A frame after the one asked for arrived: it is surely missing (not just a damaged PING). */
  #gapSeen = false;
  #arrivedSinceCheck = false;
  #flowingWaits = 0;
  #timer: Timer | undefined;
  #unackedFrames = 0;
  #unackedBytes = 0;
  readonly #clock: Clock;
  readonly #port: ReceiveSequencePort;

  constructor(clock: Clock, port: ReceiveSequencePort) {
    this.#clock = clock;
    this.#port = port;
  }

  /** The last sequence number received in order. */
  get received(): number {
    return this.expected - 1;
  }

  /** Frames asked for again so far on this connection, and still missing. */
  get asking(): boolean {
    return this.#askedFor !== 0;
  }

  /** A sequenced frame of `bytes` bytes (header included) arrived with number `seq`. */
  arrive(seq: number, bytes: number): Arrival {
    const wentBack = seq <= this.#lastSeen;
    this.#lastSeen = seq;
    this.#arrivedSinceCheck = true;
    if (seq === this.expected) {
      this.expected++;
      this.#unackedFrames++;
      this.#unackedBytes += bytes;
      if (this.#askedFor !== 0 && this.expected > this.#askedFor) this.#healed();
      return Arrival.NEXT;
    }
    if (seq < this.expected) return Arrival.DUPLICATE;
    // A gap. Ask once per loss; again when the sender's go-back came and still lacks the frame.
    if (this.#askedFor !== this.expected || wentBack) this.#ask();
    this.#gapSeen = true;
    return Arrival.AFTER_GAP;
  }

  /**
   * The decoder dropped something that may have been a frame (a bad payload or header): ask at
   * once rather than wait for the next frame to show the gap, which may never come if it was the
   * last. Once asked, the gap or the wait decides.
   */
  damaged(): void {
    if (this.#askedFor !== this.expected) this.#ask();
  }

  /**
   * Whether an ACK is due, and clears the count if so: `force` whenever anything is unacknowledged
   * (keepalive, closing), else after `ACK_EVERY_FRAMES` frames or `ACK_EVERY_BYTES` bytes.
   */
  takeAck(force: boolean): boolean {
    if (this.#unackedFrames === 0) return false;
    if (!force && this.#unackedFrames < ACK_EVERY_FRAMES && this.#unackedBytes < ACK_EVERY_BYTES) {
      return false;
    }
    this.#unackedFrames = 0;
    this.#unackedBytes = 0;
    return true;
  }

  /**
   * The connection changed: asks belong to the old one (a resume sends again what the new
   * connection's handshake says is missing).
   */
  newConnection(): void {
    this.#healed();
    this.#lastSeen = this.received;
  }

  /** The peer restarted: numbering begins again at 1. */
  reset(): void {
    this.newConnection();
    this.expected = 1;
    this.#lastSeen = 0;
    this.#unackedFrames = 0;
    this.#unackedBytes = 0;
  }

  /** No more asks (the session ended). */
  stop(): void {
    this.#healed();
  }

  #ask(): void {
    if (this.#askedFor !== this.expected) {
      this.#askedFor = this.expected;
      this.#asks = 0;
      this.#gapSeen = false;
    }
    this.#asks++;
    if (this.#asks > MAX_RESEND_ASKS) {
      const asks = this.#asks - 1;
      const missing = this.#gapSeen;
      this.#healed();
      // Asked only because something was damaged, and nothing numbered ever followed: it was
      // a PING, PONG or ACK (unnumbered, nothing to send again). Otherwise it is lost for good.
      if (missing) this.#port.unhealed(this.expected, asks);
      return;
    }
    this.#port.askResend(this.received);
    this.#arrivedSinceCheck = false;
    this.#flowingWaits = 0;
    this.#armTimer();
  }

  /** Asks again if nothing at all arrived for a while: the ask or the last frames were lost. */
  #armTimer(): void {
    if (this.#timer !== undefined) return;
    const rtt = this.#port.rttMs() ?? 0;
    const wait = Math.max(RESEND_WAIT_MIN_MS, 4 * rtt);
    this.#timer = this.#clock.setTimer(wait, () => {
      this.#timer = undefined;
      if (this.#askedFor === 0) return;
      if (this.#arrivedSinceCheck && this.#flowingWaits < MAX_FLOWING_WAITS) {
        // Frames are flowing (the rest of what was in flight, or the go-back): wait on.
        this.#flowingWaits++;
        this.#arrivedSinceCheck = false;
        this.#armTimer();
        return;
      }
      this.#ask();
    });
  }

  #healed(): void {
    this.#askedFor = 0;
    this.#asks = 0;
    this.#timer?.cancel();
    this.#timer = undefined;
  }
}

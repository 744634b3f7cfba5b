/**
 * The receiving side of sequence numbers (docs/protocol.md 9.2): which frame comes next, what has
 * arrived and not yet been acknowledged, and asking the peer to send again what was lost on the
 * live connection.
 *
 * A frame dropped on the way (its payload checksum failed, junk broke its header) shows as a gap:
 * the next frame carries a higher number than expected. Frames are delivered in order, so those
 * after a gap are held (up to `MAX_HELD_FRAMES` / `MAX_HELD_BYTES`; beyond, dropped) and the
 * receiver asks the sender for just the missing ones: an ACK with `resend`, the last number
 * before the first frame it holds. Once they arrive, what was held is delivered after them.
 *
 * One ask covers one loss. It is made again when the resent frames arrive and still lack the one
 * expected (the numbers went backwards, and there is a gap again), when the decoder dropped
 * something meanwhile that was no frame of the run arriving (so most likely the resent frame),
 * when nothing at all arrived for a while (the ask itself was lost), or after a few waits in
 * which frames flowed but not the missing one (such an ask does not count toward giving up: the
 * resent frames may be on a slow way). While frames are held after a gap, their stream credit is
 * lent back to the sender (`Streams.onHeldData`), so it keeps sending behind the resend. A frame
 * the decoder dropped with nothing after it may have been the last one sent: after a wait with
 * no frame in order, the receiver asks for everything after what it has. After `MAX_RESEND_ASKS`
 * asks that did not bring a frame surely missing (one after it arrived), resending is not
 * healing the connection and the port is told so; asks made only on such suspicion just stop
 * (what was damaged was unnumbered: a PING, PONG or ACK).
 */
import type { Clock, Timer } from "./runtime.ts";

/**
 * Asks for the same missing frame before the connection may be given up as not healing; it is
 * given up only once `giveUpAfterMs` has also passed since the first (the peer may be stalled on
 * its own receiving side, by a damaged header whose claimed length it is still filling).
 */
export const MAX_RESEND_ASKS = 8;
/** Least wait before asking again when nothing arrives; grows with the round trip. */
export const RESEND_WAIT_MIN_MS = 50;
/** Each counted ask doubles the wait before the next, up to this. */
export const RESEND_WAIT_MAX_MS = 1_000;
/**
 * After the decoder dropped something, how long to wait for a frame that shows what is missing
 * before asking for everything (the dropped frame may have been the last one the sender could
 * send before it waits for credit). Grows with the round trip.
 */
export const SUSPECT_WAIT_MIN_MS = 10;
/** Waits that saw frames flowing, but not the missing one, before asking again all the same. */
const MAX_FLOWING_WAITS = 4;
/** An ACK goes back after this many sequenced frames or bytes received (and at each keepalive). */
export const ACK_EVERY_FRAMES = 256;
export const ACK_EVERY_BYTES = 256 * 1024;
/** Frames after a gap held for delivery once the gap is filled: at most this many and bytes. */
export const MAX_HELD_FRAMES = 1024;
export const MAX_HELD_BYTES = 8 * 1024 * 1024;
/** `resend` that asks for every frame after `received` (the extent of the loss is unknown). */
export const RESEND_ALL = Number.MAX_SAFE_INTEGER;

/** What became of an arriving sequenced frame. */
export const Arrival = {
  /** The next one expected: deliver it (and then `takeHeld` what it unblocked). */
  NEXT: 0,
  /** Already delivered or held (a replay or a resend): ignore it. */
  DUPLICATE: 1,
  /** After a gap: held until the missing frames come. */
  HELD: 2,
  /** After a gap, with no room to hold it: it will be asked for again. */
  DROPPED: 3,
} as const;
export type Arrival = (typeof Arrival)[keyof typeof Arrival];

export interface ReceiveSequencePort<T> {
  /** Send ACK `{received, resend: upTo}`: the peer writes again its frames after `received` up to `upTo`. */
  askResend(received: number, upTo: number): void;
  /** `asks` asks did not bring frame `expected`: the connection is not healing. */
  unhealed(expected: number, asks: number): void;
  /** The current round trip, if known, to scale the wait for resent frames. */
  rttMs(): number | undefined;
  /** How long asks must have gone unanswered before the connection is given up. */
  readonly giveUpAfterMs: number;
  /** A held item let go undelivered (its connection was replaced, or the session ended). */
  dropped(item: T): void;
}

interface Held<T> {
  item: T;
  bytes: number;
}

export class ReceiveSequence<T> {
  /** The sequence number the next frame must carry. */
  expected = 1;
  #lastSeen = 0;
  /** The highest sequence number that arrived (held, dropped or delivered). */
  #highestSeen = 0;
  readonly #held = new Map<number, Held<T>>();
  #heldBytes = 0;
  /** The frame asked for again (0: none); `#asks` asks so far for it. */
  #askedFor = 0;
  #asks = 0;
  #firstAskAt = 0;
  /** A frame after the one asked for arrived: it is surely missing (not just a damaged PING). */
  #gapSeen = false;
  /** The decoder dropped something while `expected` was this, and nothing proved it harmless. */
  #suspectAt = 0;
  #arrivedSinceCheck = false;
  /** While asking, the decoder dropped something after the frame with this number (-1: no). */
  #droppedAfter = -1;
  #flowingWaits = 0;
  #timer: Timer | undefined;
  #unackedFrames = 0;
  #unackedBytes = 0;
  readonly #clock: Clock;
  readonly #port: ReceiveSequencePort<T>;

  constructor(clock: Clock, port: ReceiveSequencePort<T>) {
    this.#clock = clock;
    this.#port = port;
  }

  /** The last sequence number received in order. */
  get received(): number {
    return this.expected - 1;
  }

  /** Frames asked for again, and still missing. */
  get asking(): boolean {
    return this.#askedFor !== 0;
  }

  /** Whether a gap was seen that is not filled yet (frames held, or seen after `expected`). */
  get behind(): boolean {
    return this.#highestSeen >= this.expected;
  }

  /** Frames held after a gap, and their bytes. */
  get held(): { frames: number; bytes: number } {
    return { frames: this.#held.size, bytes: this.#heldBytes };
  }

  /** A sequenced frame of `bytes` bytes (header included) arrived with number `seq`. */
  arrive(seq: number, bytes: number, item: T): Arrival {
    const wentBack = seq <= this.#lastSeen;
    // Something was dropped while asking, and this frame follows the last one without a gap: what
    // was dropped was not one of theirs, so most likely the frame asked for, sent again. Asked
    // for again now, not after waits sized for a slow resend (frames after the gap keep
    // arriving, held, so those waits would run on).
    const resentLost = this.#droppedAfter >= 0 && seq === this.#droppedAfter + 1;
    this.#droppedAfter = -1;
    this.#lastSeen = seq;
    if (seq > this.#highestSeen) this.#highestSeen = seq;
    this.#arrivedSinceCheck = true;
    if (seq === this.expected) {
      this.#advance(bytes);
      return Arrival.NEXT;
    }
    if (seq < this.expected || this.#held.has(seq)) return Arrival.DUPLICATE;
    let arrival: Arrival = Arrival.DROPPED;
    if (this.#held.size < MAX_HELD_FRAMES && this.#heldBytes + bytes <= MAX_HELD_BYTES) {
      this.#held.set(seq, { item, bytes });
      this.#heldBytes += bytes;
      arrival = Arrival.HELD;
    }
    // A gap. Ask once per loss; again when the resent frames came and still lack the one expected.
    if (this.#askedFor !== this.expected || wentBack || resentLost) this.#ask();
    this.#gapSeen = true;
    return arrival;
  }

  /**
   * After a frame was delivered: the next held frame, if it is now in order (deliver it, and
   * call again). When none is, but later frames were seen, a gap remains and is asked for.
   */
  takeHeld(): T | undefined {
    const next = this.#held.get(this.expected);
    if (next !== undefined) {
      this.#held.delete(this.expected);
      this.#heldBytes -= next.bytes;
      this.#advance(next.bytes);
      return next.item;
    }
    if (this.#highestSeen >= this.expected && this.#askedFor !== this.expected) {
      this.#gapSeen = true;
      this.#ask();
    }
    return undefined;
  }

  /**
   * The decoder dropped something that may have been a frame (a bad payload or header). If a
   * later frame shows a gap, that is asked for; if nothing arrives in order for a while, it may
   * have been the last frame sent, and everything after `received` is asked for.
   */
  damaged(): void {
    if (this.#askedFor !== 0) {
      // It may have been the frame asked for, sent again: `arrive` tells by the next frame.
      this.#droppedAfter = this.#lastSeen;
      return;
    }
    this.#suspectAt = this.expected;
    this.#arrivedSinceCheck = false;
    this.#armTimer(SUSPECT_WAIT_MIN_MS);
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
   * The connection changed: asks and held frames belong to the old one (a resume sends again
   * everything after what the new connection's handshake says was received).
   */
  newConnection(): void {
    this.#healed();
    this.#suspectAt = 0;
    this.#droppedAfter = -1;
    for (const held of this.#held.values()) this.#port.dropped(held.item);
    this.#held.clear();
    this.#heldBytes = 0;
    this.#lastSeen = this.received;
    this.#highestSeen = this.received;
  }

  /** The peer restarted: numbering begins again at 1. */
  reset(): void {
    this.newConnection();
    this.expected = 1;
    this.#lastSeen = 0;
    this.#highestSeen = 0;
    this.#unackedFrames = 0;
    this.#unackedBytes = 0;
  }

  /** No more asks (the session ended). */
  stop(): void {
    this.newConnection();
  }

  #advance(bytes: number): void {
    this.expected++;
    this.#unackedFrames++;
    this.#unackedBytes += bytes;
    if (this.#askedFor !== 0 && this.expected > this.#askedFor) this.#healed();
  }

  /**
   * Asks for what is missing. `counts`: the ask goes toward `MAX_RESEND_ASKS`; one made only
   * because frames kept flowing without the missing one does not (on a slow, deep path the
   * resent frames may still be on their way), so it alone never gives the connection up.
   */
  #ask(counts = true): void {
    if (this.#askedFor !== this.expected) {
      this.#askedFor = this.expected;
      this.#asks = 0;
      this.#gapSeen = false;
      this.#firstAskAt = this.#clock.now();
    }
    this.#suspectAt = 0;
    if (counts) this.#asks++;
    const waited = this.#clock.now() - this.#firstAskAt;
    if (this.#asks > MAX_RESEND_ASKS && waited >= this.#port.giveUpAfterMs) {
      const asks = this.#asks - 1;
      const missing = this.#gapSeen;
      this.#healed();
      if (missing) this.#port.unhealed(this.expected, asks);
      return;
    }
    // Just the missing frames: up to the first one held, or all if none is.
    let upTo = RESEND_ALL;
    for (let seq = this.expected + 1; seq <= this.#highestSeen; seq++) {
      if (this.#held.has(seq)) {
        upTo = seq - 1;
        break;
      }
    }
    this.#port.askResend(this.received, upTo);
    this.#arrivedSinceCheck = false;
    this.#flowingWaits = 0;
    this.#armTimer();
  }

  /** Asks again if nothing arrived for a while: the ask, or the last frames, were lost. */
  #armTimer(minMs = RESEND_WAIT_MIN_MS): void {
    if (this.#timer !== undefined) return;
    const rtt = this.#port.rttMs() ?? 0;
    const backoff = 2 ** Math.max(0, this.#asks - 1);
    const wait = Math.min(RESEND_WAIT_MAX_MS, Math.max(minMs, 4 * rtt) * backoff);
    this.#timer = this.#clock.setTimer(wait, () => {
      this.#timer = undefined;
      if (this.#askedFor === 0) {
        // Only a suspicion: frames arriving in order since prove the damaged one unnumbered.
        if (this.#suspectAt !== 0 && this.expected === this.#suspectAt) this.#ask();
        this.#suspectAt = 0;
        return;
      }
      if (this.#arrivedSinceCheck && this.#flowingWaits < MAX_FLOWING_WAITS) {
        // Frames are flowing (the rest of what was in flight, or the resent ones): wait on.
        this.#flowingWaits++;
        this.#arrivedSinceCheck = false;
        this.#armTimer();
        return;
      }
      this.#ask(!this.#arrivedSinceCheck);
    });
  }

  #healed(): void {
    this.#askedFor = 0;
    this.#asks = 0;
    this.#timer?.cancel();
    this.#timer = undefined;
  }
}

/**
 * Credit-based flow control (docs/protocol.md 9.4), one pair per stream and one per session: what
 * the peer still lets us send (`SendCredit`), and what we still let it send and give back as it is
 * consumed (`ReceiveWindow`, re-opened once half of it was consumed, as ssh2 does).
 */

/** The largest a window may grow (2^31 - 1 bytes); beyond is a protocol error. */
export const MAX_CREDIT = 2 ** 31 - 1;

/** Bytes the peer still lets us send. */
export class SendCredit {
  available: number;

  constructor(initial: number) {
    this.available = initial;
  }

  /** The peer granted `bytes` more. False when that grows the credit past `MAX_CREDIT`. */
  grant(bytes: number): boolean {
    this.available += bytes;
    return this.available <= MAX_CREDIT;
  }

  /** `bytes` were sent. */
  take(bytes: number): void {
    this.available -= bytes;
  }
}

/** Bytes we still let the peer send, and the consumed bytes not yet granted back. */
export class ReceiveWindow {
  readonly size: number;
  #available: number;
  #ungranted = 0;
  /** Credit granted ahead of consumption (`lend`), not yet paid back by consuming. */
  #lent = 0;

  constructor(size: number) {
    this.size = size;
    this.#available = size;
  }

  /** Bytes the peer may still send before we grant more. */
  get available(): number {
    return this.#available;
  }

  /** `bytes` arrived from the peer. False when that is beyond the window (a protocol error). */
  accept(bytes: number): boolean {
    if (bytes > this.#available) return false;
    this.#available -= bytes;
    return true;
  }

  /**
   * `bytes` of what arrived were consumed. Returns the credit to grant the peer now: all that
   * was consumed since the last grant once it reaches half the window, else 0.
   */
  consumed(bytes: number): number {
    const repaid = Math.min(this.#lent, bytes);
    this.#lent -= repaid;
    this.#ungranted += bytes - repaid;
    if (this.#ungranted < this.size / 2) return 0;
    const grant = this.#ungranted;
    this.#available += grant;
    this.#ungranted = 0;
    return grant;
  }

  /** Credit lent (`lend`) and not yet paid back. */
  get lent(): number {
    return this.#lent;
  }

  /**
   * Grants `bytes` now for data that arrived but cannot be consumed yet (held after a gap, while
   * the frame before it is sent again): the caller sends them to the peer. The next `bytes`
   * consumed pay it back instead of being granted again, so the window returns to its size. The
   * caller bounds what is lent (`lent`).
   */
  lend(bytes: number): void {
    this.#lent += bytes;
    this.#available += bytes;
  }

  /** Back to a full window (the peer restarted). */
  reset(): void {
    this.#available = this.size;
    this.#ungranted = 0;
    this.#lent = 0;
  }
}

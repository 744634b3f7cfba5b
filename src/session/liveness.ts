/**
 * Busy or dead (docs/protocol.md 9.5): keepalive tells whether the peer answers; this tells
 * whether it makes progress. With calls or streams waiting on the peer and no new frame of theirs
 * for the dead timeout, the peer is stalled: it still answers PINGs (or keepalive would have
 * declared it dead), but the work does not move.
 */
export class Progress {
  stalled = false;
  #seq = 0;
  #at: number;

  constructor(now: number) {
    this.#at = now;
  }

  /** A new connection: progress is measured from now. */
  restart(now: number, seq: number): void {
    this.#seq = seq;
    this.#at = now;
  }

  /**
   * Once per keepalive interval, with `seq` the next frame number expected from the peer.
   * Returns the change to report, if any.
   */
  check(
    now: number,
    waiting: boolean,
    seq: number,
    stallAfterMs: number,
  ): { type: "stalled"; forMs: number } | { type: "progressing" } | undefined {
    if (!waiting || seq !== this.#seq) {
      this.#seq = seq;
      this.#at = now;
      if (!this.stalled) return undefined;
      this.stalled = false;
      return { type: "progressing" };
    }
    if (this.stalled || now - this.#at < stallAfterMs) return undefined;
    this.stalled = true;
    return { type: "stalled", forMs: now - this.#at };
  }
}

/**
 * Keepalive: a PING every interval, round-trip time and clock offset from each PONG, and the
 * verdict "dead" when nothing at all has come from the peer for `deadAfterMs`. Any frame counts
 * as a sign of life, so a peer busy streaming is alive even if its PONGs queue behind its data.
 * A port of three methods, like nats.js's heartbeats: the session sends, reports what it hears,
 * and is told when the peer is dead.
 */
import type { Clock, Timer } from "./runtime.ts";

export interface KeepaliveOptions {
  /** How often to probe the peer. */
  intervalMs: number;
  /** Silence after which the peer is declared dead. */
  deadAfterMs: number;
}

export interface KeepalivePort {
  sendPing(sentAt: number): void;
  /** Called once per tick, after the ping: lets the session check on a stuck partial frame. */
  tick(): void;
  peerDead(silentForMs: number): void;
  /**
   * True while the session is not reading from the peer (it holds back a peer that floods it):
   * silence is then this side's doing, and does not count against the peer.
   */
  notReading?(): boolean;
}

export class Keepalive {
  /** Last measured round trip, in ms (undefined before the first PONG). */
  rttMs: number | undefined;
  /** Smoothed round trip (RFC 6298 style, alpha 1/8). */
  srttMs: number | undefined;
  /** Estimated peer wall clock minus ours, corrected for half the round trip. */
  clockOffsetMs: number | undefined;
  /** When we last heard anything from the peer (monotonic ms). */
  lastHeardAt: number;

  readonly #clock: Clock;
  readonly #options: KeepaliveOptions;
  readonly #port: KeepalivePort;
  #timer: Timer | undefined;
  #stopped = false;
  #lastPingAt = 0;

  constructor(clock: Clock, options: KeepaliveOptions, port: KeepalivePort) {
    this.#clock = clock;
    this.#options = options;
    this.#port = port;
    this.lastHeardAt = clock.now();
  }

  /** Sends a first PING at once (RTT and clock offset are known early), then one per interval. */
  start(): void {
    this.#lastPingAt = this.#clock.now();
    this.#port.sendPing(this.#lastPingAt);
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = undefined;
  }

  heard(): void {
    this.lastHeardAt = this.#clock.now();
  }

  /** A PONG for the PING sent at `sentAt`, stamped with the peer's wall clock. */
  pong(sentAt: number, peerWallTime: number): void {
    const now = this.#clock.now();
    const rtt = Math.max(0, now - sentAt);
    this.rttMs = rtt;
    this.srttMs = this.srttMs === undefined ? rtt : this.srttMs + (rtt - this.srttMs) / 8;
    // Our wall clock at the midpoint of the round trip, against the peer's at its answer.
    const wallNow = this.#clock.wallNow();
    this.clockOffsetMs = peerWallTime - (wallNow - rtt / 2);
  }

  /** Wakes at the next ping or at the moment the peer would be dead, whichever is first. */
  #schedule(): void {
    if (this.#stopped) return;
    const { intervalMs, deadAfterMs } = this.#options;
    const next = Math.min(this.#lastPingAt + intervalMs, this.lastHeardAt + deadAfterMs);
    this.#timer = this.#clock.setTimer(Math.max(1, next - this.#clock.now()), () => this.#tick());
  }

  #tick(): void {
    if (this.#stopped) return;
    const now = this.#clock.now();
    if (this.#port.notReading?.()) this.lastHeardAt = now;
    const silentFor = now - this.lastHeardAt;
    if (silentFor >= this.#options.deadAfterMs) {
      this.#port.peerDead(silentFor);
      return;
    }
    if (now - this.#lastPingAt >= this.#options.intervalMs) {
      this.#lastPingAt = now;
      this.#port.sendPing(now);
      this.#port.tick();
    }
    this.#schedule();
  }
}

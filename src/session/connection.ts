/**
 * One connection of a session: a transport, the decoder of what arrives on it, the read loop, its
 * handshake timers and keepalive. A session runs over one at a time; with resume, a new one takes
 * over when one is lost. The connection reports to its owner (`ConnectionOwner`), which changes
 * only through `handOver`: an accepted connection that resumes another session is handed to it,
 * and a connection the peer began in mid-stream on the same transport (`successor`, a guest's
 * virtio-serial port) is read on by the same loop.
 */
import { type Deferred, deferred } from "../abort.ts";
import { GuestlinkError, isGuestlinkError } from "../errors.ts";
import { copyOf, decoded, discard, finished, handedOut, recycled } from "../recycle.ts";
import type { Transport } from "../transport/transport.ts";
import type { FrameDecoder } from "../wire/decode.ts";
import { type Frame, FrameType } from "../wire/frame.ts";
import type { Keepalive } from "./keepalive.ts";
import type { Timer } from "./runtime.ts";

/** One connection of a session, as the public API shows it. */
export interface SessionConnection {
  readonly description: string;
  /** For a keyed connection, the id of the key both ends proved they hold (`Transport.keyId`). */
  readonly keyId?: string;
  /** Settles once this connection's handshake is done (rejects if it ends first). */
  readonly ready: Promise<void>;
  /** Settles when this connection is over: with why, or undefined after a clean close. */
  readonly lost: Promise<GuestlinkError | undefined>;
}

/** Whoever the frames of a connection are for. */
export interface ConnectionOwner {
  /** A frame arrived on `conn`. */
  frame(conn: Connection, frame: Frame): void;
  /** The frames of one read were handled. */
  afterRead(conn: Connection): void;
  /** Whether reading waits: the owner holds its peer back (see `readingResumed`). */
  readingPaused(): boolean;
  /** Settles when the owner may read again, or the connection is over. */
  readingResumed(): Promise<void>;
  /** The transport ended (`err` undefined: the peer closed it) or failed. */
  lost(conn: Connection, err: GuestlinkError | undefined): void;
}

export class Connection implements SessionConnection {
  readonly transport: Transport;
  readonly decoder: FrameDecoder;
  /** The dialling side's mark on its HELLO for this connection, which the answer must carry. */
  readonly nonce: string | undefined;
  readonly startedAt: number;
  /** Until the peer's HELLO on this connection. */
  handshaking = true;
  /** The mark on the HELLO this side took on this connection: a repeat of it is ignored. */
  peerNonce: string | undefined;
  /** The connection the peer began in mid-stream on the same transport (`reconnectsInBand`). */
  successor: Connection | undefined;
  /** When this side last asked the peer to dial again (a guest's port, see the session). */
  hintedAt = Number.NEGATIVE_INFINITY;
  /** Set once the connection is dropped: its frames are no longer read. */
  over = false;
  keepalive: Keepalive | undefined;
  /** The last chunk this connection's decoder took (recycle.ts: where its reads came from). */
  #lastRead: Uint8Array | undefined;
  /** The handshake's deadline and the dialling side's HELLO repeat, until the peer's HELLO. */
  handshakeTimer: Timer | undefined;
  helloTimer: Timer | undefined;
  #owner: ConnectionOwner;
  #damageSeen = 0;
  #framesAtLastTick = 0;
  readonly #ready: Deferred<void> = deferred<void>();
  readonly #lost: Deferred<GuestlinkError | undefined> = deferred<GuestlinkError | undefined>();

  constructor(
    transport: Transport,
    decoder: FrameDecoder,
    owner: ConnectionOwner,
    nonce: string | undefined,
    now: number,
  ) {
    this.transport = transport;
    this.decoder = decoder;
    this.#owner = owner;
    this.nonce = nonce;
    this.startedAt = now;
  }

  get description(): string {
    return this.transport.description;
  }

  get keyId(): string | undefined {
    return this.transport.keyId;
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  get lost(): Promise<GuestlinkError | undefined> {
    return this.#lost.promise;
  }

  get owner(): ConnectionOwner {
    return this.#owner;
  }

  /** From now on the frames are `owner`'s (an accepted connection resumed its session). */
  handOver(owner: ConnectionOwner): void {
    this.#owner = owner;
  }

  /** The handshake is done (or a resume took over): the session runs on this connection. */
  opened(): void {
    this.handshaking = false;
    this.#cancelHandshakeTimers();
    this.#ready.resolve();
  }

  /** The peer's HELLO arrived: its deadline and our HELLO repeat are over. */
  heardHello(): void {
    this.#cancelHandshakeTimers();
  }

  /**
   * Stops using the connection: its frames are ignored from now on, its timers and keepalive
   * stop. Returns false if it was over already. The transport is the caller's to close.
   */
  drop(err: GuestlinkError | undefined): boolean {
    if (this.over) return false;
    this.over = true;
    this.keepalive?.stop();
    this.#cancelHandshakeTimers();
    this.#ready.reject(err ?? new GuestlinkError("SESSION_CLOSED", "the session was closed"));
    this.#lost.resolve(err);
    // Nothing more is decoded from this transport (a successor begun in mid-stream would read on
    // with the same decoder): its read buffers may be read into again once their bytes are back.
    if (this.successor === undefined && this.#lastRead !== undefined) finished(this.#lastRead);
    return true;
  }

  /** Writes bytes straight to the transport, ahead of the session's numbered frames. */
  sendDirect(bytes: Uint8Array): void {
    this.transport.send([bytes]);
  }

  /**
   * Whether the decoder dropped a frame or a header since the last look: something the peer sent
   * may be lost.
   */
  takeDamage(): boolean {
    const stats = this.decoder.stats;
    const damage = stats.badPayloads + stats.badHeaders + stats.abandoned;
    if (damage === this.#damageSeen) return false;
    this.#damageSeen = damage;
    return true;
  }

  /**
   * Once per keepalive interval: a frame that stopped arriving mid-way for a whole interval was
   * stale (an earlier connection's half frame), so it is given up and its bytes scanned again.
   * Returns the frames found in them.
   */
  rescanStuckFrame(): Frame[] {
    const frames = this.decoder.stats.frames;
    const stuck = frames === this.#framesAtLastTick && this.decoder.bufferedBytes > 0;
    this.#framesAtLastTick = frames;
    if (!stuck) return [];
    const found = this.resync();
    this.#framesAtLastTick = this.decoder.stats.frames;
    return found;
  }

  /** Gives up on the frame in progress (see FrameDecoder.resync); the frames found in its bytes. */
  resync(): Frame[] {
    const found = this.decoder.resync();
    // Rare: no payload found this way is counted on to come back to its read buffer.
    handOut(found, false);
    return found;
  }

  /**
   * Reads until the transport ends or the connection is dropped, handing each frame to its owner
   * of the moment; reports the end to the owner. Follows a successor begun in mid-stream.
   */
  async read(): Promise<void> {
    let failure: GuestlinkError | undefined;
    let conn: Connection = this;
    try {
      for await (const chunk of conn.transport) {
        if (conn.over) return;
        const frames = conn.decoder.push(chunk);
        handOut(frames, true);
        decoded(chunk);
        conn.#lastRead = chunk;
        // Once per read, not per frame: it reads the clock, and a read is one moment anyway.
        if (frames.length > 0) conn.keepalive?.heard();
        for (let i = 0; i < frames.length; i++) {
          conn.#owner.frame(conn, frames[i] as Frame);
          // The peer may have begun a new connection on this transport: read on for that one.
          while (conn.over) {
            if (conn.successor === undefined) {
              unused(frames, i + 1);
              return;
            }
            conn = conn.successor;
          }
        }
        const owner = conn.#owner;
        owner.afterRead(conn);
        // Not reading is the backpressure that reaches a peer that floods us.
        while (owner.readingPaused() && !conn.over) await owner.readingResumed();
      }
    } catch (err) {
      failure = isGuestlinkError(err)
        ? err
        : new GuestlinkError("SESSION_CLOSED", `connection to ${conn.description} failed`, {
            cause: err,
          });
    }
    conn.#owner.lost(conn, failure);
  }

  #cancelHandshakeTimers(): void {
    this.handshakeTimer?.cancel();
    this.helloTimer?.cancel();
    this.handshakeTimer = undefined;
    this.helloTimer = undefined;
  }
}

/**
 * Frames handed out (`handOut`) that nobody will be given, the connection having ended before
 * them: their stream bytes go back to their read buffer at once, as if consumed.
 */
function unused(frames: readonly Frame[], from: number): void {
  for (let i = from; i < frames.length; i++) {
    const frame = frames[i] as Frame;
    if (frame.type === FrameType.DATA) discard(frame.payload);
  }
}

/**
 * Control payloads up to this size are copied out of a buffer that is read into again (a HELLO,
 * a call's parameters), so that they do not keep the whole buffer from reuse: every connection
 * begins with a HELLO, and a buffer kept per connection was 1 MiB of garbage per redial.
 */
const COPIED_CONTROL_BYTES = 16 * 1024;

/**
 * Tells the owner of the buffers read into (recycle.ts) what the decoder made of them: stream
 * data may come back to it once consumed, any other payload is kept (a call's parameters) unless
 * it is small enough to copy out.
 */
function handOut(frames: readonly Frame[], mayComeBack: boolean): void {
  for (const frame of frames) {
    if (frame.payload.length === 0) continue;
    // ACK and WINDOW are read for their numbers at once and dropped: nothing keeps their bytes
    // (a peer's hundreds of them per GiB would otherwise keep as many buffers from reuse).
    if (mayComeBack && (frame.type === FrameType.ACK || frame.type === FrameType.WINDOW)) continue;
    const data = frame.type === FrameType.DATA;
    if (mayComeBack && !data && frame.payload.length <= COPIED_CONTROL_BYTES) {
      if (recycled(frame.payload)) frame.payload = copyOf(frame.payload);
      continue;
    }
    handedOut(frame.payload, mayComeBack && data);
  }
}

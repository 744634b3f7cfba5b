/**
 * A guest's virtio-serial port (docs/protocol.md 9.8): one byte stream for the life of the
 * agent, on which the host begins a new connection with a HELLO wherever it arrives, and which
 * hands a new host what was written for an earlier one. The guest never sees a host come or go;
 * this is how its session tells.
 */
import { GuestlinkError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import type { FrameDecoder } from "../wire/decode.ts";
import { type Frame, FrameType } from "../wire/frame.ts";
import type { Connection } from "./connection.ts";
import type { Clock } from "./runtime.ts";

/** The stream-0 ERROR code that asks the dialling side to make a new connection. */
export const RECONNECT = "RECONNECT";
/** How often a guest may ask its host to dial again (see `staleFrame`). */
const RECONNECT_HINT_INTERVAL_MS = 1_000;

export interface InBandPort {
  /** A frame was skipped as stale (before the peer's HELLO). */
  stale(): void;
  /** Writes one control frame straight to `conn`, ahead of the numbered ones. */
  sendDirect(conn: Connection, type: FrameType, value: unknown): void;
  /** The peer began a new connection on `transport`: a new session of the registry's reads it. */
  acceptInBand(transport: Transport, decoder: FrameDecoder): Connection;
  /** `conn` is over, superseded by one the peer began on the same transport. */
  superseded(conn: Connection, err: GuestlinkError): void;
}

export class InBand {
  readonly #port: InBandPort;
  readonly #clock: Clock;
  /** Whether this side accepted its connections: only a guest's (accepting) side hints. */
  readonly #accepting: boolean;

  constructor(port: InBandPort, clock: Clock, accepting: boolean) {
    this.#port = port;
    this.#clock = clock;
    this.#accepting = accepting;
  }

  /**
   * A frame before the peer's HELLO: left in the transport by an earlier connection (a
   * virtio-serial port keeps what a host that went away sent), so it is skipped. On a guest's
   * port it also means the host believes a connection exists that this side does not know (this
   * agent restarted, or dropped the connection): the host is asked, at most once a second, to
   * dial again, since it cannot see that from its side of the port.
   */
  staleFrame(conn: Connection): void {
    this.#port.stale();
    if (!this.#accepting || !conn.transport.reconnectsInBand) return;
    const now = this.#clock.now();
    if (now - conn.hintedAt < RECONNECT_HINT_INTERVAL_MS) return;
    conn.hintedAt = now;
    this.#port.sendDirect(conn, FrameType.ERROR, {
      code: RECONNECT,
      message: "this side has no session on this connection: dial again",
    });
  }

  /** Whether a HELLO in mid-stream on `conn` begins a new connection (the guest's side). */
  beginsConnection(conn: Connection): boolean {
    return this.#accepting && conn.transport.reconnectsInBand === true;
  }

  /**
   * A HELLO in mid-stream: the host began a new connection, so `conn` is over. The new one goes
   * to a session of the registry's, which hands it to the session it resumes: most often this
   * one. Its read loop reads on for the new connection (`successor`).
   */
  helloInBand(conn: Connection, frame: Frame): void {
    const next = this.#port.acceptInBand(conn.transport, conn.decoder);
    conn.successor = next;
    this.#port.superseded(
      conn,
      new GuestlinkError(
        "TRANSPORT_FAILED",
        `${conn.description}: the peer began a new connection`,
      ),
    );
    next.owner.frame(next, frame);
  }
}

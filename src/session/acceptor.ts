/**
 * The accepting side of resume, as a session on an accepted connection sees it (docs/protocol.md
 * 9.7). `SessionRegistry` is the one implementation; the session is a type parameter so that this
 * module, and the session, need not import the registry (which makes sessions).
 */
import type { GuestlinkError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import type { FrameDecoder } from "../wire/decode.ts";

export interface Acceptor<S> {
  /** The session with this id, if it is still here: a peer that dialled again may resume it. */
  find(sessionId: string): S | undefined;
  /**
   * A new session is about to answer its peer's HELLO. An error refuses it: the peer is told
   * it (ERROR on stream 0) instead of an answer, and the session ends.
   */
  opened(session: S): GuestlinkError | undefined;
  /**
   * A connection the peer began in mid-stream on `transport` (`Transport.reconnectsInBand`), read
   * on by the session whose connection it follows, with `decoder`: a new session waiting for it.
   */
  acceptInBand(transport: Transport, decoder: FrameDecoder): S;
}

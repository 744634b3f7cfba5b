/**
 * What a session tells of itself and its peer: the peer's identity from its HELLO, the events of
 * its connections, liveness and counters. The public types of `Session`, kept apart from it.
 */
import type { GuestlinkError } from "../errors.ts";
import type { Hello } from "./messages.ts";

export type SessionState = "handshaking" | "open" | "closing" | "closed";

/** What the peer told us about itself in its handshake. */
export interface PeerInfo {
  id: string;
  hostname: string;
  version: string;
  services: string[];
  /** The protocol version both sides agreed on. */
  protocol: number;
  sessionId: string;
  resumeToken: string;
  incarnation: string;
  limits: Hello["limits"];
}

/**
 * What happens to a session's connection and its peer, as events (see `onEvent`). The connection
 * events (disconnected, resumed, restarted) come only with resume: without, a lost connection
 * ends the session. Stalled and progressing come with keepalive.
 */
export type SessionEvent =
  /** The connection was lost; the session waits (up to the resume window) for a new one. */
  | { type: "disconnected"; error: GuestlinkError }
  /** A new connection took over: what the peer had not received was sent again. */
  | {
      type: "resumed";
      /** From losing the old connection to resuming on the new one. */
      downMs: number;
      /** From the new connection's start to resuming on it: the handshake's round trip. */
      handshakeMs: number;
      replayedFrames: number;
      replayedBytes: number;
    }
  /**
   * The peer could not resume (it restarted, or lacked frames no longer kept): every call and
   * stream in flight failed with `error` (RESUME_FAILED), and the session goes on afresh.
   */
  | { type: "restarted"; error: GuestlinkError }
  /**
   * Connected and answering keepalive, but no progress: calls or streams wait on the peer and
   * nothing for them has arrived for the dead timeout. Busy, not dead (that is PEER_UNRESPONSIVE).
   */
  | { type: "stalled"; forMs: number }
  /** Progress again after `stalled`. */
  | { type: "progressing" };

/** What is known of the peer: answering and making progress, answering only, or out of reach. */
export type Liveness = "alive" | "stalled" | "disconnected";

export interface SessionStats {
  framesSent: number;
  framesReceived: number;
  dataBytesSent: number;
  dataBytesReceived: number;
  notificationErrors: number;
  /**
   * Frames skipped because they came before the peer's HELLO on a connection: left in the
   * transport by an earlier connection (a virtio-serial port keeps them), or a stale answer.
   */
  staleFrames: number;
  /** Times this side asked the peer to send again what was lost on the live connection. */
  resendAsks: number;
  /** Times the peer asked this side to send again, and the frames sent again for it. */
  resendsAnswered: number;
  framesResent: number;
}

/** Counters at zero. */
export function newSessionStats(): SessionStats {
  return {
    framesSent: 0,
    framesReceived: 0,
    dataBytesSent: 0,
    dataBytesReceived: 0,
    notificationErrors: 0,
    staleFrames: 0,
    resendAsks: 0,
    resendsAnswered: 0,
    framesResent: 0,
  };
}

/**
 * The one guestlink frame a tcp: listener sends on a connection it refuses for want of a shared
 * key: ERROR on stream 0 with code AUTH_FAILED. A plain guestlink client's session ends its
 * handshake with it (protocol.md 9.1); a TLS client reads it as "not TLS" and says so.
 */
import { encodeControl } from "../wire/control.ts";
import { FrameEncoder } from "../wire/encode.ts";
import { FrameType } from "../wire/frame.ts";

/** Told about each connection refused because the key was wrong or missing (the agent logs it). */
export type AuthRefusalHandler = (refusal: { peer: string; reason: string }) => void;

/** The bytes of an ERROR frame on stream 0, code AUTH_FAILED, with `message`. */
export function authFailedFrame(message: string): Uint8Array {
  return new FrameEncoder().encode({
    type: FrameType.ERROR,
    payload: encodeControl({ code: "AUTH_FAILED", message }),
  });
}

/** The first byte of a TLS handshake record (a ClientHello), then TLS's major version. */
export function looksLikeTls(chunk: Uint8Array): boolean {
  return chunk[0] === 0x16 && chunk[1] === 0x03;
}

/**
 * The handshake's decisions, as pure functions (docs/protocol.md 9.1, 9.7): what our HELLO says,
 * which protocol version both sides speak, and what a peer's HELLO means for a side that dialled
 * again (its session resumed, or the peer restarted or refused). The session acts on the verdicts.
 */
import { decodeControl } from "../wire/control.ts";
import type { Frame } from "../wire/frame.ts";
import { type Hello, PROTOCOL_VERSIONS } from "./messages.ts";
import type { ResolvedSessionOptions } from "./options.ts";

/** What a HELLO of ours says besides the answer-specific fields. */
export interface OwnIdentity {
  readonly options: ResolvedSessionOptions;
  readonly services: string[];
  readonly sessionId: string;
  readonly resumeToken: string;
}

/** Our HELLO, with `extra` (nonce, answers, resume, resumed, …) on top. */
export function buildHello(own: OwnIdentity, extra: Partial<Hello>): Hello {
  const o = own.options;
  return {
    protocol: [PROTOCOL_VERSIONS[0], PROTOCOL_VERSIONS[1]],
    peer: o.peer,
    services: own.services,
    limits: {
      maxFrameBytes: o.maxFrameBytes,
      streamWindowBytes: o.streamWindowBytes,
      sessionWindowBytes: o.sessionWindowBytes,
    },
    sessionId: own.sessionId,
    resumeToken: own.resumeToken,
    incarnation: o.runtime.incarnation,
    wallTime: o.runtime.clock.wallNow(),
    ...extra,
  };
}

/** The protocol version both sides speak, or why there is none. */
export function agreeVersion(theirs: Hello["protocol"]): { version: number } | { refusal: string } {
  const [ourLow, ourHigh] = PROTOCOL_VERSIONS;
  const [theirLow, theirHigh] = theirs;
  const version = Math.min(ourHigh, theirHigh);
  if (version >= Math.max(ourLow, theirLow)) return { version };
  return {
    refusal: `incompatible protocol versions: this side speaks ${ourLow}..${ourHigh}, the peer ${theirLow}..${theirHigh}; upgrade the older side`,
  };
}

/**
 * Whether payloads go unchecked on a connection: only when this side asks to (`wantsUnchecked`:
 * told to, and not receiving over a lossy pipe) and so does the peer's HELLO.
 */
export function agreeUnchecked(wantsUnchecked: boolean, peerHello: Hello): boolean {
  return wantsUnchecked && peerHello.uncheckedPayloads === true;
}

/** What the peer we knew (its session and process) answered when we dialled again. */
export type RedialAnswer =
  /** It resumed our session: go on after `received`, what it has of ours. */
  | { kind: "resumed"; received: number }
  /** It could not: everything in flight is lost, and this is a new session from 1. */
  | { kind: "restarted"; reason: string; why: string };

/**
 * Sorts the peer's HELLO on a connection we dialled to resume (`asked`: we asked to resume the
 * session `known` of the peer's process `knownIncarnation`).
 */
export function sortRedialAnswer(
  hello: Hello,
  known: { sessionId: string; incarnation: string },
  asked: boolean,
  where: string,
): RedialAnswer | undefined {
  const same = hello.sessionId === known.sessionId && hello.incarnation === known.incarnation;
  if (asked && hello.resumed !== undefined && same) {
    return { kind: "resumed", received: hello.resumed.received };
  }
  if (!asked) return undefined;
  const restarted = hello.incarnation !== known.incarnation;
  return {
    kind: "restarted",
    reason: restarted ? "peer-restarted" : (hello.resumeRefused?.reason ?? "refused"),
    why: restarted
      ? `${where} restarted (a new process), so the session could not be resumed`
      : `${where} could not resume the session: ${hello.resumeRefused?.message ?? "no reason given"}`,
  };
}

/**
 * Whether `frame` (a HELLO) carries `nonce`, the one already taken on its connection. A HELLO
 * that cannot be read is not a repeat: it is left to whoever takes it next to refuse.
 */
export function isRepeatOf(nonce: string | undefined, frame: Frame): boolean {
  if (nonce === undefined) return false;
  try {
    return decodeControl(frame.payload).nonce === nonce;
  } catch {
    return false;
  }
}

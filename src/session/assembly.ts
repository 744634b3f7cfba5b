/**
 * How a session's parts are made and wired to each other (see session.ts for what each part is).
 * Each part gets the one object that serves every port (`core`) and the other parts it works
 * with directly; nothing here decides anything at run time.
 */
import type { Transport } from "../transport/transport.ts";
import { FrameEncoder } from "../wire/encode.ts";
import { ReadGate } from "./backpressure.ts";
import { Calls, type CallsPort } from "./calls.ts";
import { Closing, type ClosingPort } from "./closing.ts";
import type { ConnectionOwner } from "./connection.ts";
import { DeadlineQueue } from "./deadlines.ts";
import { Delivery, type DeliveryPort } from "./delivery.ts";
import { Dispatch, type DispatchPort } from "./dispatch.ts";
import type { SessionStats } from "./events.ts";
import { IdSpace } from "./ids.ts";
import { Links, type LinksPort } from "./links.ts";
import { KEEPALIVE_DEAD_AFTER_MS, type ResolvedSessionOptions } from "./options.ts";
import { Outbox, type OutboxPort } from "./outbox.ts";
import { Streams, type StreamsPort } from "./streams.ts";
import { Terms, type TermsPort } from "./terms.ts";

/** The session as its parts see it: one object serving every part's port. */
export type SessionCore = ConnectionOwner &
  StreamsPort &
  CallsPort &
  ClosingPort &
  DeliveryPort &
  TermsPort &
  LinksPort &
  OutboxPort &
  DispatchPort;

export interface SessionParts<S> {
  readonly deadlines: DeadlineQueue;
  readonly ids: IdSpace;
  readonly outbox: Outbox;
  readonly delivery: Delivery;
  readonly streams: Streams;
  readonly calls: Calls<S>;
  readonly closing: Closing;
  readonly gate: ReadGate;
  readonly terms: Terms;
  readonly links: Links;
  readonly dispatch: Dispatch;
}

/**
 * Makes the parts of `session` (the handlers' context) over its first `transport`.
 * `accepting`: this side accepted the connection and answers HELLOs.
 */
export function assembleParts<S>(
  core: SessionCore,
  session: S,
  transport: Transport,
  o: ResolvedSessionOptions,
  stats: SessionStats,
  identity: { sessionId: string; resumeToken: string },
  accepting: boolean,
): SessionParts<S> {
  const clock = o.runtime.clock;
  const deadlines = new DeadlineQueue(clock);
  const ids = new IdSpace(o.role);
  // The HELLO is always checksummed: whether to go without is agreed in it (9.1).
  const encoder = new FrameEncoder({ payloadChecksum: true, checksum: o.checksum });
  const outbox = new Outbox(transport, encoder, core, o.replayBufferBytes);
  // Asks for a lost frame go unanswered as long as the peer's receiving side may be stalled:
  // up to its keepalive's dead timeout, after which keepalive would have spoken anyway.
  const giveUpAfterMs = o.keepalive ? o.keepalive.deadAfterMs : KEEPALIVE_DEAD_AFTER_MS;
  const delivery = new Delivery(core, { clock, outbox, stats, giveUpAfterMs }, o.replayBufferBytes);
  const streams = new Streams(
    core,
    ids,
    o.streamWindowBytes,
    o.sessionWindowBytes,
    o.maxPeerStreams,
  );
  const calls = new Calls<S>(
    core,
    session,
    { ids, streams, deadlines, clock },
    o.defaultCallTimeoutMs,
  );
  const closing = new Closing(core, clock);
  const gate = new ReadGate(
    {
      running: () => calls.running,
      runningBytes: () => calls.runningBytes,
      queuedBytes: () => outbox.queuedBytes,
      ended: () => core.ended(),
    },
    o,
  );
  const anyCalls = calls as Calls<unknown>;
  const terms = new Terms(
    core,
    { options: o, outbox, delivery, streams, calls: anyCalls, closing, ids },
    identity,
    accepting,
  );
  const links = new Links(
    core,
    core,
    { options: o, outbox, rx: delivery.rx, terms },
    accepting,
    identity.resumeToken,
    transport.description,
  );
  const dispatch = new Dispatch(core, {
    links,
    calls: anyCalls,
    streams,
    delivery,
    stats,
    clock,
  });
  return {
    deadlines,
    ids,
    outbox,
    delivery,
    streams,
    calls,
    closing,
    gate,
    terms,
    links,
    dispatch,
  };
}

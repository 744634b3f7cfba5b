/**
 * NATS (`nats://HOST:PORT/AGENT-ID`): an agent connects out to a NATS server and is reached by
 * its id through that server or any server of its cluster. A connection is a pair of subjects
 * (docs/protocol.md, "NATS"):
 *
 * - the agent subscribes to `guestlink.agent.ID.open`; a client that dials subscribes to its own
 *   `guestlink.conn.CONN.down` first, then sends an open request naming CONN and the largest
 *   message its server takes; the agent subscribes to `guestlink.conn.CONN.up` and answers with
 *   its own largest message. Both then send messages of at most the smaller of the two.
 * - each message is a 5-byte header, a type (data, end, reset) and a 32-bit sequence number
 *   counting that direction's messages, then bytes of the stream. NATS core delivers at most
 *   once: a message missing from the sequence breaks the connection (TRANSPORT_FAILED), so the
 *   session resumes over a new one and replays what was not acknowledged, instead of going on
 *   with a hole in its byte stream. Losing the NATS connection (a server restart, a network
 *   blip) breaks every connection over it the same way; once the client is back, the peers of
 *   those connections are sent a reset so that they resume too.
 *
 * NATS core has no backpressure: a publisher is never slowed by a slow subscriber, whose
 * messages the servers queue. What is in flight is bounded by the session above instead, whose
 * credit windows never let a sender get further ahead than the receiver has room for. Here,
 * `send` reports a full buffer once HIGH_WATER_MARK bytes were published since the server last
 * confirmed it had read them (a PING answered), so the client's own send buffer stays bounded.
 *
 * `@nats-io/transport-node` is imported only when a `nats:` address is used (`loadNats`), so the
 * CLI and the agent bundles carry it as a chunk of their own (scripts/build-*.ts).
 */
import { randomBytes } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  AddressInUseError,
  ConnectFailedError,
  ListenFailedError,
  TransportClosedError,
  TransportFailedError,
} from "../errors.ts";
import { AcceptQueue } from "./accept-queue.ts";
import { raceCallOptions, remainingMs, throwIfDone } from "./call-options.ts";
import { abortedError, CLOSE_TIMEOUT_MS, CloseLatch, SendGate } from "./gates.ts";
import { Inbound } from "./inbound.ts";
import { type NatsAddress, type NatsServers, natsDescription } from "./nats-address.ts";
import { connectNatsServer, NATS_OPEN_TIMEOUT_MS } from "./nats-connect.ts";
import { NATS_SERVICE_NAME, type NatsServiceMetadata, serveNatsService } from "./nats-service.ts";
import type { CallOptions, Listener, Transport } from "./transport.ts";

/** Bytes published and not yet confirmed read by the server at which `send` reports full. */
export const NATS_HIGH_WATER_MARK_BYTES = 1024 * 1024;
/** The header of every message: its type and its sequence number in its direction. */
const HEADER_BYTES = 5;
const DATA = 0;
const END = 1;
const RESET = 2;
/** The version of the open request and its answer. */
const OPEN_VERSION = 1;

export const natsSubjects = {
  open: (agent: string) => `guestlink.agent.${agent}.open`,
  up: (conn: string) => `guestlink.conn.${conn}.up`,
  down: (conn: string) => `guestlink.conn.${conn}.down`,
};

export interface NatsConnectOptions extends CallOptions {
  /** A creds file used when the address names none (`--nats-creds`). */
  creds?: string;
}

/** A client's connection to NATS, shared by every connection to the same servers. */
class SharedConnection {
  readonly nc: NatsConnection;
  readonly key: string;
  readonly description: string;
  readonly transports = new Set<NatsTransport>();
  /** Subjects of peers whose connection broke with our NATS connection, to reset once back. */
  #resetOnReconnect: string[] = [];
  refs = 0;
  #idle: (() => void) | undefined;

  constructor(nc: NatsConnection, key: string, description: string) {
    this.nc = nc;
    this.key = key;
    this.description = description;
    void this.#watch();
  }

  /** Calls `then` once no connection uses this one (at once if none does). */
  onIdle(then: () => void): void {
    this.#idle = then;
    this.forget(undefined);
  }

  /** A connection over this one is done. */
  forget(t: NatsTransport | undefined): void {
    if (t !== undefined) this.transports.delete(t);
    if (this.transports.size === 0 && this.#idle !== undefined) {
      const idle = this.#idle;
      this.#idle = undefined;
      idle();
    }
  }

  /** The largest message the server takes. */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  async #watch(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (status.type === "disconnect") {
        const lost = new TransportFailedError(
          `the connection to the NATS server ${status.server} was lost; the session resumes once it is back`,
          { details: { address: this.description, reason: "nats-disconnected" } },
        );
        for (const t of [...this.transports]) {
          this.#resetOnReconnect.push(t.sendSubject);
          t.lost(lost);
        }
      } else if (status.type === "reconnect") {
        const subjects = this.#resetOnReconnect;
        this.#resetOnReconnect = [];
        for (const subject of subjects) this.publishReset(subject);
      }
    }
  }

  publishReset(subject: string): void {
    if (this.nc.isClosed()) return;
    const header = new Uint8Array(HEADER_BYTES);
    header[0] = RESET;
    try {
      this.nc.publish(subject, header);
    } catch {
      // Closed or draining: the peer finds out from its keepalive instead.
    }
  }
}

const pool = new Map<string, Promise<SharedConnection>>();

function poolKey(servers: NatsServers, creds: string | undefined): string {
  return JSON.stringify([servers.servers, servers.user, servers.pass, servers.token, creds]);
}

async function acquire(servers: NatsServers, creds: string | undefined): Promise<SharedConnection> {
  const key = poolKey(servers, creds);
  let shared = pool.get(key);
  if (shared === undefined) {
    const description = natsDescription(servers);
    shared = connectNatsServer(servers, creds, `guestlink client ${process.pid}`).then(
      (nc) => {
        const s = new SharedConnection(nc, key, description);
        void nc.closed().then(() => {
          if (pool.get(key) === shared) pool.delete(key);
        });
        return s;
      },
      (err: unknown) => {
        pool.delete(key);
        throw err;
      },
    );
    pool.set(key, shared);
  }
  const s = await shared;
  s.refs++;
  return s;
}

function release(shared: SharedConnection): void {
  shared.refs--;
  if (shared.refs > 0) return;
  // Nothing uses it: close it, so a command that is done can exit.
  pool.delete(shared.key);
  void shared.nc.close().catch(() => {});
}

/** A connection over a pair of subjects (see the top of this file). */
class NatsTransport implements Transport {
  readonly description: string;
  readonly redialable = true;
  readonly sendSubject: string;
  readonly #nc: NatsConnection;
  readonly #inbound: Inbound;
  readonly #send = new SendGate();
  readonly #close = new CloseLatch();
  readonly #onDone: () => void;
  #sub: Subscription | undefined;
  /** Largest bytes of stream in one message. */
  #chunkBytes: number;
  #sendSeq = 0;
  #recvSeq = 0;
  /** Bytes handed to `send` not yet published (published on the next microtask). */
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #publishScheduled = false;
  /** Bytes published since the server last confirmed it read everything. */
  #unconfirmed = 0;
  #confirming = false;
  #peerEnded = false;
  #done = false;

  constructor(
    nc: NatsConnection,
    description: string,
    sendSubject: string,
    maxPayload: number,
    onDone: () => void,
  ) {
    this.#nc = nc;
    this.description = description;
    this.sendSubject = sendSubject;
    this.#chunkBytes = maxPayload - HEADER_BYTES;
    this.#onDone = onDone;
    this.#inbound = new Inbound(description, Number.POSITIVE_INFINITY, () => {});
  }

  /** Subscribes to the subject the peer sends on; done before the peer learns of it. */
  subscribe(subject: string): void {
    this.#sub = this.#nc.subscribe(subject, {
      callback: (err, msg) => (err === null ? this.#receive(msg) : this.lost(err)),
    });
  }

  /** The peer's largest message is known: never send more than both servers take. */
  limitPayload(maxPayload: number): void {
    this.#chunkBytes = Math.min(this.#chunkBytes, maxPayload - HEADER_BYTES);
  }

  send(chunks: readonly Uint8Array[]): boolean {
    this.#send.check();
    for (const chunk of chunks) {
      if (chunk.length === 0) continue;
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
    }
    if (!this.#publishScheduled) {
      this.#publishScheduled = true;
      queueMicrotask(() => this.#publish());
    }
    // Ask for the server's confirmation before the mark is reached, so a steady sender seldom
    // waits for it.
    if (this.#unconfirmed + this.#pendingBytes >= NATS_HIGH_WATER_MARK_BYTES / 2) {
      queueMicrotask(() => this.#confirm());
    }
    return this.#belowHighWater();
  }

  drain(): Promise<void> {
    const below = this.#belowHighWater();
    if (!below) this.#confirm();
    return this.#send.drain(below);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.#inbound.iterator();
  }

  close(): Promise<void> {
    if (this.#close.promise !== undefined) return this.#close.promise;
    const closing = this.#close.begin(this.#done);
    if (this.#done) return closing;
    this.#publish();
    this.#send.stop(new TransportClosedError(`${this.description} is closed`));
    this.#message(END, undefined);
    this.#close.deadline(CLOSE_TIMEOUT_MS, () =>
      this.#finish(
        new TransportFailedError(`${this.description}: the peer did not close its side in time`),
      ),
    );
    if (this.#peerEnded) this.#finish();
    return closing;
  }

  abort(reason?: Error): void {
    if (this.#done) return;
    const err = abortedError(this.description, reason);
    this.#send.stop(err);
    this.#pending = [];
    this.#message(RESET, undefined);
    this.#inbound.fail(err, true);
    this.#finish();
  }

  /** The connection broke under us (the NATS connection, a lost message, a reset by the peer). */
  lost(err: Error): void {
    if (this.#done) return;
    const failed =
      err instanceof TransportFailedError
        ? err
        : new TransportFailedError(`${this.description} broke: ${err.message}`, { cause: err });
    this.#send.stop(
      new TransportClosedError(`${this.description} cannot send: the connection broke`, {
        cause: failed,
      }),
    );
    this.#pending = [];
    this.#inbound.fail(failed, false);
    this.#finish(this.#close.pending ? failed : undefined);
  }

  #belowHighWater(): boolean {
    return this.#unconfirmed + this.#pendingBytes < NATS_HIGH_WATER_MARK_BYTES;
  }

  /** Asks the server to confirm it read what we published (PING, PONG); drains wake after. */
  #confirm(): void {
    if (this.#confirming || this.#done) return;
    this.#publish();
    this.#confirming = true;
    const confirmed = this.#unconfirmed;
    this.#nc.flush().then(
      () => {
        this.#confirming = false;
        this.#unconfirmed -= confirmed;
        if (this.#belowHighWater()) this.#send.wake();
        else if (this.#send.waiting) this.#confirm();
      },
      (err: unknown) => {
        this.#confirming = false;
        this.lost(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  #publish(): void {
    this.#publishScheduled = false;
    if (this.#pendingBytes === 0 || this.#done) return;
    const chunks = this.#pending;
    let bytes = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    let i = 0;
    let offset = 0;
    while (bytes > 0) {
      const size = Math.min(bytes, this.#chunkBytes);
      const body = new Uint8Array(HEADER_BYTES + size);
      let filled = 0;
      while (filled < size) {
        const chunk = chunks[i] as Uint8Array;
        const take = Math.min(chunk.length - offset, size - filled);
        body.set(chunk.subarray(offset, offset + take), HEADER_BYTES + filled);
        filled += take;
        offset += take;
        if (offset === chunk.length) {
          i++;
          offset = 0;
        }
      }
      bytes -= size;
      this.#message(DATA, body);
    }
  }

  /** Publishes one message of `type`; `body` has room for the header at its start. */
  #message(type: number, body: Uint8Array | undefined): void {
    const message = body ?? new Uint8Array(HEADER_BYTES);
    message[0] = type;
    new DataView(message.buffer, message.byteOffset).setUint32(1, this.#sendSeq);
    this.#sendSeq = (this.#sendSeq + 1) >>> 0;
    this.#unconfirmed += message.length;
    try {
      this.#nc.publish(this.sendSubject, message);
    } catch (err) {
      this.lost(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #receive(msg: Msg): void {
    if (this.#done) return;
    const data = msg.data;
    if (data.length < HEADER_BYTES) {
      this.lost(
        new TransportFailedError(`${this.description}: a message too short for its header`),
      );
      return;
    }
    const type = data[0] as number;
    const seq = new DataView(data.buffer, data.byteOffset).getUint32(1);
    if (type === RESET) {
      // A reset needs no sequence: the peer may have lost count (its NATS connection broke).
      this.lost(new TransportFailedError(`the peer of ${this.description} reset the connection`));
      return;
    }
    if (seq !== this.#recvSeq) {
      // A message was lost (NATS core delivers at most once): the byte stream has a hole.
      const err = new TransportFailedError(
        `${this.description} lost a message in NATS (expected #${this.#recvSeq}, got #${seq}); the session resumes over a new connection`,
        { details: { reason: "nats-message-lost" } },
      );
      this.#message(RESET, undefined);
      this.lost(err);
      return;
    }
    this.#recvSeq = (this.#recvSeq + 1) >>> 0;
    if (type === DATA) {
      this.#inbound.push(data.subarray(HEADER_BYTES));
    } else if (type === END) {
      this.#peerEnded = true;
      this.#inbound.end();
      if (this.#close.pending) this.#finish();
    }
  }

  #finish(err?: Error): void {
    if (this.#done) {
      this.#close.finish(err);
      return;
    }
    this.#done = true;
    this.#sub?.unsubscribe();
    this.#close.finish(err);
    this.#send.stop(new TransportClosedError(`${this.description} is closed`));
    this.#onDone();
  }
}

function newConnectionId(): string {
  return randomBytes(12).toString("hex");
}

/**
 * Dials the agent `address.agent` through NATS. Fails with CONNECT_FAILED (no server reachable,
 * no such agent, no answer in time), AUTH_FAILED, or the signal's reason.
 */
export async function connectNats(
  address: NatsAddress,
  options: NatsConnectOptions = {},
): Promise<Transport> {
  const description = natsDescription(address, address.agent);
  const onDeadline = () =>
    new ConnectFailedError(`connecting to ${description} did not finish before the deadline`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  let cancelled = false;
  let transport: NatsTransport | undefined;
  const attempt = (async () => {
    const shared = await acquire(address, options.creds);
    const conn = newConnectionId();
    transport = new NatsTransport(
      shared.nc,
      description,
      natsSubjects.up(conn),
      shared.maxPayload,
      () => {
        shared.transports.delete(t);
        release(shared);
      },
    );
    const t = transport;
    shared.transports.add(t);
    t.subscribe(natsSubjects.down(conn));
    const wait = Math.max(1, Math.min(NATS_OPEN_TIMEOUT_MS, remainingMs(options)));
    let reply: Msg;
    try {
      reply = await shared.nc.request(
        natsSubjects.open(address.agent),
        JSON.stringify({ v: OPEN_VERSION, conn, maxPayload: shared.maxPayload }),
        { timeout: wait },
      );
    } catch (err) {
      t.abort();
      throw explainOpen(err, address, description);
    }
    const answer = parseJson(reply.data) as { v?: unknown; maxPayload?: unknown; error?: unknown };
    if (typeof answer?.error === "string") {
      t.abort();
      throw new ConnectFailedError(`${description} refused the connection: ${answer.error}`, {
        details: { address: description, dialAgain: false },
      });
    }
    if (answer?.v !== OPEN_VERSION || typeof answer.maxPayload !== "number") {
      t.abort();
      throw new ConnectFailedError(
        `something answering as ${description} on NATS is not a guestlink agent of this version`,
        { details: { address: description, dialAgain: false } },
      );
    }
    t.limitPayload(answer.maxPayload);
    if (cancelled) t.abort();
    return t as Transport;
  })();
  return await raceCallOptions(attempt, options, {
    onDeadline,
    cancel: () => {
      cancelled = true;
      transport?.abort();
    },
    discard: (t) => t.abort(),
  });
}

function explainOpen(err: unknown, address: NatsAddress, description: string): Error {
  const nats = err as { isNoResponders?: () => boolean; name?: string; message?: string };
  if (typeof nats.isNoResponders === "function" && nats.isNoResponders()) {
    return new ConnectFailedError(
      `no agent "${address.agent}" is on the NATS servers at ${natsDescription(address)}: is it running with --listen ${description}, and is the id right? (guestlink ls --nats ${natsDescription(address)} lists the agents there)`,
      { cause: err, details: { address: description, reason: "no-such-agent" } },
    );
  }
  if (err instanceof Error && /timeout/i.test(`${err.name} ${err.message}`)) {
    return new ConnectFailedError(
      `agent "${address.agent}" did not answer on ${natsDescription(address)} in time`,
      { cause: err, details: { address: description, reason: "no-answer" } },
    );
  }
  return new ConnectFailedError(
    `cannot open a connection to ${description}: ${err instanceof Error ? err.message : String(err)}`,
    { cause: err, details: { address: description } },
  );
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
}

export interface NatsListenOptions extends CallOptions {
  /** A creds file used when the address names none (`--nats-creds`). */
  creds?: string;
  /** What the agent tells of itself to discovery (`$SRV.INFO`; nats-service.ts). */
  metadata?: () => NatsServiceMetadata;
}

/**
 * Connects to NATS as the agent `address.agent` and accepts the connections dialled to it. The
 * NATS connection reconnects for as long as the listener is open; connections over it break
 * while it is down and their sessions resume once it is back.
 */
export async function listenNats(
  address: NatsAddress,
  options: NatsListenOptions = {},
): Promise<Listener> {
  const description = natsDescription(address, address.agent);
  const onDeadline = () =>
    new ListenFailedError(`connecting to NATS for ${description} did not finish in time`, {
      details: { address: description, reason: "deadline" },
    });
  throwIfDone(options, onDeadline);
  let nc: NatsConnection;
  try {
    nc = await raceCallOptions(
      connectNatsServer(address, options.creds, `guestlink agent ${address.agent}`),
      options,
      { onDeadline, cancel: () => {}, discard: (c) => void c.close() },
    );
  } catch (err) {
    if (err instanceof ConnectFailedError) {
      throw new ListenFailedError(err.message, { cause: err, details: { address: description } });
    }
    throw err;
  }
  // Two agents of one id would each take some of the connections meant for one of them.
  const answered = await nc
    .request(`$SRV.PING.${NATS_SERVICE_NAME}.${address.agent}`, "", { timeout: 1_000 })
    .then(
      () => true,
      () => false,
    );
  if (answered) {
    await nc.close().catch(() => {});
    throw new AddressInUseError(
      `an agent with id "${address.agent}" is already on the NATS servers at ${natsDescription(address)}: stop it, or give this one another id`,
      { details: { address: description } },
    );
  }
  const shared = new SharedConnection(nc, "", natsDescription(address));
  const queue = new AcceptQueue(description);
  const opens = { count: 0, errors: 0, lastError: "" };
  const stopService = serveNatsService(nc, address.agent, options.metadata ?? (() => ({})), {
    subject: natsSubjects.open(address.agent),
    requests: () => opens,
  });
  const sub = nc.subscribe(natsSubjects.open(address.agent), {
    callback: (err, msg) => {
      if (err !== null) {
        queue.fail(new ListenFailedError(`${description}: ${err.message}`, { cause: err }));
        return;
      }
      const open = parseJson(msg.data) as { v?: unknown; conn?: unknown; maxPayload?: unknown };
      if (
        open?.v !== OPEN_VERSION ||
        typeof open.conn !== "string" ||
        !/^[A-Za-z0-9]{1,64}$/.test(open.conn) ||
        typeof open.maxPayload !== "number"
      ) {
        opens.errors++;
        opens.lastError = "a malformed open request";
        msg.respond(JSON.stringify({ error: "a malformed open request (another version?)" }));
        return;
      }
      if (queue.closed) return;
      opens.count++;
      const t = new NatsTransport(
        nc,
        `${description} (connection ${open.conn})`,
        natsSubjects.down(open.conn),
        Math.min(shared.maxPayload, open.maxPayload),
        () => shared.forget(t),
      );
      shared.transports.add(t);
      t.subscribe(natsSubjects.up(open.conn));
      msg.respond(JSON.stringify({ v: OPEN_VERSION, maxPayload: shared.maxPayload }));
      queue.push(t);
    },
  });
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      sub.unsubscribe();
      queue.close();
      await stopService();
      // The sessions over it are closed after the listener (serveSessions): the NATS connection
      // goes once the last of their connections is done.
      shared.onIdle(() => void nc.drain().catch(() => {}));
    })();
    return closing;
  };
  return {
    address: description,
    [Symbol.asyncIterator]: () => queue.iterator(close),
    close,
  };
}

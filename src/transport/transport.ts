/**
 * The transport boundary: a reliable, ordered byte stream, nothing more. Transports know nothing
 * of frames; the session layer above turns bytes into a conversation. Kept as small as
 * capnweb's RpcTransport and nats.js's Transport: send, an async iterator of chunks, close.
 */

/** One end of a connected byte stream. */
export interface Transport {
  /** The address this end is connected to, for logs and errors (e.g. `unix:/run/g.sock`). */
  readonly description: string;

  /**
   * Set when the peer can start a new connection in the middle of this byte stream without this
   * end seeing a break: a virtio-serial port in a guest, whose host reconnects unseen. The session
   * then takes a HELLO in mid-stream as the start of a new connection, and waits for the first
   * HELLO without a handshake timeout (no host may come for hours).
   */
  readonly reconnectsInBand?: boolean;

  /**
   * Set when the byte pipe has no integrity of its own: stray output, stale or damaged bytes can
   * appear in it (stdio, a spawned process, a virtio-serial port, a shared folder). A session that
   * receives over such a pipe never agrees to go without payload checksums.
   */
  readonly lossy?: boolean;

  /**
   * Set when dialling the same address again reaches the same peer (unix, tcp, vsock, fc,
   * mailbox), so the dialling side's session can resume after losing the connection. A process
   * on stdio, or one spawned by `exec:`, is gone with its pipe: a new one is another peer.
   */
  readonly redialable?: boolean;

  /**
   * Set when something in between may accept the connection before the peer listens, and then
   * drop it: a port a hypervisor forwards (QEMU's user-mode hostfwd) while the guest boots. A drop
   * before the handshake then means "not up yet", and dialling again is worthwhile.
   */
  readonly dropsBeforePeer?: boolean;

  /**
   * For a keyed connection (TLS with a pre-shared key, transport/tls.ts): the key's id, 16 hex
   * digits of a hash of it (`keyId`), the same on both ends. Whoever is on the other end holds
   * that key; it says nothing of who else does.
   */
  readonly keyId?: string;

  /**
   * Queues bytes to send, in order. Returns false when the transport's send buffer is above its
   * high-water mark: the caller should await `drain()` before sending more. The chunks must not be
   * modified afterwards. Throws `TRANSPORT_CLOSED` once the transport is closed or aborted.
   */
  send(chunks: readonly Uint8Array[]): boolean;

  /**
   * Resolves when the send buffer is below its high-water mark (at once if it already is).
   * Rejects with `TRANSPORT_CLOSED` if the transport closes before that.
   */
  drain(): Promise<void>;

  /**
   * The bytes the peer sends, in order; one consumer only. The iteration ends when the peer closes
   * its side and throws a `TRANSPORT_FAILED` error when the connection breaks. Not pulling applies
   * backpressure to the peer.
   */
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array>;

  /** Sends what is queued, closes our side, and resolves once the transport is fully closed. */
  close(): Promise<void>;

  /** Closes at once, dropping anything queued. Idempotent. */
  abort(reason?: Error): void;
}

/** Accepts connections on an address until closed. */
export interface Listener {
  /** The address it listens on, in the address syntax (`tcp:127.0.0.1:7070` with the real port). */
  readonly address: string;
  /** Each accepted connection. Ends when the listener is closed. */
  [Symbol.asyncIterator](): AsyncIterator<Transport>;
  /** Stops accepting and releases the address (a Unix socket file is removed). */
  close(): Promise<void>;
}

export type { CallOptions } from "../abort.ts";

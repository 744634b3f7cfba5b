/**
 * Hostile peers for the attack tests, written with the wire encoders on raw sockets (a Session
 * would behave): connections that say nothing, half a HELLO, and a peer that completes the
 * handshake and then does what it likes — sends any frames, reads or stops reading, with any
 * limits in its HELLO. And what the tests measure with: a real client's round trip, a process's
 * memory.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { PROTOCOL_VERSIONS } from "../../src/session/messages.ts";
import type { Session } from "../../src/session/session.ts";
import { parseAddress } from "../../src/transport/address.ts";
import { decodeControl, encodeControl } from "../../src/wire/control.ts";
import { FrameDecoder } from "../../src/wire/decode.ts";
import { FrameEncoder } from "../../src/wire/encode.ts";
import { type Frame, FrameType } from "../../src/wire/frame.ts";

export const MiB = 1024 * 1024;

/** Opens a plain socket to a `tcp:` or `unix:` address. */
export async function dial(address: string): Promise<net.Socket> {
  const a = parseAddress(address);
  const socket =
    a.kind === "tcp"
      ? net.connect({ host: a.host, port: a.port })
      : a.kind === "unix"
        ? net.connect({ path: a.path })
        : undefined;
  if (socket === undefined) throw new Error(`cannot dial ${address} here`);
  socket.on("error", () => {});
  await once(socket, "connect");
  return socket;
}

/** A set of sockets the test holds open, counting those the far end has closed. */
export class Crowd {
  readonly sockets: net.Socket[] = [];
  closedByPeer = 0;

  add(socket: net.Socket): void {
    this.sockets.push(socket);
    socket.once("close", () => {
      this.closedByPeer++;
    });
  }

  get open(): number {
    return this.sockets.length - this.closedByPeer;
  }

  destroy(): void {
    for (const s of this.sockets) s.destroy();
  }
}

/** `n` connections that never send a byte (nor read one). */
export async function silentConnections(address: string, n: number): Promise<Crowd> {
  const crowd = new Crowd();
  // A few at a time: the listen backlog is finite, and a refused connect is not the point.
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, () => dial(address).catch(() => undefined)),
    );
    for (const s of batch) if (s !== undefined) crowd.add(s);
  }
  return crowd;
}

/** A HELLO frame as a client would send it, with `limits` and `extra` over the usual. */
export function helloFrame(
  limits: Record<string, number> = {},
  extra: Record<string, unknown> = {},
): Uint8Array {
  const nonce = randomBytes(8).toString("hex");
  return new FrameEncoder().encode({
    type: FrameType.HELLO,
    payload: encodeControl({
      protocol: [...PROTOCOL_VERSIONS],
      peer: { id: `attacker-${nonce}`, hostname: "attacker", version: "0" },
      services: [],
      limits: {
        maxFrameBytes: 1024 * 1024,
        streamWindowBytes: 65536,
        sessionWindowBytes: 262144,
        ...limits,
      },
      sessionId: `attack-${nonce}`,
      resumeToken: randomBytes(16).toString("hex"),
      incarnation: nonce,
      wallTime: Date.now(),
      nonce,
      ...extra,
    }),
  });
}

/** `n` connections that send the first half of a HELLO and then nothing. */
export async function halfHellos(address: string, n: number): Promise<Crowd> {
  const crowd = await silentConnections(address, n);
  for (const s of crowd.sockets) {
    const hello = helloFrame();
    s.write(hello.subarray(0, Math.floor(hello.length / 2)));
  }
  return crowd;
}

export interface RawPeerOptions {
  /** Limits in its HELLO (absurd ones, say). */
  limits?: Record<string, number>;
  /** Keep reading (and answering PINGs) after the handshake; false stops reading for good. */
  read?: boolean;
}

/**
 * A peer past the handshake that sends whatever frames it is told to, numbering them, and
 * counts what comes back (when it reads): results, and errors by code.
 */
export class RawPeer {
  readonly socket: net.Socket;
  readonly errors = new Map<string, number>();
  results = 0;
  received = 0;
  /** Why the far end ended the session (ERROR on stream 0), if it did. */
  sessionError: string | undefined;
  #seq = 0;
  readonly #encoder = new FrameEncoder();
  readonly #decoder = new FrameDecoder();

  private constructor(socket: net.Socket) {
    this.socket = socket;
  }

  static async connect(address: string, options: RawPeerOptions = {}): Promise<RawPeer> {
    const socket = await dial(address);
    const peer = new RawPeer(socket);
    socket.write(helloFrame(options.limits));
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        for (const frame of peer.#decoder.push(chunk)) {
          if (frame.type === FrameType.HELLO) {
            socket.off("data", onData);
            socket.off("close", onClose);
            if (options.read === false) socket.pause();
            else socket.on("data", (more: Buffer) => peer.#take(more));
            resolve();
            return;
          }
          if (frame.type === FrameType.ERROR && frame.streamId === 0) {
            reject(new Error(`refused: ${JSON.stringify(decodeControl(frame.payload))}`));
            return;
          }
        }
      };
      const onClose = () => reject(new Error("closed in the handshake"));
      socket.on("data", onData);
      socket.once("close", onClose);
    });
    return peer;
  }

  get closed(): boolean {
    return this.socket.destroyed || this.socket.readableEnded;
  }

  /** Sends a numbered frame; resolves at once, or when the socket has room again. */
  async send(type: FrameType, streamId: number, body?: unknown): Promise<void> {
    this.#seq++;
    const payload =
      body === undefined ? undefined : body instanceof Uint8Array ? body : encodeControl(body);
    const ok = this.socket.write(
      this.#encoder.encode({ type, streamId, seq: this.#seq, ...(payload ? { payload } : {}) }),
    );
    if (!ok && !this.socket.destroyed) {
      const socket = this.socket;
      await new Promise<void>((resolve) => {
        const done = () => {
          socket.off("drain", done);
          socket.off("close", done);
          resolve();
        };
        socket.on("drain", done);
        socket.on("close", done);
      });
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  #take(chunk: Buffer): void {
    for (const frame of this.#decoder.push(chunk)) this.#frame(frame);
  }

  #frame(frame: Frame): void {
    this.received++;
    if (frame.type === FrameType.RESULT) this.results++;
    else if (frame.type === FrameType.ERROR) {
      const body = decodeControl(frame.payload) as { code?: string };
      const code = body.code ?? "?";
      if (frame.streamId === 0) this.sessionError = code;
      else this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
    } else if (frame.type === FrameType.PING) {
      const { sentAt } = decodeControl(frame.payload) as { sentAt: number };
      this.socket.write(
        this.#encoder.encode({
          type: FrameType.PONG,
          payload: encodeControl({ sentAt, wallTime: Date.now() }),
        }),
      );
    }
  }
}

/** Round trips of `ping` on `session`, in ms: median, 99th percentile and worst of `n`. */
export interface RoundTrips {
  n: number;
  p50: number;
  p99: number;
  max: number;
  failed: number;
}

export async function roundTrips(session: Session, n: number): Promise<RoundTrips> {
  const times: number[] = [];
  let failed = 0;
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    try {
      await session.call("ping", { i }, { deadline: performance.now() + 10_000 });
      times.push(performance.now() - started);
    } catch {
      failed++;
    }
  }
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? NaN;
  return { n, p50: at(0.5), p99: at(0.99), max: times.at(-1) ?? NaN, failed };
}

export function formatTrips(r: RoundTrips): string {
  return `p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(2)} ms over ${r.n}${r.failed ? `, ${r.failed} FAILED` : ""}`;
}

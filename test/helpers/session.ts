/** Sessions over an in-memory pair with a fake clock, and a scripted (possibly hostile) peer. */

import { createHash } from "node:crypto";
import { toDuplex } from "../../src/platform/duplex.ts";
import { PROTOCOL_VERSIONS } from "../../src/session/messages.ts";
import type { SessionOptions } from "../../src/session/options.ts";
import { Session } from "../../src/session/session.ts";
import type { SessionStream } from "../../src/session/stream.ts";
import { memoryPair } from "../../src/transport/memory.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { decodeControl, encodeControl } from "../../src/wire/control.ts";
import { FrameDecoder } from "../../src/wire/decode.ts";
import { FrameEncoder } from "../../src/wire/encode.ts";
import { type Frame, FrameType } from "../../src/wire/frame.ts";
import { FakeClock, fakeRuntime, settle } from "./fake-clock.ts";

type Extra = Partial<Omit<SessionOptions, "role" | "runtime">>;

export function sessionPair(opts: { client?: Extra; server?: Extra; highWaterMark?: number } = {}) {
  const clock = new FakeClock();
  const [a, b] = memoryPair({ highWaterMark: opts.highWaterMark ?? 64 * 1024 });
  const client = new Session(a, {
    role: "client",
    runtime: fakeRuntime(clock),
    peer: { id: "host", hostname: "host.local", version: "test" },
    ...opts.client,
  });
  const server = new Session(b, {
    role: "server",
    runtime: fakeRuntime(clock),
    peer: { id: "agent-1", hostname: "guest.local", version: "test" },
    ...opts.server,
  });
  return { clock, client, server, transports: [a, b] as const };
}

/** A valid HELLO payload, overridable field by field. */
export function helloPayload(overrides: Record<string, unknown> = {}): Uint8Array {
  return encodeControl({
    protocol: [...PROTOCOL_VERSIONS],
    peer: { id: "scripted", hostname: "scripted", version: "0" },
    services: [],
    limits: { maxFrameBytes: 1024 * 1024, streamWindowBytes: 65536, sessionWindowBytes: 262144 },
    sessionId: "s",
    resumeToken: "t",
    incarnation: "i",
    wallTime: 0,
    ...overrides,
  });
}

/**
 * The far end of a real session, driven by hand: send whatever frames (or bytes) a test wants,
 * and read what the session sent, decoded.
 */
export class ScriptedPeer {
  readonly transport: Transport;
  readonly received: Frame[] = [];
  readonly #encoder = new FrameEncoder();
  readonly #decoder = new FrameDecoder();
  ended = false;

  constructor(transport: Transport) {
    this.transport = transport;
    void this.#read();
  }

  async #read(): Promise<void> {
    try {
      for await (const chunk of this.transport) this.received.push(...this.#decoder.push(chunk));
    } catch {
      // the session cut us off: that is what some tests expect
    }
    this.ended = true;
  }

  send(
    type: number,
    streamId: number,
    seq: number,
    payload?: Uint8Array | Record<string, unknown>,
  ) {
    const bytes =
      payload instanceof Uint8Array || payload === undefined ? payload : encodeControl(payload);
    this.transport.send(this.#encoder.encodeParts({ type, streamId, seq, payload: bytes }));
  }

  sendBytes(bytes: Uint8Array) {
    this.transport.send([bytes]);
  }

  hello(overrides: Record<string, unknown> = {}) {
    this.send(FrameType.HELLO, 0, 0, helloPayload(overrides));
  }

  /** Frames of `type` received so far, with control payloads decoded. */
  frames(type: number): { frame: Frame; body: Record<string, unknown> | undefined }[] {
    return this.received
      .filter((f) => f.type === type)
      .map((frame) => ({
        frame,
        body:
          type === FrameType.DATA || frame.payload.length === 0
            ? undefined
            : decodeControl(frame.payload),
      }));
  }
}

export function scriptedPair(extra: Extra = {}) {
  const clock = new FakeClock();
  const [a, b] = memoryPair();
  const session = new Session(a, { role: "client", runtime: fakeRuntime(clock), ...extra });
  return { clock, session, peer: new ScriptedPeer(b) };
}

/** Writes what arrives on `input` to `output`, consuming as it goes; resolves at input's end. */
export function copyStream(input: SessionStream, output: SessionStream): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    input.attach({
      data: (chunk) => {
        output.write(chunk.slice());
        input.consumed(chunk.length);
      },
      end: () => resolve(),
      error: reject,
    });
  });
}

/** Reads a stream to its end as a Node stream would: its sha256 and length, nothing kept. */
export async function hashStream(
  stream: SessionStream,
): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of toDuplex(stream)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** Reads a stream to its end, consuming as it goes; resolves with all bytes. */
export function readAll(stream: SessionStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    stream.attach({
      data: (chunk) => {
        chunks.push(chunk.slice());
        stream.consumed(chunk.length);
      },
      end: () => resolve(Buffer.concat(chunks)),
      error: reject,
    });
  });
}

export { settle };

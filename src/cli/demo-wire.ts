/**
 * The demo's last chapter: frames sent through a channel that injects what real channels do
 * (stray log lines on stdio, half frames left in a serial port, headers claiming gigabytes,
 * random bytes, bit flips, arbitrary chunking); every intact frame comes out in order,
 * byte-exact, with nothing invented and memory bounded.
 */
import { nodeCrc32 } from "../platform/node.ts";
import { mulberry32 } from "../prng.ts";
import {
  DEFAULT_MAX_FRAME_BYTES,
  type Frame,
  FrameDecoder,
  FrameEncoder,
  FrameType,
  HEADER_BYTES,
} from "../wire/index.ts";

export interface WireDemoReport {
  seed: number;
  sent: number;
  sentBytes: number;
  corrupted: number;
  injected: { logLines: number; halfFrames: number; hugeHeaders: number; randomBytes: number };
  received: number;
  inOrderAndExact: boolean;
  invented: number;
  stats: FrameDecoder["stats"];
  peakBufferedBytes: number;
  bufferLimitBytes: number;
  ok: boolean;
}

export function runWireDemo(seed: number, count = 2000): WireDemoReport {
  const random = mulberry32(seed);
  const int = (n: number) => Math.floor(random() * n);
  const encoder = new FrameEncoder({ payloadChecksum: true, checksum: nodeCrc32 });
  const lies = new FrameEncoder();
  const text = new TextEncoder();
  const injected = { logLines: 0, halfFrames: 0, hugeHeaders: 0, randomBytes: 0 };
  const chunks: Uint8Array[] = [];
  const expected: Frame[] = [];
  let sentBytes = 0;
  let corrupted = 0;

  for (let i = 0; i < count; i++) {
    const payload = new Uint8Array(int(4) === 0 ? int(64 * 1024) : int(200));
    for (let j = 0; j < payload.length; j += 97) payload[j] = int(256);
    const frame = { type: FrameType.DATA, streamId: 1 + int(8), seq: i, payload };
    const bytes = encoder.encode(frame);
    sentBytes += bytes.length;
    if (payload.length > 0 && int(50) === 0) {
      const at = HEADER_BYTES + int(payload.length);
      bytes[at] = (bytes[at] as number) ^ (1 + int(255));
      corrupted++;
    } else {
      expected.push({ ...frame, flags: bytes[6] as number });
    }
    chunks.push(bytes);
    switch (int(12)) {
      case 0:
        chunks.push(text.encode(`[ ${int(99999)}.123] agent: telemetry task restarted\n`));
        injected.logLines++;
        break;
      case 1: {
        const half = encoder.encode({
          type: FrameType.DATA,
          payload: new Uint8Array(300 + int(900)),
        });
        chunks.push(half.subarray(0, HEADER_BYTES + int(200)));
        injected.halfFrames++;
        break;
      }
      case 2: {
        // A header whose checksum is right but which claims 4 GiB: never believed.
        const liar = lies.encode({ type: FrameType.DATA });
        new DataView(liar.buffer).setUint32(20, 0xffffffff);
        new DataView(liar.buffer).setUint32(28, nodeCrc32(liar.subarray(0, 28)));
        chunks.push(liar);
        injected.hugeHeaders++;
        break;
      }
      case 3: {
        const noise = new Uint8Array(1 + int(2000)).map(() => int(256));
        chunks.push(noise);
        injected.randomBytes += noise.length;
        break;
      }
    }
  }

  // Deliver in arbitrary pieces, as pipes do.
  const stream = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    stream.set(c, o);
    o += c.length;
  }
  const decoder = new FrameDecoder({ checksum: nodeCrc32 });
  const received: Frame[] = [];
  let peak = 0;
  for (let at = 0; at < stream.length; ) {
    const size = 1 + int(int(2) === 0 ? 16 : 128 * 1024);
    received.push(...decoder.push(stream.subarray(at, at + size)));
    peak = Math.max(peak, decoder.bufferedBytes);
    at += size;
  }
  // The end of input: give up on frames in progress, as a session's stall ticks do, once for each
  // (the bytes of an abandoned one may begin another; each resync drops at least a byte).
  for (let held = -1; decoder.bufferedBytes !== held; ) {
    held = decoder.bufferedBytes;
    received.push(...decoder.resync());
  }

  const same = (a: Frame, b: Frame) =>
    a.seq === b.seq &&
    a.streamId === b.streamId &&
    a.payload.length === b.payload.length &&
    a.payload.every((v, k) => v === b.payload[k]);
  const inOrderAndExact =
    received.length === expected.length && received.every((f, k) => same(f, expected[k] as Frame));
  const invented = received.filter((f) => !expected.some((e) => e.seq === f.seq)).length;
  const bufferLimitBytes = DEFAULT_MAX_FRAME_BYTES + HEADER_BYTES;
  return {
    seed,
    sent: count,
    sentBytes,
    corrupted,
    injected,
    received: received.length,
    inOrderAndExact,
    invented,
    stats: { ...decoder.stats },
    peakBufferedBytes: peak,
    bufferLimitBytes,
    ok: inOrderAndExact && invented === 0 && peak <= bufferLimitBytes,
  };
}

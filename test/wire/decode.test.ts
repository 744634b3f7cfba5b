import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { nodeCrc32 } from "../../src/platform/node.ts";
import {
  type Frame,
  FrameDecoder,
  FrameEncoder,
  type FrameInit,
  FrameType,
  HEADER_BYTES,
  MAGIC,
} from "../../src/wire/index.ts";
import {
  concat,
  decodeInPieces,
  encodeAll,
  flip,
  forgedHeader,
  plain,
  resealHeader,
} from "../helpers/wire.ts";

const text = (s: string) => new TextEncoder().encode(s);

const SAMPLE: FrameInit[] = [
  { type: FrameType.HELLO, payload: text("hello there") },
  { type: FrameType.CALL, streamId: 1, seq: 1, payload: text("call one") },
  { type: FrameType.PING, seq: 2 },
  { type: FrameType.DATA, streamId: 1, seq: 3, payload: new Uint8Array(300).fill(0xab) },
  { type: FrameType.END, streamId: 1, seq: 4 },
  { type: FrameType.DATA, streamId: 7, seq: 5, payload: Uint8Array.from(MAGIC) },
];

function assertStatsBalance(decoder: FrameDecoder, fed: number) {
  const s = decoder.stats;
  assert.equal(s.frameBytes + s.skippedBytes + decoder.bufferedBytes, fed, JSON.stringify(s));
}

describe("FrameDecoder", () => {
  for (const payloadChecksum of [false, true]) {
    it(`decodes the same frames at every split point (payload checksum ${payloadChecksum ? "on" : "off"})`, () => {
      const bytes = encodeAll(SAMPLE, { payloadChecksum });
      for (let cut = 0; cut <= bytes.length; cut++) {
        const decoder = new FrameDecoder();
        const frames = decodeInPieces(decoder, bytes, [cut]);
        assert.deepEqual(frames.map(plain), SAMPLE.map(plain), `split at ${cut}`);
        assert.equal(decoder.stats.skippedBytes, 0);
        assert.equal(decoder.bufferedBytes, 0);
      }
    });
  }

  it("takes a payload spread over chunks that lie side by side in one buffer as a view, not a copy", () => {
    const payload = randomBytes(5000);
    const frame = { type: FrameType.DATA, streamId: 1, seq: 1, payload };
    const bytes = encodeAll([frame], { payloadChecksum: true });
    // Three reads into one buffer, one after the other (as the socket transports read).
    const cuts = [0, 100, 2000, bytes.length];
    const decoder = new FrameDecoder();
    const frames = cuts.slice(1).flatMap((end, i) => decoder.push(bytes.subarray(cuts[i], end)));
    assert.equal(frames.length, 1);
    const got = (frames[0] as Frame).payload;
    assert.deepEqual(got, new Uint8Array(payload));
    assert.equal(got.buffer, bytes.buffer, "a view into the chunks' buffer");
    assert.equal(got.byteOffset, bytes.byteOffset + HEADER_BYTES);
    // The same bytes in separate buffers: assembled in a buffer of the payload's own.
    const apart = new FrameDecoder();
    const copied = cuts
      .slice(1)
      .flatMap((end, i) => apart.push(bytes.slice(cuts[i], end)))
      .map((f) => f.payload);
    assert.equal(copied.length, 1);
    assert.deepEqual(copied[0], new Uint8Array(payload));
    assert.equal((copied[0] as Uint8Array).length, (copied[0] as Uint8Array).buffer.byteLength);
  });

  it("assembles a payload whose later chunks stop lying side by side, and rejects a damaged one", () => {
    const payload = randomBytes(3000);
    const bytes = encodeAll([{ type: FrameType.DATA, streamId: 1, seq: 1, payload }], {
      payloadChecksum: true,
    });
    const decoder = new FrameDecoder();
    const first = decoder.push(bytes.subarray(0, 1000));
    const second = decoder.push(bytes.subarray(1000, 2000)); // side by side: still a view
    const third = decoder.push(bytes.slice(2000)); // a buffer of its own: now a copy
    assert.deepEqual([...first, ...second], []);
    assert.equal(third.length, 1);
    assert.deepEqual((third[0] as Frame).payload, new Uint8Array(payload));
    const damaged = bytes.slice();
    flip(damaged, HEADER_BYTES + 2500);
    const strict = new FrameDecoder();
    const none = [1000, 2000, damaged.length].flatMap((end, i, ends) =>
      strict.push(damaged.subarray(i === 0 ? 0 : (ends[i - 1] as number), end)),
    );
    assert.deepEqual(none, []);
    assert.equal(strict.stats.badPayloads, 1);
    assertStatsBalance(strict, damaged.length);
  });

  it("decodes the same frames fed one byte at a time", () => {
    const bytes = encodeAll(SAMPLE, { payloadChecksum: true });
    const decoder = new FrameDecoder();
    const cuts = Array.from({ length: bytes.length - 1 }, (_, i) => i + 1);
    assert.deepEqual(decodeInPieces(decoder, bytes, cuts).map(plain), SAMPLE.map(plain));
  });

  it("skips a stray log line, half a frame and a fake magic, and counts what it skipped", () => {
    const frames = encodeAll(SAMPLE.slice(0, 2));
    const half = encodeAll([SAMPLE[3] as FrameInit], { payloadChecksum: true }).subarray(0, 100);
    const log = text("2026-11-24T12:00:00Z INFO agent starting\n");
    const garbage = concat([log, Uint8Array.from(MAGIC), text("xyz"), half]);
    // The half frame's header is believed and its "payload" swallows what follows until the
    // payload checksum fails; then those bytes are scanned again and nothing real is lost.
    const withCrc = encodeAll(SAMPLE, { payloadChecksum: true });
    const bytes = concat([garbage, frames, garbage, withCrc]);
    const decoder = new FrameDecoder();
    const out = decoder.push(bytes);
    assert.deepEqual(out.map(plain), [...SAMPLE.slice(0, 2), ...SAMPLE].map(plain));
    assert.ok(decoder.stats.skippedBytes >= 2 * log.length);
    assertStatsBalance(decoder, bytes.length);
  });

  it("rejects a header that checks out but claims more than the maximum frame size", () => {
    const liar = forgedHeader({ length: 0xffffffff });
    const bytes = concat([liar, encodeAll(SAMPLE)]);
    const decoder = new FrameDecoder();
    const out = decoder.push(bytes);
    assert.deepEqual(out.map(plain), SAMPLE.map(plain));
    assert.equal(decoder.stats.oversize, 1);
    assert.equal(decoder.stats.skippedBytes, HEADER_BYTES);
    assert.equal(decoder.bufferedBytes, 0, "never allocated for the claimed length");
  });

  it("honours a smaller configured maximum", () => {
    const decoder = new FrameDecoder({ maxFrameBytes: 1024 });
    const big = { type: FrameType.DATA, payload: new Uint8Array(1025) };
    const ok = { type: FrameType.DATA, payload: new Uint8Array(1024) };
    const out = decoder.push(encodeAll([big, ok]));
    assert.deepEqual(out.map(plain), [plain(ok)]);
    assert.equal(decoder.stats.oversize, 1);
  });

  it("rejects headers with a bad checksum, wrong version, reserved bits or unknown flags", () => {
    const good = encodeAll([{ type: FrameType.PING }]);
    const badCrc = good.slice();
    badCrc[10] = 0xff;
    const liars = [
      badCrc,
      resealHeader(good, (h) => {
        h[4] = 2;
      }),
      resealHeader(good, (h) => {
        h[7] = 1;
      }),
      resealHeader(good, (h) => {
        h[6] = 0x80;
      }),
      resealHeader(good, (h) => {
        h[27] = 1; // payload crc set without the flag
      }),
      resealHeader(good, (h) => {
        h[12] = 0xff; // sequence beyond 2^53-1
      }),
      resealHeader(good, (h) => {
        h[6] = 1; // payload checksum flag on an empty payload
        h[27] = 1;
      }),
    ];
    const decoder = new FrameDecoder();
    const out = decoder.push(concat([...liars, encodeAll(SAMPLE)]));
    assert.deepEqual(out.map(plain), SAMPLE.map(plain));
    assert.equal(decoder.stats.badHeaders, liars.length);
  });

  it("drops a frame whose payload checksum fails and never yields it", () => {
    const bytes = encodeAll(SAMPLE, { payloadChecksum: true });
    // Flip a byte inside the DATA frame's payload (the fourth frame).
    const dataStart = encodeAll(SAMPLE.slice(0, 3), { payloadChecksum: true }).length;
    flip(bytes, dataStart + HEADER_BYTES + 10);
    for (const cuts of [[], [dataStart + HEADER_BYTES + 5]]) {
      const decoder = new FrameDecoder();
      const out = decodeInPieces(decoder, bytes, cuts);
      assert.deepEqual(out.map(plain), [...SAMPLE.slice(0, 3), ...SAMPLE.slice(4)].map(plain));
      assert.equal(decoder.stats.badPayloads, 1);
      assertStatsBalance(decoder, bytes.length);
    }
  });

  it("finds the frames a stale truncated frame swallowed once its payload checksum fails", () => {
    // A serial port holds the start of a frame from an earlier connection; the new connection's
    // frames follow. The stale header is believed (its checksum is fine) until the payload fails.
    const stale = encodeAll([{ type: FrameType.DATA, payload: new Uint8Array(1500).fill(7) }], {
      payloadChecksum: true,
    }).subarray(0, HEADER_BYTES + 200);
    const fresh = encodeAll(SAMPLE, { payloadChecksum: true });
    // Later traffic completes the stale frame's "payload".
    const later = encodeAll([...SAMPLE, ...SAMPLE, ...SAMPLE], { payloadChecksum: true });
    const decoder = new FrameDecoder();
    const first = decoder.push(concat([stale, fresh]));
    assert.deepEqual(first, [], "the fresh frames sit inside the stale frame's payload for now");
    const rest = decoder.push(later);
    assert.deepEqual(rest.map(plain), [...SAMPLE, ...SAMPLE, ...SAMPLE, ...SAMPLE].map(plain));
    assert.equal(decoder.stats.badPayloads, 1);
  });

  it("resync() gives up on a stale frame in progress and yields the frames it held", () => {
    const stale = forgedHeader({ length: 4000, payloadCrc: 1234 });
    const fresh = encodeAll(SAMPLE, { payloadChecksum: true });
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(concat([stale, fresh])), []);
    const found = decoder.resync();
    assert.deepEqual(found.map(plain), SAMPLE.map(plain));
    assert.equal(decoder.stats.abandoned, 1);
    assert.equal(decoder.bufferedBytes, 0);
    assert.deepEqual(decoder.resync(), [], "nothing in progress: nothing to do");
  });

  it("reset() drops a partial frame and starts clean", () => {
    const bytes = encodeAll(SAMPLE);
    const decoder = new FrameDecoder();
    decoder.push(bytes.subarray(0, 40));
    assert.ok(decoder.bufferedBytes > 0);
    decoder.reset();
    assert.equal(decoder.bufferedBytes, 0);
    assert.deepEqual(decoder.push(bytes).map(plain), SAMPLE.map(plain));
    assertStatsBalance(decoder, 40 + bytes.length);
  });

  it("yields frames of unknown type: the session, not the wire, decides they are an error", () => {
    const decoder = new FrameDecoder();
    const [frame] = decoder.push(encodeAll([{ type: 200, payload: Uint8Array.of(1) }]));
    assert.equal(frame?.type, 200);
  });

  it("checks payloads with an injected CRC-32 that agrees with the built-in one", () => {
    const bytes = encodeAll(SAMPLE, { payloadChecksum: true });
    const decoder = new FrameDecoder({ checksum: nodeCrc32 });
    assert.deepEqual(decoder.push(bytes).map(plain), SAMPLE.map(plain));
  });

  it("keeps no more than one maximum frame buffered while fed 100 MB of garbage", () => {
    const maxFrameBytes = 64 * 1024;
    const decoder = new FrameDecoder({ maxFrameBytes });
    const chunk = randomBytes(1024 * 1024);
    // Sprinkle fake magics, oversize liars and plausible liars with bad payload checksums.
    for (let o = 0; o + HEADER_BYTES < chunk.length; o += 997) chunk.set(MAGIC, o);
    for (let o = 501; o + HEADER_BYTES < chunk.length; o += 7919) {
      chunk.set(forgedHeader({ length: 2 ** 31 }), o);
    }
    for (let o = 4001; o + HEADER_BYTES < chunk.length; o += 104729) {
      chunk.set(forgedHeader({ length: maxFrameBytes, payloadCrc: 1 }), o);
    }
    let peak = 0;
    let frames: Frame[] = [];
    const total = 100;
    for (let i = 0; i < total; i++) {
      for (let o = 0; o < chunk.length; o += 65536) {
        frames = frames.concat(decoder.push(chunk.subarray(o, o + 65536)));
        peak = Math.max(peak, decoder.bufferedBytes);
      }
    }
    assert.deepEqual(frames, []);
    assert.ok(peak <= maxFrameBytes + HEADER_BYTES, `peak buffered ${peak}`);
    assert.ok(decoder.stats.oversize > 0 && decoder.stats.badPayloads > 0);
    assertStatsBalance(decoder, total * chunk.length);
    // And it still decodes real frames afterwards.
    decoder.resync();
    const after = decoder.push(encodeAll(SAMPLE));
    assert.deepEqual(after.map(plain).slice(-SAMPLE.length), SAMPLE.map(plain));
  });

  it("encodes and decodes with the payload checksum through FrameEncoder.encodeParts", () => {
    const encoder = new FrameEncoder({ payloadChecksum: true });
    const decoder = new FrameDecoder();
    const out: Frame[] = [];
    for (const frame of SAMPLE)
      for (const part of encoder.encodeParts(frame)) out.push(...decoder.push(part));
    assert.deepEqual(out.map(plain), SAMPLE.map(plain));
  });
});

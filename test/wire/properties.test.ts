/**
 * Seeded properties of the wire: round trips under any chunking, recovery after any garbage, and
 * no invented frames under random corruption. `GUESTLINK_SEED=n` replays a failure.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  type Frame,
  FrameDecoder,
  type FrameInit,
  HEADER_BYTES,
  MAGIC,
} from "../../src/wire/index.ts";
import { check } from "../helpers/seed.ts";
import { concat, decodeInPieces, encodeAll, flip, forgedHeader, plain } from "../helpers/wire.ts";

const MAX_FRAME_BYTES = 4096;

const frameArb: fc.Arbitrary<FrameInit> = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  streamId: fc.nat({ max: 0xffffffff }),
  seq: fc.oneof(fc.nat({ max: 1000 }), fc.maxSafeNat()),
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.uint8Array({ minLength: 1000, maxLength: MAX_FRAME_BYTES }),
  ),
});

/** Cut points for a buffer of `length` bytes: any number, anywhere, sorted. */
function cutsArb(length: number): fc.Arbitrary<number[]> {
  return fc
    .uniqueArray(fc.integer({ min: 1, max: Math.max(1, length - 1) }), { maxLength: 40 })
    .map((cuts) => cuts.filter((c) => c < length).sort((a, b) => a - b));
}

/**
 * Garbage a real channel sees: random bytes, fake magics, text, headers with a valid checksum
 * that claim more than the maximum frame size, headers with a bad checksum claiming anything, and
 * (when payload checksums are on) plausible headers whose payload checksum cannot match.
 */
function garbageArb(payloadChecksum: boolean): fc.Arbitrary<Uint8Array> {
  const pieces: fc.Arbitrary<Uint8Array>[] = [
    fc.uint8Array({ minLength: 1, maxLength: 200 }),
    fc.constant(Uint8Array.from(MAGIC)),
    fc.nat({ max: 3 }).map((n) => MAGIC.subarray(0, n + 1)),
    fc.string({ maxLength: 80 }).map((s) => new TextEncoder().encode(`${s}\n`)),
    fc
      .integer({ min: MAX_FRAME_BYTES + 1, max: 0xffffffff })
      .map((length) => forgedHeader({ length })),
    fc.tuple(fc.nat({ max: 0xffffffff }), fc.integer({ min: 4, max: 27 })).map(([length, at]) => {
      const h = forgedHeader({ length });
      h[at] = (h[at] as number) ^ 0x5a;
      return h;
    }),
  ];
  if (payloadChecksum) {
    pieces.push(
      fc
        .tuple(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 0xffffffff }))
        .map(([length, payloadCrc]) => forgedHeader({ length, payloadCrc })),
    );
  }
  return fc.array(fc.oneof(...pieces), { minLength: 1, maxLength: 4 }).map(concat);
}

/** Feeds everything, then gives up on whatever is still in progress (end of input). */
function decodeAll(bytes: Uint8Array, cuts: readonly number[]): Frame[] {
  const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES });
  const out = decodeInPieces(decoder, bytes, cuts);
  for (let i = 0; i < 1000 && decoder.bufferedBytes >= HEADER_BYTES; i++)
    out.push(...decoder.resync());
  return out;
}

describe("wire properties", () => {
  it("decode(encode(frames)) is the identity under any chunking", () => {
    check(
      fc.property(
        fc.array(frameArb, { maxLength: 12 }),
        fc.boolean(),
        fc.context(),
        (frames, crc, ctx) => {
          const bytes = encodeAll(frames, { payloadChecksum: crc, maxFrameBytes: MAX_FRAME_BYTES });
          return fc.assert(
            fc.property(cutsArb(bytes.length), (cuts) => {
              ctx.log(`cuts ${cuts}`);
              assert.deepEqual(decodeAll(bytes, cuts).map(plain), frames.map(plain));
            }),
            { numRuns: 5 },
          );
        },
      ),
      100,
    );
  });

  for (const payloadChecksum of [false, true]) {
    it(`recovers every intact frame, in order and nothing else, after garbage (payload checksum ${payloadChecksum ? "on" : "off"})`, () => {
      check(
        fc.property(
          fc.array(fc.tuple(garbageArb(payloadChecksum), frameArb), {
            minLength: 1,
            maxLength: 10,
          }),
          fc.nat(),
          (pairs, cutSeed) => {
            const frames = pairs.map(([, f]) => f);
            const bytes = concat(
              pairs.flatMap(([garbage, frame]) => [
                garbage,
                encodeAll([frame], { payloadChecksum, maxFrameBytes: MAX_FRAME_BYTES }),
              ]),
            );
            const cuts = [...new Set([cutSeed % bytes.length, (cutSeed * 7919) % bytes.length])]
              .filter((c) => c > 0)
              .sort((a, b) => a - b);
            assert.deepEqual(decodeAll(bytes, cuts).map(plain), frames.map(plain));
          },
        ),
        300,
      );
    });
  }

  it("random byte flips never crash the decoder and never yield a frame that was not sent", () => {
    check(
      fc.property(
        fc.array(frameArb, { minLength: 1, maxLength: 10 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.nat(),
        (frames, flips, cutSeed) => {
          const bytes = encodeAll(frames, {
            payloadChecksum: true,
            maxFrameBytes: MAX_FRAME_BYTES,
          });
          for (const [at, mask] of flips) flip(bytes, at % bytes.length, mask);
          const out = decodeAll(
            bytes,
            [cutSeed % bytes.length].filter((c) => c > 0),
          );
          // Every frame yielded is one that was sent, in the order sent.
          const sent = frames.map((f) => JSON.stringify(plain(f)));
          let next = 0;
          for (const frame of out) {
            const key = JSON.stringify(plain(frame));
            while (next < sent.length && sent[next] !== key) next++;
            assert.ok(
              next < sent.length,
              `yielded a frame that was never sent: ${key.slice(0, 120)}`,
            );
            next++;
          }
        },
      ),
      300,
    );
  });
});

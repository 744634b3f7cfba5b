import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import zlib from "node:zlib";
import {
  decodeControl,
  FrameDecoder,
  FrameEncoder,
  FrameFlag,
  FrameType,
  frameTypeName,
} from "../../src/wire/index.ts";

interface Vectors {
  frames: {
    name: string;
    hex: string;
    frame: {
      type: number;
      typeName: string;
      flags: number;
      streamId: number;
      seq: number;
      payloadHex: string;
      control?: unknown;
    };
  }[];
  rejects: {
    name: string;
    hex: string;
    requirePayloadChecksum?: boolean;
    expect: Record<string, number>;
  }[];
}

const vectors: Vectors = JSON.parse(readFileSync(new URL("vectors.json", import.meta.url), "utf8"));
const fromHex = (h: string) => new Uint8Array(Buffer.from(h, "hex"));

describe("wire test vectors", () => {
  it("cover every frame type, with and without payload checksums, and a required one missing", () => {
    const types = new Set(vectors.frames.map((v) => v.frame.type));
    for (const type of Object.values(FrameType)) assert.ok(types.has(type), frameTypeName(type));
    assert.ok(vectors.frames.some((v) => v.frame.flags & FrameFlag.PAYLOAD_CHECKSUM));
    assert.ok(vectors.rejects.some((v) => v.requirePayloadChecksum));
  });

  for (const v of vectors.frames) {
    it(`${v.name}: decodes to its meaning and encodes back to the same bytes`, () => {
      const bytes = fromHex(v.hex);
      // An independent check of the header checksum (zlib's CRC-32, not the wire's own).
      assert.equal(new DataView(bytes.buffer).getUint32(28), zlib.crc32(bytes.subarray(0, 28)));
      const decoder = new FrameDecoder();
      const frames = decoder.push(bytes);
      assert.equal(frames.length, 1);
      assert.equal(decoder.stats.skippedBytes, 0);
      const f = frames[0];
      assert.ok(f);
      assert.equal(f.type, v.frame.type);
      assert.equal(frameTypeName(f.type), v.frame.typeName);
      assert.equal(f.flags, v.frame.flags);
      assert.equal(f.streamId, v.frame.streamId);
      assert.equal(f.seq, v.frame.seq);
      assert.equal(Buffer.from(f.payload).toString("hex"), v.frame.payloadHex);
      if (v.frame.control !== undefined)
        assert.deepEqual(decodeControl(f.payload), v.frame.control);

      const encoder = new FrameEncoder({
        payloadChecksum: (v.frame.flags & FrameFlag.PAYLOAD_CHECKSUM) !== 0,
      });
      const again = encoder.encode({
        type: v.frame.type,
        streamId: v.frame.streamId,
        seq: v.frame.seq,
        payload: fromHex(v.frame.payloadHex),
      });
      assert.equal(Buffer.from(again).toString("hex"), v.hex);
    });
  }

  for (const v of vectors.rejects) {
    it(`rejects: ${v.name}`, () => {
      const decoder = new FrameDecoder({ requirePayloadChecksum: v.requirePayloadChecksum });
      const frames = decoder.push(fromHex(v.hex));
      assert.equal(frames.length, v.expect.frames);
      for (const [counter, value] of Object.entries(v.expect)) {
        if (counter === "frames") continue;
        assert.equal(decoder.stats[counter as keyof typeof decoder.stats], value, counter);
      }
    });
  }
});

/**
 * Writes test/wire/vectors.json: hex-encoded frames of every type with their decoded meaning, and
 * inputs a receiver must reject. Run with `npx tsx scripts/gen-wire-vectors.ts` after a deliberate
 * wire change (and say so in docs/protocol.md); test/wire/vectors.test.ts checks both directions.
 */
import { writeFileSync } from "node:fs";
import { writeHeader } from "../src/wire/header.ts";
import { encodeControl, FrameEncoder, FrameType, frameTypeName } from "../src/wire/index.ts";
import { flip } from "../test/helpers/wire.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

const examples: {
  type: number;
  streamId: number;
  seq: number;
  control?: unknown;
  data?: string;
}[] = [
  {
    type: FrameType.HELLO,
    streamId: 0,
    seq: 0,
    control: { protocol: [4, 4], peer: { id: "vm-1" }, uncheckedPayloads: true },
  },
  { type: FrameType.CALL, streamId: 1, seq: 1, control: { method: "info", params: {} } },
  { type: FrameType.RESULT, streamId: 1, seq: 2, control: { value: { hostname: "guest" } } },
  {
    type: FrameType.ERROR,
    streamId: 3,
    seq: 3,
    control: { code: "METHOD_NOT_FOUND", message: "no such method" },
  },
  { type: FrameType.CANCEL, streamId: 3, seq: 4, control: { reason: "deadline" } },
  { type: FrameType.DATA, streamId: 5, seq: 5, data: "hello, world\n" },
  { type: FrameType.WINDOW, streamId: 5, seq: 6, control: { credit: 262144 } },
  { type: FrameType.END, streamId: 5, seq: 7 },
  { type: FrameType.RESET, streamId: 5, seq: 8, control: { code: "CANCELLED" } },
  { type: FrameType.PING, streamId: 0, seq: 9, data: "\u0000\u0000\u0000\u0001" },
  { type: FrameType.PONG, streamId: 0, seq: 10, data: "\u0000\u0000\u0000\u0001" },
  { type: FrameType.ACK, streamId: 0, seq: 0, control: { received: 10, resend: 12 } },
  { type: FrameType.GOAWAY, streamId: 0, seq: 2 ** 40, control: { reason: "shutdown" } },
];

const frames = [];
for (const payloadChecksum of [false, true]) {
  const encoder = new FrameEncoder({ payloadChecksum });
  for (const ex of examples) {
    const payload =
      ex.control !== undefined
        ? encodeControl(ex.control)
        : new TextEncoder().encode(ex.data ?? "");
    if (payloadChecksum && payload.length === 0) continue; // empty payloads never carry one
    const bytes = encoder.encode({ type: ex.type, streamId: ex.streamId, seq: ex.seq, payload });
    frames.push({
      name: `${frameTypeName(ex.type)}${payloadChecksum && payload.length > 0 ? " with payload checksum" : ""}`,
      hex: hex(bytes),
      frame: {
        type: ex.type,
        typeName: frameTypeName(ex.type),
        flags: bytes[6],
        streamId: ex.streamId,
        seq: ex.seq,
        payloadHex: hex(payload),
        ...(ex.control === undefined ? {} : { control: ex.control }),
      },
    });
  }
}

const ping = new FrameEncoder().encode({ type: FrameType.PING, seq: 1 });
const badCrc = ping.slice();
flip(badCrc, 31, 0xff);
const oversize = new Uint8Array(32);
writeHeader(oversize, 0, {
  type: FrameType.DATA,
  flags: 0,
  streamId: 1,
  seq: 0,
  length: 0x7fffffff,
  payloadCrc: 0,
});
const badPayload = new FrameEncoder({ payloadChecksum: true }).encode({
  type: FrameType.DATA,
  streamId: 1,
  payload: new TextEncoder().encode("abc"),
});
flip(badPayload, badPayload.length - 1);
const unchecked = new FrameEncoder({ payloadChecksum: false }).encode({
  type: FrameType.DATA,
  streamId: 1,
  payload: new TextEncoder().encode("abc"),
});

const rejects = [
  {
    name: "header checksum does not match",
    hex: hex(badCrc),
    expect: { frames: 0, badHeaders: 1, oversize: 0, badPayloads: 0 },
  },
  {
    name: "valid header claiming 2 GiB, beyond the default 1 MiB maximum",
    hex: hex(oversize),
    expect: { frames: 0, badHeaders: 0, oversize: 1, badPayloads: 0 },
  },
  {
    name: "payload checksum does not match",
    hex: hex(badPayload),
    expect: { frames: 0, badHeaders: 0, oversize: 0, badPayloads: 1 },
  },
  {
    name: "payload without a checksum where one is required (requirePayloadChecksum)",
    hex: hex(unchecked),
    requirePayloadChecksum: true,
    expect: { frames: 0, badHeaders: 0, oversize: 0, badPayloads: 1 },
  },
];

writeFileSync(
  new URL("../test/wire/vectors.json", import.meta.url),
  `${JSON.stringify(
    {
      description:
        "guestlink wire test vectors (frame format version 1). Each 'frames' entry decodes to exactly one frame with no skipped bytes, and encoding that frame (with the payload checksum when flags bit 0 is set) gives the same bytes. Each 'rejects' entry decodes to no frame with the given counters (with 'requirePayloadChecksum', by a receiver that requires payload checksums, as a session does unless both sides agreed to go without). Payloads of control frames are msgpack maps; their decoded value is in 'control'. See docs/protocol.md.",
      frames,
      rejects,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${frames.length} frames and ${rejects.length} rejects`);

/**
 * Garbage bursts the chaos proxy inserts into a byte stream: the stale, hostile and accidental
 * bytes a decoder must skip (DESIGN.md, "Nothing trusted before it is checked").
 */
import { FrameType, HEADER_BYTES, MAGIC } from "../../src/wire/frame.ts";
import { writeHeader } from "../../src/wire/header.ts";
import { type Random, randomBytes, randomInt } from "./prng.ts";

export const GarbageKind = {
  /** Uniformly random bytes. */
  RANDOM: "random",
  /** The frame magic followed by random bytes: a header candidate whose checksum fails. */
  FAKE_MAGIC: "fake-magic",
  /** A whole header whose checksum is right but whose length (0xFFFFFFF0) is beyond any limit. */
  HUGE_LENGTH: "huge-length",
  /** A line of text, as a kernel or a shell would print onto a serial port or stdio. */
  LOG_LINE: "log-line",
} as const;
export type GarbageKind = (typeof GarbageKind)[keyof typeof GarbageKind];

export const GARBAGE_KINDS: readonly GarbageKind[] = Object.values(GarbageKind);

const MAX_RANDOM_BURST_BYTES = 512;
const MAX_FAKE_MAGIC_TAIL_BYTES = 60;
const HUGE_LENGTH = 0xfffffff0;

const LOG_LINES = [
  "virtio_console virtio%d: Error allocating inbufs",
  "EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.",
  "systemd[1]: Started Serial Getty on hvc%d.",
  "random: crng init done",
  "vsock: transport reset, %d sockets affected",
  "Out of memory: Killed process %d (guestlink-agent)",
  "kvm-clock: Using msrs 4b564d01 and 4b564d00",
] as const;

function logLine(random: Random): Uint8Array {
  const template = LOG_LINES[randomInt(random, 0, LOG_LINES.length - 1)] as string;
  const seconds = randomInt(random, 0, 99_999);
  const micros = randomInt(random, 0, 999_999).toString().padStart(6, "0");
  const text = template.replace("%d", String(randomInt(random, 0, 4096)));
  return new TextEncoder().encode(`[${String(seconds).padStart(5)}.${micros}] ${text}\n`);
}

function hugeLength(random: Random): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  writeHeader(out, 0, {
    type: FrameType.DATA,
    flags: 0,
    streamId: randomInt(random, 1, 0xffff),
    seq: randomInt(random, 1, 0xffffff),
    length: HUGE_LENGTH,
    payloadCrc: 0,
  });
  return out;
}

/** One burst of the given kind, drawn from `random`. */
export function makeGarbage(kind: GarbageKind, random: Random): Uint8Array {
  switch (kind) {
    case "random":
      return randomBytes(random, randomInt(random, 1, MAX_RANDOM_BURST_BYTES));
    case "fake-magic": {
      const tail = randomBytes(random, randomInt(random, 1, MAX_FAKE_MAGIC_TAIL_BYTES));
      const out = new Uint8Array(MAGIC.length + tail.length);
      out.set(MAGIC, 0);
      out.set(tail, MAGIC.length);
      return out;
    }
    case "huge-length":
      return hugeLength(random);
    case "log-line":
      return logLine(random);
  }
}

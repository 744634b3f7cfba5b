/**
 * Where the chaos proxy's garbage lands: it schedules bursts on byte counts, blind to frames, so a
 * burst may fall between two frames, inside a header, or inside a payload. Only the last kind
 * tests the payload checksum (the decoder's resync skips a burst between frames, and one in a
 * header costs that frame its header checksum, whatever the options), so a test that claims to
 * cover corruption counts them.
 *
 * `FramePlaces` follows the frames in the original bytes of each direction of each connection
 * (fed by the proxy's onForward) and, when a burst is reported (onFault), says where it went.
 */
import { frameTypeName, HEADER_BYTES, LIMIT_MAX_FRAME_BYTES } from "../../src/wire/frame.ts";
import {
  type HeaderFields,
  HeaderVerdict,
  magicPrefixLength,
  readHeader,
} from "../../src/wire/header.ts";
import type { ChaosFault, ForwardAt } from "./proxy.ts";

type Place =
  | { where: "between frames" | "inside headers" | "unknown" }
  | { where: "payload"; type: string };

const label = (p: Place) => (p.where === "payload" ? `inside ${p.type} payloads` : p.where);

/** Follows one direction's frames: the original bytes are whole frames back to back. */
class FrameWalker {
  readonly #header = new Uint8Array(HEADER_BYTES);
  readonly #fields: HeaderFields = {
    type: 0,
    flags: 0,
    streamId: 0,
    seq: 0,
    length: 0,
    payloadCrc: 0,
  };
  #headerBytes = 0;
  #payloadLeft = 0;
  /** Set if the bytes stop looking like frames: every place is then "unknown". */
  #lost = false;

  push(bytes: Uint8Array): void {
    let i = 0;
    while (i < bytes.length && !this.#lost) {
      if (this.#payloadLeft > 0) {
        const take = Math.min(this.#payloadLeft, bytes.length - i);
        this.#payloadLeft -= take;
        i += take;
        continue;
      }
      const take = Math.min(HEADER_BYTES - this.#headerBytes, bytes.length - i);
      this.#header.set(bytes.subarray(i, i + take), this.#headerBytes);
      this.#headerBytes += take;
      i += take;
      if (this.#headerBytes < HEADER_BYTES) continue;
      this.#headerBytes = 0;
      const isHeader =
        magicPrefixLength(this.#header, 0, 4) === 4 &&
        readHeader(this.#header, 0, LIMIT_MAX_FRAME_BYTES, this.#fields) === HeaderVerdict.OK;
      if (isHeader) this.#payloadLeft = this.#fields.length;
      else this.#lost = true;
    }
  }

  /** Where a burst inserted now (after the bytes pushed so far) lands. */
  place(): Place {
    if (this.#lost) return { where: "unknown" };
    if (this.#payloadLeft > 0) return { where: "payload", type: frameTypeName(this.#fields.type) };
    return { where: this.#headerBytes === 0 ? "between frames" : "inside headers" };
  }
}

export class FramePlaces {
  readonly #walkers = new Map<string, FrameWalker>();
  /** Garbage bursts by direction, then by place ("inside DATA payloads", "between frames", …). */
  readonly #bursts = {
    "to-target": new Map<string, number>(),
    "to-client": new Map<string, number>(),
  };
  /** Of those, the ones inside a payload, by frame type. */
  readonly #inPayloads = {
    "to-target": new Map<string, number>(),
    "to-client": new Map<string, number>(),
  };

  /** For the proxy's onForward. */
  readonly forwarded = (at: ForwardAt, bytes: Uint8Array): void => {
    this.#walker(at).push(bytes);
  };

  /** For the proxy's onFault. */
  readonly fault = (fault: ChaosFault): void => {
    if (fault.kind !== "garbage") return;
    const place = this.#walker(fault).place();
    increment(this.#bursts[fault.direction], label(place));
    if (place.where === "payload") increment(this.#inPayloads[fault.direction], place.type);
  };

  /** How many bursts landed inside a payload in this direction: of frames of `type`, or of any. */
  inside(direction: ForwardAt["direction"], type?: string): number {
    const counts = this.#inPayloads[direction];
    if (type !== undefined) return counts.get(type) ?? 0;
    return [...counts.values()].reduce((a, b) => a + b, 0);
  }

  /** One line for a diagnostic or an assertion message. */
  describe(): string {
    const side = (counts: Map<string, number>) =>
      [...counts].map(([place, n]) => `${n} ${place}`).join(", ") || "none";
    return `bursts to the agent: ${side(this.#bursts["to-target"])}; to the client: ${side(this.#bursts["to-client"])}`;
  }

  #walker(at: ForwardAt): FrameWalker {
    const key = `${at.connection}:${at.direction}`;
    let walker = this.#walkers.get(key);
    if (walker === undefined) {
      walker = new FrameWalker();
      this.#walkers.set(key, walker);
    }
    return walker;
  }
}

function increment(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

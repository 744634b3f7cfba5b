/**
 * When a transport's read slab is read into again (transport/slab-reads.ts with recycle.ts),
 * driven as Node drives `onread` and as the session reports what its decoder made of the bytes:
 * only once the decoder has moved past it and every payload handed out of it was stream data,
 * adopted by its consumer and released by the session.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { adopt, decoded, finished, handedOut, release, shared } from "../../src/recycle.ts";
import { MIN_READ_ROOM_BYTES, SLAB_READ_BYTES, SlabReads } from "../../src/transport/slab-reads.ts";

const READ = MIN_READ_ROOM_BYTES;
const READS_PER_SLAB = SLAB_READ_BYTES / READ;

/** A SlabReads read as Node reads a socket, each read filling the room it is given. */
function reader() {
  const reads = new SlabReads();
  const chunks: Uint8Array[] = [];
  reads.attach((chunk) => chunks.push(chunk));
  const buffer = reads.onread.buffer as () => Uint8Array;
  const callback = reads.onread.callback as (n: number, b: Uint8Array) => boolean;
  const read = (bytes = READ): Uint8Array => {
    callback(bytes, buffer());
    return chunks.at(-1) as Uint8Array;
  };
  /** Reads a whole slab's worth; its chunks. */
  const slab = (): Uint8Array[] => Array.from({ length: READS_PER_SLAB }, () => read());
  return { reads, read, slab };
}

/** What a session does with a chunk that is one DATA frame's payload passed on by the daemon. */
function decodeAsData(chunk: Uint8Array): void {
  handedOut(chunk, true);
  decoded(chunk);
  adopt(chunk);
}

/** Reads a whole slab and consumes it: every chunk decoded as stream data and released. */
function consumedSlab(r: ReturnType<typeof reader>): Uint8Array[] {
  const chunks = r.slab();
  for (const chunk of chunks) decodeAsData(chunk);
  for (const chunk of chunks) release(chunk);
  return chunks;
}

describe("SlabReads: a slab is read into again", () => {
  it("once everything handed out of it came back and the decoder moved on", () => {
    const r = reader();
    const first = consumedSlab(r);
    // The next read retires the first slab; its chunk is in a second one, which the decoder
    // takes: the first is passed, and free.
    const next = r.read();
    decodeAsData(next);
    assert.notEqual(next.buffer, first[0]?.buffer);
    const third = r.slab().slice(1);
    // The second slab fills up; the read after it goes into the first one again.
    const again = r.read();
    assert.equal(again.buffer, first[0]?.buffer, "the first slab, read into again");
    assert.ok(third.length > 0);
  });

  for (const [what, skip] of [
    ["a payload not yet released", "release"],
    ["a payload its consumer did not adopt", "adopt"],
    ["a payload that is not stream data (kept)", "kept"],
    ["the decoder not yet past it", "decoded"],
    ["bytes of it handed on uncopied (shared)", "shared"],
  ] as const) {
    it(`not while ${what}`, () => {
      const r = reader();
      const first = r.slab();
      first.forEach((chunk, i) => {
        const last = i === first.length - 1;
        // A kept payload (a call's parameters) is neither adopted nor released: it stays.
        const kept = last && skip === "kept";
        handedOut(chunk, !kept);
        decoded(chunk);
        if (!kept && !(last && skip === "adopt")) adopt(chunk);
        if (!kept && !(last && skip === "release")) release(chunk);
        if (last && skip === "shared") shared(chunk);
      });
      const next = r.read();
      if (skip !== "decoded") decoded(next);
      // Two more slabs' worth: without the first one back, every read is in a new slab.
      const seen = new Set<ArrayBufferLike>();
      for (let i = 0; i < 2 * READS_PER_SLAB; i++) {
        const chunk = r.read();
        if (skip !== "decoded") decoded(chunk);
        seen.add(chunk.buffer);
      }
      assert.equal(seen.has(first[0]?.buffer as ArrayBufferLike), false);
    });
  }

  it("a decoder of another session fed views of its slabs (an in-process pair) does not move it on", () => {
    const r = reader();
    const first = consumedSlab(r);
    const next = r.read();
    // Not ours as read: a view of the same bytes, as another session's decoder would take.
    decoded(new Uint8Array(next.buffer, next.byteOffset, next.length));
    const seen = new Set<ArrayBufferLike>();
    for (let i = 0; i < 2 * READS_PER_SLAB; i++) seen.add(r.read().buffer);
    assert.equal(seen.has(first[0]?.buffer as ArrayBufferLike), false);
  });

  describe("a connection's last slabs, once its socket closed and its decoder finished", () => {
    /** A connection that read half a slab, every chunk decoded as stream data and released. */
    function ended(opts: { release: boolean }) {
      const r = reader();
      const chunks = Array.from({ length: READS_PER_SLAB / 2 }, () => r.read());
      for (const chunk of chunks) decodeAsData(chunk);
      if (opts.release) for (const chunk of chunks) release(chunk);
      return {
        ...r,
        slab: chunks[0]?.buffer as ArrayBufferLike,
        last: chunks.at(-1) as Uint8Array,
      };
    }

    it("go to the next connection", () => {
      const old = ended({ release: true });
      finished(old.last);
      old.reads.closed();
      assert.equal(reader().read().buffer, old.slab);
    });

    for (const [what, end] of [
      [
        "the socket may still read into it (not closed)",
        (c: ReturnType<typeof ended>) => finished(c.last),
      ],
      [
        "the decoder may still hand out of it (not finished)",
        (c: ReturnType<typeof ended>) => c.reads.closed(),
      ],
    ] as const) {
      it(`not while ${what}`, () => {
        const old = ended({ release: true });
        end(old);
        assert.notEqual(reader().read().buffer, old.slab);
      });
    }

    it("not while a payload of it is out, and then as soon as it is back", () => {
      const old = ended({ release: false });
      finished(old.last);
      old.reads.closed();
      assert.notEqual(reader().read().buffer, old.slab);
      // Released afterwards (the consumer wrote it out): free for the next connection.
      for (let i = 0; i < READS_PER_SLAB / 2; i++) {
        // Each chunk of the old slab comes back; only the last makes it free.
        release(new Uint8Array(old.slab, i * READ, READ));
      }
      assert.equal(reader().read().buffer, old.slab);
    });
  });
});

describe("SlabReads: a preamble read before the protocol (detach)", () => {
  it("hands what follows it, then what was read meanwhile, to the next sink, in order", () => {
    const reads = new SlabReads();
    const buffer = reads.onread.buffer as () => Uint8Array;
    const callback = reads.onread.callback as (n: number, b: Uint8Array) => boolean;
    const readText = (text: string) => {
      const room = buffer();
      room.set(Buffer.from(text));
      callback(text.length, room);
    };
    const preamble: string[] = [];
    reads.attach((chunk) => {
      preamble.push(Buffer.from(chunk).toString());
      decoded(chunk);
    });
    readText("HEAD\r\n\r\nfir");
    // The preamble's reader found its end: it gives back a copy of what followed it.
    reads.detach(Buffer.from("fir"));
    readText("st ");
    readText("second");
    const after: string[] = [];
    reads.attach((chunk) => after.push(Buffer.from(chunk).toString()));
    readText(" third");
    assert.deepEqual(preamble, ["HEAD\r\n\r\nfir"]);
    assert.deepEqual(after, ["fir", "st ", "second", " third"]);
  });
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { LineSplitter } from "../../src/controller/helpers/lines.ts";

/** What came out: lines, and long lines as their byte counts. */
function split(chunks: Buffer[], max: number): (string | number)[] {
  const out: (string | number)[] = [];
  const splitter = new LineSplitter(max, { line: (t) => out.push(t), tooLong: (n) => out.push(n) });
  for (const c of chunks) {
    splitter.push(c);
    assert.ok(splitter.heldBytes <= max, "never holds more than the limit");
  }
  splitter.end();
  return out;
}

describe("lines from a helper's output", () => {
  it("every line once and in order, however the writes split them; long ones reported with their length", () => {
    fc.assert(
      fc.property(
        fc
          .array(fc.oneof(fc.string({ unit: "grapheme", maxLength: 40 }), fc.constant("")), {
            maxLength: 60,
          })
          .map((ls) => ls.map((l) => l.replaceAll("\n", " "))),
        fc.boolean(),
        fc.integer({ min: 1, max: 64 }),
        fc.array(fc.integer({ min: 0, max: 1000 }), { maxLength: 30 }),
        (lines, lastHasNewline, max, cuts) => {
          const text = lines.join("\n") + (lastHasNewline && lines.length > 0 ? "\n" : "");
          const bytes = Buffer.from(text);
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort(
            (a, b) => a - b,
          );
          const chunks: Buffer[] = [];
          let at = 0;
          for (const p of [...points, bytes.length]) {
            chunks.push(bytes.subarray(at, p));
            at = p;
          }
          // Lines as a reader sees them; an empty last line without a newline is no line.
          const expectedLines = text.split("\n");
          if (expectedLines.at(-1) === "") expectedLines.pop();
          const expected = expectedLines.map((l) =>
            Buffer.byteLength(l) > max ? Buffer.byteLength(l) : l,
          );
          assert.deepEqual(split(chunks, max), expected);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("any bytes, valid UTF-8 or not: each line is decoded as if on its own, whatever else shares its chunk", () => {
    fc.assert(
      fc.property(
        // Newlines, ASCII, and bytes that begin, continue or break multi-byte sequences.
        fc.array(fc.constantFrom(0x0a, 0x41, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0xff), {
          maxLength: 200,
        }),
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.integer({ min: 0, max: 1000 }), { maxLength: 10 }),
        (raw, max, cuts) => {
          const bytes = Buffer.from(raw);
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort(
            (a, b) => a - b,
          );
          const chunks: Buffer[] = [];
          let at = 0;
          for (const p of [...points, bytes.length]) {
            chunks.push(bytes.subarray(at, p));
            at = p;
          }
          const expected: (string | number)[] = [];
          let from = 0;
          for (let i = 0; i <= bytes.length; i++) {
            if (i < bytes.length && bytes[i] !== 0x0a) continue;
            if (i === bytes.length && i === from) break;
            const line = bytes.subarray(from, i);
            expected.push(line.length > max ? line.length : line.toString("utf8"));
            from = i + 1;
          }
          assert.deepEqual(split(chunks, max), expected);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("a long line between two short ones: reported, skipped, the next line intact", () => {
    const out = split(
      [Buffer.from(`a\n${"x".repeat(100)}`), Buffer.from(`${"y".repeat(50)}\nb\nlast`)],
      10,
    );
    assert.deepEqual(out, ["a", 150, "b", "last"]);
  });

  it("refuses a limit that is not a positive whole number", () => {
    assert.throws(() => new LineSplitter(0, { line() {}, tooLong() {} }), /maxLineBytes/);
  });
});

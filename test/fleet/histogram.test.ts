import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { deflateSync } from "node:zlib";
import fc from "fast-check";
import * as hdr from "hdr-histogram-js";
import {
  addInto,
  decodeHistogram,
  encodeHistogram,
  HistogramRefused,
  newHistogram,
  recordMicros,
  summarize,
} from "../../src/fleet/histogram.ts";

describe("fleet latency histograms", () => {
  it("merge exactly: the sum of agents' interval histograms, sent encoded, equals one built from all samples", () => {
    const latency = fc.oneof(
      fc.integer({ min: 1, max: 2_000 }),
      fc.integer({ min: 1, max: 3_600_000_000 }),
      fc.double({ min: 0, max: 10, noNaN: true }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.array(latency, { maxLength: 50 }), { minLength: 1, maxLength: 4 }), {
          minLength: 1,
          maxLength: 6,
        }),
        (agents) => {
          const all = newHistogram(true);
          const merged = newHistogram(true);
          for (const intervals of agents) {
            for (const samples of intervals) {
              const interval = newHistogram();
              for (const us of samples) {
                recordMicros(interval, us);
                recordMicros(all, us);
              }
              addInto(merged, decodeHistogram(encodeHistogram(interval), true));
            }
          }
          assert.equal(merged.totalCount, all.totalCount);
          assert.deepEqual(summarize(merged), summarize(all));
          assert.equal(
            encodeHistogram(merged),
            encodeHistogram(all),
            "the same count in every bucket",
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it("summarizes as HdrHistogram does, and adds as its own add does", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 3_600_000_000 }), { minLength: 1, maxLength: 300 }),
        fc.array(fc.integer({ min: 1, max: 50_000 }), { maxLength: 300 }),
        (a, b) => {
          const x = newHistogram();
          const y = newHistogram();
          for (const v of a) recordMicros(x, v);
          for (const v of b) recordMicros(y, v);
          const s = summarize(x);
          const at = (p: number) => x.getValueAtPercentile(p);
          assert.deepEqual(
            [s.count, s.p50, s.p90, s.p95, s.p99, s.p999, s.max],
            [x.totalCount, at(50), at(90), at(95), at(99), at(99.9), at(100)],
          );
          assert.ok(Math.abs(s.mean - x.mean) <= 1e-9 * x.mean);
          const theirs = newHistogram(true);
          const ours = newHistogram(true);
          for (const h of [x, y]) {
            theirs.add(h);
            addInto(ours, h);
          }
          assert.equal(encodeHistogram(ours), encodeHistogram(theirs));
          assert.deepEqual(summarize(ours), summarize(theirs));
          assert.equal(ours.maxValue, theirs.maxValue);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("clamps latencies outside 1 µs .. 1 h instead of failing the run", () => {
    const h = newHistogram();
    recordMicros(h, 0);
    recordMicros(h, 1e12);
    assert.equal(h.totalCount, 2);
    assert.equal(summarize(h).min, 1);
    assert.ok(summarize(h).max >= 3_599_000_000);
  });

  it("refuses an encoded histogram from a peer that is not ours to hold", () => {
    const other = hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: 2 ** 50,
      numberOfSignificantValueDigits: 5,
    });
    other.recordValue(2 ** 49);
    const wider = hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: 2 ** 50,
      numberOfSignificantValueDigits: 3,
    });
    wider.recordValue(2 ** 49);
    const cookie = Buffer.alloc(8);
    cookie.writeUInt32BE(0x1c849314, 0);
    const bomb = Buffer.concat([cookie, deflateSync(Buffer.alloc(64 << 20))]).toString("base64");
    const cases: [unknown, RegExp][] = [
      [hdr.encodeIntoCompressedBase64(other), /covers 1\.\.\d+ at 5 digits/],
      [hdr.encodeIntoCompressedBase64(wider), /covers 1\.\.\d+ at 3 digits/],
      [bomb, /does not inflate/],
      ["x".repeat((1 << 20) + 1), /at most/],
      [42, /not an encoded histogram/],
      ["aGVsbG8gd29ybGQ=", /not a compressed HdrHistogram/],
    ];
    for (const [encoded, message] of cases) {
      assert.throws(
        () => decodeHistogram(encoded),
        (err: unknown) => {
          assert.ok(err instanceof HistogramRefused);
          assert.match(err.message, message);
          return true;
        },
      );
    }
  });
});

/**
 * Latency histograms of a fleet run (HdrHistogram, through hdr-histogram-js): microseconds from
 * 1 µs to one hour at 3 significant digits. An agent records each operation's latency into the
 * histogram of its interval and sends it encoded (HdrHistogram's compressed form, base64 — what
 * its log files hold too); the controller decodes and adds them, which merges exactly: the sum
 * of the agents' histograms equals the one built from all their samples.
 *
 * A histogram from the wire is untrusted: its size is bounded before it is inflated, and its
 * header must describe our range and precision, so a peer cannot make us allocate more.
 */
import { inflateSync } from "node:zlib";
import * as hdr from "hdr-histogram-js";

export type Histogram = hdr.Histogram;

/** The range and precision every fleet histogram has. */
export const LATENCY_RANGE = {
  lowestDiscernibleValue: 1,
  highestTrackableValue: 3_600_000_000,
  numberOfSignificantValueDigits: 3,
} as const;

/** The longest encoded histogram accepted (a full one of this range is about 100 KiB). */
export const MAX_ENCODED_CHARS = 1 << 20;
const MAX_INFLATED_BYTES = 4 << 20;
// HdrHistogram's cookies carry a word size in bits 4-7 (0x10 in what hdr-histogram-js writes).
const COMPRESSED_COOKIE = 0x1c849304;
const V2_COOKIE = 0x1c849303;
const cookieIs = (cookie: number, base: number) => (cookie & 0xffffff0f) === base;

/**
 * A new, empty latency histogram. `wide`: 64-bit counts, for totals merged over many agents and
 * intervals (32-bit counts take half the memory and hold 2^31 per bucket).
 */
export function newHistogram(wide = false): Histogram {
  return hdr.build({ ...LATENCY_RANGE, bitBucketSize: wide ? 64 : 32 });
}

/** Records one latency in µs, clamped into the histogram's range. */
export function recordMicros(histogram: Histogram, micros: number): void {
  const value = Math.min(
    LATENCY_RANGE.highestTrackableValue,
    Math.max(LATENCY_RANGE.lowestDiscernibleValue, Math.round(micros)),
  );
  histogram.recordValue(value);
}

/** The histogram in HdrHistogram's compressed form, base64. */
export function encodeHistogram(histogram: Histogram): string {
  return hdr.encodeIntoCompressedBase64(histogram);
}

/** Why an encoded histogram from a peer was refused. */
export class HistogramRefused extends Error {}

/** Decodes a histogram that came from a peer; throws HistogramRefused for anything off. */
export function decodeHistogram(encoded: unknown, wide = false): Histogram {
  if (typeof encoded !== "string" || encoded.length > MAX_ENCODED_CHARS) {
    throw new HistogramRefused(
      `not an encoded histogram of at most ${MAX_ENCODED_CHARS} characters`,
    );
  }
  const raw = Buffer.from(encoded, "base64");
  if (raw.length < 8 || !cookieIs(raw.readUInt32BE(0), COMPRESSED_COOKIE)) {
    throw new HistogramRefused("not a compressed HdrHistogram");
  }
  let inflated: Buffer;
  try {
    inflated = inflateSync(raw.subarray(8), { maxOutputLength: MAX_INFLATED_BYTES });
  } catch (err) {
    throw new HistogramRefused(`the histogram does not inflate: ${(err as Error).message}`);
  }
  // V2 header: cookie, payload length, normalizing offset, significant digits, lowest, highest.
  if (inflated.length < 40 || !cookieIs(inflated.readUInt32BE(0), V2_COOKIE)) {
    throw new HistogramRefused("not an HdrHistogram V2 encoding");
  }
  const digits = inflated.readUInt32BE(12);
  const lowest = Number(inflated.readBigUInt64BE(16));
  const highest = Number(inflated.readBigUInt64BE(24));
  if (
    digits !== LATENCY_RANGE.numberOfSignificantValueDigits ||
    lowest !== LATENCY_RANGE.lowestDiscernibleValue ||
    highest > LATENCY_RANGE.highestTrackableValue
  ) {
    throw new HistogramRefused(
      `the histogram covers ${lowest}..${highest} at ${digits} digits, not ${LATENCY_RANGE.lowestDiscernibleValue}..${LATENCY_RANGE.highestTrackableValue} at ${LATENCY_RANGE.numberOfSignificantValueDigits}`,
    );
  }
  // The normalizing index offset (bytes 8-11) is not read: hdr-histogram-js writes 1 there and
  // ignores it when decoding, and never shifts a histogram.
  const payloadBytes = inflated.readUInt32BE(4);
  if (40 + payloadBytes > inflated.length) {
    throw new HistogramRefused("the histogram's counts are cut short");
  }
  return readCounts(inflated.subarray(40, 40 + payloadBytes), newHistogram(wide));
}

/**
 * Fills `histogram` from an HdrHistogram V2 payload: ZigZag LEB128 numbers, each a count for the
 * next bucket or, when negative, that many empty buckets. Done here rather than through
 * hdr-histogram-js's decoder, which inflates a second time in JavaScript: a controller decodes
 * one histogram per agent and operation type every second.
 */
function readCounts(payload: Buffer, histogram: Histogram): Histogram {
  const h = histogram as hdr.JsHistogram;
  const length = h.countsArrayLength;
  let index = 0;
  let total = 0;
  let first = -1;
  let last = -1;
  for (let at = 0; at < payload.length; ) {
    // ZigZag LEB128, at most 9 bytes (the 9th carries 8 bits), as HdrHistogram writes it.
    let value = 0;
    let scale = 1;
    let byte = 0x80;
    for (let n = 0; byte & 0x80; n++) {
      if (at >= payload.length || n === 9)
        throw new HistogramRefused("a count in the histogram is cut short");
      byte = payload[at++] as number;
      value += (n === 8 ? byte : byte & 0x7f) * scale;
      scale *= 128;
      if (n === 8) break;
    }
    const count = value % 2 === 0 ? value / 2 : -(value + 1) / 2;
    if (count < 0) {
      index -= count;
      continue;
    }
    if (index >= length) {
      if (count === 0) {
        index++;
        continue;
      }
      throw new HistogramRefused("the histogram has counts beyond its range");
    }
    if (count > 0) {
      if (!Number.isSafeInteger(total + count))
        throw new HistogramRefused("the histogram's counts overflow");
      h.setCountAtIndex(index, count);
      total += count;
      if (first < 0) first = index;
      last = index;
    }
    index++;
  }
  if (total === 0) return histogram;
  // The smallest and largest values through the public recorder, which keeps min and max right.
  for (const i of first === last ? [first] : [first, last]) {
    const count = h.getCountAtIndex(i);
    h.setCountAtIndex(i, 0);
    h.recordValueWithCount(h.valueFromIndex(i), count);
    total -= count;
  }
  h.setTotalCount(h.totalCount + total);
  return histogram;
}

/** What reports show of a histogram: latencies in µs. */
export interface LatencySummary {
  count: number;
  mean: number;
  min: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
}

/** HdrHistogram's own rounding of a percentile to a count (JsHistogram.getValueAtPercentile). */
function countAtPercentile(percentile: number, total: number): number {
  const fp = (Math.min(percentile, 100) / 100) * total;
  const ulp = fp === 0 ? Number.MIN_VALUE : 2 ** (Math.floor(Math.log2(fp)) - 52);
  return Math.max(Math.ceil(fp - ulp), 1);
}

const SUMMARY_PERCENTILES = [
  ["p50", 50],
  ["p90", 90],
  ["p95", 95],
  ["p99", 99],
  ["p999", 99.9],
  ["max", 100],
] as const;

/**
 * Mean and percentiles of `histogram`, in µs. Like HdrHistogram's own output, each value is its
 * bucket's equivalent at 3 significant digits (the highest for percentiles and max, the lowest for
 * min), so a merged histogram summarizes exactly as one built from all the samples. One pass over
 * the buckets up to the largest value, where asking HdrHistogram for each would take one each
 * (0.95 ms instead of about 0.05 ms for a histogram of this range: a controller summarizes one
 * per agent per second).
 */
export function summarize(histogram: Histogram): LatencySummary {
  const count = histogram.totalCount;
  if (count === 0)
    return { count, mean: 0, min: 0, p50: 0, p90: 0, p95: 0, p99: 0, p999: 0, max: 0 };
  const h = histogram as hdr.JsHistogram;
  const out: LatencySummary = {
    count,
    mean: 0,
    min: 0,
    p50: 0,
    p90: 0,
    p95: 0,
    p99: 0,
    p999: 0,
    max: 0,
  };
  const targets = SUMMARY_PERCENTILES.map(
    ([name, p]) => [name, countAtPercentile(p, count)] as const,
  );
  const last = Math.min(h.countsArrayIndex(h.maxValue), h.countsArrayLength - 1);
  const half = h.subBucketHalfCount;
  let next = 0;
  let seen = 0;
  let sum = 0;
  for (let i = 0; i <= last; i++) {
    const n = h.getCountAtIndex(i);
    if (n === 0) continue;
    // HdrHistogram's valueFromIndex and bucket width, inline: a call each is most of the cost.
    let bucket = Math.floor(i / half) - 1;
    let sub = (i % half) + half;
    if (bucket < 0) {
      sub -= half;
      bucket = 0;
    }
    const width = 2 ** (bucket + h.unitMagnitude);
    const lowest = sub * width;
    if (seen === 0) out.min = lowest;
    seen += n;
    sum += (lowest + Math.floor(width / 2)) * n;
    while (next < targets.length && seen >= (targets[next] as readonly [string, number])[1]) {
      out[(targets[next] as readonly [keyof LatencySummary, number])[0]] = lowest + width - 1;
      next++;
    }
  }
  out.mean = sum / count;
  return out;
}

/**
 * Adds `source`'s counts into `target` (both of LATENCY_RANGE), looking only at buckets up to
 * `source`'s largest value: latencies use a small part of the range, and a controller adds three
 * histograms per agent per second. The result equals HdrHistogram's `add`.
 */
export function addInto(target: Histogram, source: Histogram): void {
  const from = source as hdr.JsHistogram;
  const into = target as hdr.JsHistogram;
  if (from.totalCount === 0) return;
  const last = from.countsArrayIndex(from.maxValue);
  let first = -1;
  let added = 0;
  for (let i = 0; i < last; i++) {
    const n = from.getCountAtIndex(i);
    if (n === 0) continue;
    if (first < 0) {
      // Through the public recorder, so the target's smallest value is kept right.
      into.recordValueWithCount(from.valueFromIndex(i), n);
      first = i;
      continue;
    }
    into.addToCountAtIndex(i, n);
    added += n;
  }
  into.setTotalCount(into.totalCount + added);
  // And the largest, so the target's maximum is kept right.
  into.recordValueWithCount(from.maxValue, from.getCountAtIndex(last));
}

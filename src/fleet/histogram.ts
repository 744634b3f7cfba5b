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
  let decoded: Histogram;
  try {
    decoded = hdr.decodeFromCompressedBase64(encoded, wide ? 64 : 32);
  } catch (err) {
    throw new HistogramRefused(`the histogram does not decode: ${(err as Error).message}`);
  }
  if (decoded.highestTrackableValue === LATENCY_RANGE.highestTrackableValue) return decoded;
  // An encoding keeps the range it was recorded with; ours is the fleet's, for adding.
  const histogram = newHistogram(wide);
  histogram.add(decoded);
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

/**
 * Mean and percentiles of `histogram`, in µs. Like HdrHistogram's own output, each value is its
 * bucket's equivalent at 3 significant digits (the highest for percentiles and max, the lowest for
 * min), so a merged histogram summarizes exactly as one built from all the samples.
 */
export function summarize(histogram: Histogram): LatencySummary {
  const count = histogram.totalCount;
  if (count === 0)
    return { count, mean: 0, min: 0, p50: 0, p90: 0, p95: 0, p99: 0, p999: 0, max: 0 };
  const at = (p: number) => histogram.getValueAtPercentile(p);
  return {
    count,
    mean: histogram.mean,
    min: (histogram as hdr.JsHistogram).lowestEquivalentValue(histogram.minNonZeroValue),
    p50: at(50),
    p90: at(90),
    p95: at(95),
    p99: at(99),
    p999: at(99.9),
    max: at(100),
  };
}

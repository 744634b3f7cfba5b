/**
 * Live telemetry from an agent: `watchTelemetry` calls `telemetry.watch` and yields each NDJSON
 * line it sends as a checked sample. The agent is untrusted: lines are bounded in length and
 * validated before they are yielded.
 */
import * as v from "valibot";
import type { AbortSignalLike } from "../abort.ts";
import type { TelemetrySample } from "../agent/telemetry.ts";
import { GuestlinkError, InvalidOptionError, isGuestlinkError } from "../errors.ts";
import { toDuplex } from "../platform/duplex.ts";
import type { Session } from "../session/session.ts";
import type { SessionStream } from "../session/stream.ts";
import { readLines } from "./lines.ts";

export type { TelemetrySample } from "../agent/telemetry.ts";

/** A sample line longer than this is a broken agent, not a big sample. */
export const MAX_SAMPLE_LINE_BYTES = 1024 * 1024;

export interface WatchTelemetryOptions {
  /** Time between samples (100 to 3 600 000 ms; the agent's default is 1000). */
  intervalMs?: number;
  /** Ends the watch: the call is cancelled and the iteration finishes without an error. */
  signal?: AbortSignalLike;
}

const count = v.pipe(v.number(), v.minValue(0));
const SampleSchema = v.looseObject({
  t: v.number(),
  cpu: v.looseObject({ usage: v.pipe(v.number(), v.minValue(0), v.maxValue(1)), count }),
  memory: v.looseObject({ totalBytes: count, availableBytes: count, usedBytes: count }),
  load: v.array(v.number()),
  disks: v.array(v.looseObject({ path: v.string(), totalBytes: count, freeBytes: count })),
  net: v.array(v.looseObject({ iface: v.string(), rxBytes: count, txBytes: count })),
  process: v.looseObject({ rssBytes: count }),
  skipped: v.optional(count),
});

function badSample(problem: string): GuestlinkError {
  return new GuestlinkError("BAD_RESULT", `the agent sent a bad telemetry sample: ${problem}`, {
    details: { problems: [problem] },
  });
}

function parseSample(line: string): TelemetrySample {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw badSample("not JSON");
  }
  const parsed = v.safeParse(SampleSchema, value);
  if (!parsed.success) throw badSample(v.summarize(parsed.issues));
  return parsed.output as TelemetrySample;
}

/**
 * Watches the agent's telemetry: one sample per interval, the first at once. The iteration ends
 * when `signal` aborts (the call is cancelled, the agent stops sampling) or the agent ends the
 * stream; breaking out of it cancels the call too. Other failures are thrown.
 */
export async function* watchTelemetry(
  session: Session,
  options: WatchTelemetryOptions = {},
): AsyncGenerator<TelemetrySample, void, undefined> {
  const { intervalMs, signal } = options;
  if (intervalMs !== undefined && !(Number.isInteger(intervalMs) && intervalMs > 0)) {
    throw new InvalidOptionError(`intervalMs must be a positive integer, got ${intervalMs}`, {
      details: { option: "intervalMs", value: intervalMs },
    });
  }
  if (signal?.aborted) return;
  const call = session.open(
    "telemetry.watch",
    intervalMs === undefined ? {} : { intervalMs },
    // A watch runs until it is stopped, not until a default deadline.
    { streams: ["samples"], signal, deadline: Infinity },
  );
  call.result.catch(() => {}); // observed below, or deliberately dropped when stopped
  const samples = toDuplex(call.streams.samples as SessionStream);
  samples.end(); // nothing flows towards the agent
  try {
    const lines = readLines(samples as AsyncIterable<Buffer>, MAX_SAMPLE_LINE_BYTES, () =>
      badSample("a line without an end"),
    );
    for await (const line of lines) yield parseSample(line);
    await call.result;
  } catch (err) {
    if (signal?.aborted) return;
    // The agent resets the stream when its handler fails; the call's error says why.
    if (isGuestlinkError(err, "STREAM_RESET") && err.details?.by === "peer") {
      const reason = await call.result.then(
        () => err,
        (failure: unknown) => failure,
      );
      if (signal?.aborted) return;
      throw reason;
    }
    throw err;
  } finally {
    call.cancel("the watch was stopped");
  }
}

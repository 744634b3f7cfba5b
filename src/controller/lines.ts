/**
 * Lines from an agent's NDJSON stream (telemetry samples, a fleet run's stats). The agent is
 * untrusted: a line longer than `maxLineBytes` is refused with `tooLong` instead of being held.
 */
import { StringDecoder } from "node:string_decoder";

/** Yields each non-blank line of `source`, the last one even without its newline. */
export async function* readLines(
  source: AsyncIterable<Buffer>,
  maxLineBytes: number,
  tooLong: () => Error,
): AsyncGenerator<string> {
  const decoder = new StringDecoder("utf8");
  let pending = "";
  for await (const chunk of source) {
    pending += decoder.write(chunk);
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line.trim() !== "") yield line;
      newline = pending.indexOf("\n");
    }
    if (pending.length > maxLineBytes) throw tooLong();
  }
  pending += decoder.end();
  if (pending.trim() !== "") yield pending;
}

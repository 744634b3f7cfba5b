/**
 * The stderr of an agent the CLI started itself (`exec:ssh vm guestlink agent --stdio`) lands on
 * the user's terminal. The agent logs as JSON lines (pino), which are for log collectors, not for
 * the person who ran `guestlink info`. So its routine lines (below warn) are kept quiet unless
 * `--verbose`, and the rest are shown as one readable line each: `guestlink: agent warn: …`.
 * Lines that are not the agent's JSON (ssh's "Permission denied", a shell's "command not
 * found") pass through as they are: they are why a connection failed.
 *
 * Formatting here rather than asking the agent for a quieter level: the CLI cannot pass a level
 * through ssh or kubectl, and an agent of another version may not take it.
 */
import { Writable } from "node:stream";

const PINO_LEVELS: Readonly<Record<number, string>> = {
  10: "trace",
  20: "debug",
  30: "info",
  40: "warn",
  50: "error",
  60: "fatal",
};
const WARN = 40;
/** A line longer than this is passed on as it is rather than held for its end. */
const MAX_LINE_CHARS = 64 * 1024;

/** Formats one line of an agent's stderr; undefined drops it. */
export function formatAgentLine(line: string, verbose: boolean): string | undefined {
  let entry: unknown;
  try {
    entry = line.startsWith("{") ? JSON.parse(line) : undefined;
  } catch {
    entry = undefined;
  }
  if (
    typeof entry !== "object" ||
    entry === null ||
    typeof (entry as { level?: unknown }).level !== "number" ||
    typeof (entry as { msg?: unknown }).msg !== "string"
  ) {
    return line;
  }
  const {
    level,
    msg,
    time: _time,
    pid: _pid,
    hostname: _host,
    ...fields
  } = entry as Record<string, unknown> & { level: number; msg: string };
  if (level < WARN && !verbose) return undefined;
  const extra = Object.entries(fields)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  return `guestlink: agent ${PINO_LEVELS[level] ?? level}: ${msg}${extra ? ` (${extra})` : ""}`;
}

/** A stream to hand `exec:` agents' stderr to: writes formatted lines to `out`. */
export function agentLogWriter(out: NodeJS.WritableStream, verbose: boolean): Writable {
  let partial = "";
  const emit = (line: string) => {
    const shown = formatAgentLine(line, verbose);
    if (shown !== undefined) out.write(`${shown}\n`);
  };
  return new Writable({
    decodeStrings: true,
    write(chunk: Buffer, _encoding, callback) {
      partial += chunk.toString("utf8");
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) emit(line);
      if (partial.length > MAX_LINE_CHARS) {
        out.write(partial);
        partial = "";
      }
      callback();
    },
    final(callback) {
      if (partial !== "") emit(partial);
      partial = "";
      callback();
    },
  });
}

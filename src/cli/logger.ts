/** The CLI's logger, loaded by the commands that log when they run (pino is not small). */
import pino, { type Logger } from "pino";

/** The CLI's logger: pino, always to stderr (stdout may be a protocol channel or the user's data). */
export function makeLogger(verbose: boolean, level?: string): Logger {
  return pino(
    { level: level ?? (verbose ? "debug" : "warn"), base: undefined },
    pino.destination(2),
  );
}

/** How the CLI says a failure: one line (details and causes with --verbose), or JSON with --json. */
import { isGuestlinkError } from "../errors.ts";
import { JSON_SCHEMA_VERSION } from "./common.ts";

/** Formats a failure as the one line the CLI prints, plus detail lines when verbose. */
export function formatFailure(err: unknown, verbose: boolean): string {
  const lines: string[] = [];
  if (isGuestlinkError(err)) {
    lines.push(`guestlink: ${err.message} [${err.code}]`);
    if (verbose && err.details) lines.push(`  details: ${JSON.stringify(err.details)}`);
  } else {
    lines.push(`guestlink: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (verbose) {
    for (let cause = (err as Error)?.cause; cause !== undefined; cause = (cause as Error)?.cause) {
      lines.push(`  caused by: ${cause instanceof Error ? cause.message : String(cause)}`);
    }
    if (err instanceof Error && err.stack) lines.push(err.stack);
  }
  return lines.join("\n");
}

/** The JSON a failure is with `--json` (docs/cli.md, "Failures"). */
export function failureJson(err: unknown): {
  schemaVersion: number;
  error: Record<string, unknown>;
} {
  if (isGuestlinkError(err)) {
    return {
      schemaVersion: JSON_SCHEMA_VERSION,
      error: { code: err.code, message: err.message, details: err.details ?? {} },
    };
  }
  return {
    schemaVersion: JSON_SCHEMA_VERSION,
    error: {
      code: "INTERNAL",
      message: err instanceof Error ? err.message : String(err),
      details: {},
    },
  };
}

/**
 * Says a failure the way the program's own failures are said (one line, or JSON with --json),
 * for a command that has its own exit status for it (an invalid plan or config: 5).
 */
export function reportFailure(err: unknown, json: boolean, verbose: boolean): void {
  process.stderr.write(
    `${json ? JSON.stringify(failureJson(err)) : formatFailure(err, verbose)}\n`,
  );
}

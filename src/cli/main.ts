/**
 * The `guestlink` command. Each command lives in its own file; this one wires them into commander
 * and owns the exit-status contract: guestlink's own failures exit 255 with one line on stderr
 * saying what failed and what to do (`--verbose` adds the details and causes).
 */
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { isGuestlinkError } from "../errors.ts";
import { registerDemo } from "./demo.ts";

export const EXIT_GUESTLINK_FAILURE = 255;

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
  return String(pkg.version);
}

export function buildProgram(): Command {
  const program = new Command("guestlink")
    .description(
      "A control channel between a host and its agents that never loses, corrupts, stalls or silently truncates anything.",
    )
    .version(packageVersion(), "-V, --version")
    .option("-v, --verbose", "print details and causes of failures")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  registerDemo(program);
  return program;
}

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

export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv as string[]);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; usage errors were already printed by commander.
      return err.exitCode === 0 ? 0 : EXIT_GUESTLINK_FAILURE;
    }
    process.stderr.write(`${formatFailure(err, Boolean(program.opts().verbose))}\n`);
    return EXIT_GUESTLINK_FAILURE;
  }
}

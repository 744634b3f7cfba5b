/**
 * The `guestlink` command. Each command lives in its own file; this one wires them into commander
 * and owns the exit-status contract: guestlink's own failures exit 255 with one line on stderr
 * saying what failed and what to do (`--verbose` adds the details and causes).
 */
import { Command, CommanderError } from "commander";
import { isGuestlinkError } from "../errors.ts";
import { VERSION } from "../version.ts";
import { registerAgent } from "./agent.ts";
import { setVerbose } from "./common.ts";
import { registerDemo } from "./demo.ts";
import { registerExec } from "./exec.ts";
import { registerFiles } from "./files.ts";
import { registerInfo } from "./info.ts";
import { registerPing } from "./ping.ts";
import { registerRun } from "./run.ts";
import { registerWatch } from "./watch.ts";

export const EXIT_GUESTLINK_FAILURE = 255;

/** The whole CLI, or with `agentOnly` just the agent (what the bundled agent runs). */
export function buildProgram({ agentOnly = false } = {}): Command {
  const program = new Command(agentOnly ? "guestlink-agent" : "guestlink")
    .description(
      "A control channel between a host and its agents that never loses, corrupts, stalls or silently truncates anything.",
    )
    .version(VERSION, "-V, --version")
    .option("-v, --verbose", "print details and causes of failures")
    .showHelpAfterError("(run with --help for usage)")
    .enablePositionalOptions()
    .exitOverride()
    .hook("preAction", (root) => setVerbose(Boolean(root.opts().verbose)));
  if (agentOnly) {
    registerAgent(program, { isDefault: true });
    return program;
  }
  registerExec(program);
  registerPing(program);
  registerInfo(program);
  registerFiles(program);
  registerWatch(program);
  registerRun(program);
  registerAgent(program);
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

export async function main(argv: readonly string[], { agentOnly = false } = {}): Promise<number> {
  const program = buildProgram({ agentOnly });
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

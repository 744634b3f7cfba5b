/**
 * The `guestlink` command. Each command lives in its own file; this one wires them into commander
 * and owns the exit-status contract: guestlink's own failures exit 255 with one line on stderr
 * saying what failed and what to do (`--verbose` adds the details and causes), or with `--json`
 * one JSON object `{"error": {code, message, details}}` on stderr, with the same exit status.
 *
 * What this file imports, and what they import, is loaded by every start, `--version` and
 * `--help` included: each command's file declares its options and help here and loads its
 * implementation with import() when it runs (test/cli/startup.test.ts checks what is loaded).
 */
import { Command, CommanderError } from "commander";
import { GuestlinkError } from "../errors.ts";
import { VERSION } from "../version.ts";
import { registerAgent } from "./agent.ts";
import { setVerbose } from "./common.ts";
import { registerDemo } from "./demo.ts";
import { registerExec } from "./exec.ts";
import { failureJson, formatFailure } from "./failure.ts";
import { registerFiles } from "./files.ts";
import { registerInfo } from "./info.ts";
import { registerKeygen } from "./keygen.ts";
import { registerMediate } from "./mediate.ts";
import {
  addConnectOptions,
  addGlobalOptions,
  jsonOutput,
  mergeGlobals,
  verboseOutput,
} from "./options.ts";
import { endQuietlyWhenStdoutCloses } from "./output.ts";
import { registerPing } from "./ping.ts";
import { registerRun } from "./run.ts";
import { registerLs, registerServe } from "./serve.ts";
import { registerCall, registerSubmit } from "./submit.ts";
import { registerWatch } from "./watch.ts";

/** For bin/guestlink: whether this run reached an agent (it then keeps its code cache). */
export { connectedToAgent } from "./common.ts";

export const EXIT_GUESTLINK_FAILURE = 255;

/** The whole CLI, or with `agentOnly` just the agent (what the bundled agent runs). */
export function buildProgram({ agentOnly = false } = {}): Command {
  const program = new Command(agentOnly ? "guestlink-agent" : "guestlink")
    .description(
      "A control channel between a host and its agents that never loses, corrupts, stalls or silently truncates anything.",
    )
    .version(VERSION, "-V, --version")
    // Our own one line replaces commander's message (see `formatFailure`).
    .configureOutput({ outputError: () => {} })
    .enablePositionalOptions()
    .exitOverride()
    .hook("preAction", (_root, command) => {
      mergeGlobals(command);
      setVerbose(Boolean(command.opts().verbose));
    });
  addGlobalOptions(program);
  if (agentOnly) {
    registerAgent(program, { isDefault: true });
    return program;
  }
  addConnectOptions(program);
  registerExec(program);
  registerPing(program);
  registerInfo(program);
  registerFiles(program);
  registerWatch(program);
  registerRun(program);
  registerSubmit(program);
  registerCall(program);
  registerMediate(program);
  registerServe(program);
  registerLs(program);
  registerAgent(program);
  registerKeygen(program);
  registerDemo(program);
  return program;
}

/**
 * A usage error from commander (unknown option or command, missing argument) as INVALID_OPTION,
 * naming the command whose help tells the usage.
 */
function usageError(
  err: CommanderError,
  program: Command,
  argv: readonly string[],
): GuestlinkError {
  const message = err.message.replace(/^error: /, "");
  const words = argv.slice(2);
  const command = program.commands.find((c) => words.includes(c.name()));
  const help = command ? `${program.name()} ${command.name()} --help` : `${program.name()} --help`;
  return new GuestlinkError("INVALID_OPTION", `${message} (see ${help})`, {
    details: { commander: err.code },
  });
}

export async function main(argv: readonly string[], { agentOnly = false } = {}): Promise<number> {
  endQuietlyWhenStdoutCloses();
  const program = buildProgram({ agentOnly });
  try {
    await program.parseAsync(argv as string[]);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    let failure = err;
    if (err instanceof CommanderError) {
      // Help and version exit 0; help shown because no command was given has been printed.
      if (err.exitCode === 0) return 0;
      if (err.code === "commander.help") return EXIT_GUESTLINK_FAILURE;
      failure = usageError(err, program, argv);
    }
    if (jsonOutput()) {
      process.stderr.write(`${JSON.stringify(failureJson(failure))}\n`);
    } else {
      process.stderr.write(`${formatFailure(failure, verboseOutput())}\n`);
    }
    return EXIT_GUESTLINK_FAILURE;
  }
}

/** `guestlink run PLAN`: a coordinated fleet run (src/controller/run/, docs/fleet.md). */
import type { Command } from "commander";
import { EXIT } from "../controller/run/outcome.ts";
import { isGuestlinkError } from "../errors.ts";
import { reportFailure } from "./failure.ts";
import { addGlobalOptions, jsonOutput, verboseOutput } from "./options.ts";
import type { RunOptions } from "./run-action.ts";

const EXIT_HELP = `
Exit status:
  0  every agent completed every stage (and the thresholds hold)
  1  every agent failed
  2  partial: some agents failed, the run went on without them
  3  aborted (Ctrl-C or SIGTERM; a second one exits at once)
  4  agents could not be reached within timeouts.connect, so a barrier could not be met
  5  the plan is invalid (nothing was contacted)
  6  a timeout (timeouts.ready, a stage's timeout) ended the run
  7  the thresholds were crossed
  255 guestlink itself failed (the results folder, a file it cannot read)

The plan's keys, the results folder and the --json events: docs/fleet.md.`;

export function registerRun(program: Command): void {
  addGlobalOptions(program.command("run"))
    .description(
      "run a plan on a fleet of agents: coordinated start, live merged stats, results folder",
    )
    .argument("<plan>", "the plan file (YAML; docs/fleet.md)")
    .option("--results <dir>", "where results go (default results/NAME-YYYYMMDD-HHMMSS)")
    .option("--dry-run", "check the plan and reach every agent (info, clock offset); run nothing")
    .addHelpText(
      "after",
      "\nWith --json: NDJSON events on stdout (state changes, stats, the summary) and nothing else.",
    )
    .addHelpText("after", EXIT_HELP)
    .action(async (plan: string, opts: RunOptions) => {
      try {
        // Loaded here, not with the CLI (see run-action.ts).
        const { dryRunCommand, run } = await import("./run-action.ts");
        process.exitCode = opts.dryRun
          ? await dryRunCommand(plan, Boolean(opts.json))
          : await run(plan, opts);
      } catch (err) {
        if (isGuestlinkError(err, "PLAN_INVALID")) {
          // Its own exit status (5), but said as every failure is.
          reportFailure(err, jsonOutput(), verboseOutput());
          process.exitCode = EXIT.invalid;
          return;
        }
        throw err;
      }
    });
}

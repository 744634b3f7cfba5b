/**
 * `guestlink demo`: its options and output. The demo itself (demo-run.ts, which brings in nearly
 * every part of guestlink) is loaded only when the command runs, so the CLI starts quickly.
 */
import type { Command } from "commander";
import { positiveInteger, printJson } from "./common.ts";
import type { DemoOptions } from "./demo-run.ts";
import { addGlobalOptions, seconds } from "./options.ts";

const GIB = 1024 ** 3;

export function registerDemo(program: Command): void {
  addGlobalOptions(program.command("demo"))
    .description(
      "show guestlink at work on this machine with three local agents; nothing to set up",
    )
    .option(
      "--output-bytes <n>",
      "size of the streamed command output (K, M, G allowed)",
      positiveInteger("--output-bytes"),
      GIB,
    )
    .option(
      "--damaged-bytes <n>",
      "size of the output streamed through a relay that inserts junk (K, M, G allowed)",
      positiveInteger("--damaged-bytes"),
      64 * 1024 ** 2,
    )
    .option(
      "--file-bytes <n>",
      "size of the file sent round trip (K, M, G allowed)",
      positiveInteger("--file-bytes"),
      64 * 1024 ** 2,
    )
    .option(
      "--telemetry-seconds <n>",
      "how long to watch telemetry",
      seconds("--telemetry-seconds"),
      3,
    )
    .option("--keep", "leave the daemon, its dashboard and the agents up at the end, until Ctrl-C")
    .option(
      "--fleet-seconds <n>",
      "how long the fleet run's mixed stage runs",
      seconds("--fleet-seconds"),
      3,
    )
    .addHelpText(
      "after",
      "\nExamples:\n  npm run demo\n  guestlink demo --output-bytes 100M --json\n",
    )
    .action(async (opts: DemoOptions) => {
      const say = opts.json ? () => {} : (line: string) => process.stdout.write(`${line}\n`);
      say("guestlink demo: three agents on this machine, a host talking to them\n");
      const started = performance.now();
      const { runDemo } = await import("./demo-run.ts");
      const checks = await runDemo(opts, say);
      const failed = checks.filter((c) => !c.ok);
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      if (opts.json) printJson({ ok: failed.length === 0, seconds: Number(seconds), checks });
      else
        say(
          `\n${failed.length === 0 ? `all ${checks.length} checks passed` : `${failed.length} of ${checks.length} checks FAILED: ${failed.map((c) => c.name).join(", ")}`} in ${seconds} s`,
        );
      if (failed.length > 0) process.exitCode = 1;
    });
}

/** `guestlink mediate --config FILE`: the host's mediator in the foreground (src/controller/mediator/). */
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import type { MediatorConfig } from "../controller/mediator/config.ts";
import type { MediatorLog } from "../controller/mediator/mediator.ts";
import { formatStatus } from "../controller/mediator/table.ts";
import { ConfigInvalidError, isGuestlinkError } from "../errors.ts";
import { reportFailure } from "./failure.ts";
import { addGlobalOptions, jsonOutput, verboseOutput } from "./options.ts";

const EXIT_INVALID = 5;

export function registerMediate(program: Command): void {
  addGlobalOptions(program.command("mediate"))
    .description(
      "run the host's mediator: guests submit work to priority pools (foreground, logs on stderr)",
    )
    .requiredOption("--config <file>", "the mediator's config (YAML; docs/guides/mediator.md)")
    .option("--no-table", "on a terminal, do not show the live table (logs only)")
    .addHelpText(
      "after",
      `
On a terminal it shows a live table per pool and level, and per guest; the same as JSON:
  guestlink call ADDR mediator.status --json

Exit status: 0 after SIGINT or SIGTERM (what was queued fails SESSION_CLOSED, what runs is waited
for); 5 when the config is invalid or cannot be read (nothing was started); 255 when it cannot start (an address in use).`,
    )
    .action(async (opts: { config: string; table: boolean }) => {
      // Loaded here, not with the CLI: the mediator brings the YAML reader, helpers and workers.
      const { parseMediatorConfig } = await import("../controller/mediator/config.ts");
      const { Mediator } = await import("../controller/mediator/mediator.ts");
      let config: MediatorConfig;
      try {
        config = parseMediatorConfig(await readConfig(opts.config), opts.config);
      } catch (err) {
        if (!isGuestlinkError(err, "CONFIG_INVALID")) throw err;
        reportFailure(err, jsonOutput(), verboseOutput());
        process.exitCode = EXIT_INVALID;
        return;
      }
      const screen = opts.table && process.stdout.isTTY === true ? new LiveTable() : undefined;
      const log = await logTo(screen);
      const mediator = await Mediator.start(config, { log });
      log(
        "info",
        `mediator running: ${config.pools.length} pools, listening on ${mediator.addresses.join(", ") || "(no matches yet)"}`,
      );
      const timer =
        screen === undefined
          ? undefined
          : setInterval(() => screen.draw(formatStatus(mediator.status())), 1000);
      screen?.draw(formatStatus(mediator.status()));
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals) => {
          log(
            "info",
            `${signal}: stopping; queued requests fail, running ones are waited for (again to exit at once)`,
          );
          process.once(signal, () => process.exit(130));
          resolve();
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      clearInterval(timer);
      await mediator.close();
      screen?.draw(formatStatus(mediator.status()));
      log("info", "mediator stopped");
    });
}

async function readConfig(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new ConfigInvalidError(
      `${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      { cause: err },
    );
  }
}

/** Logs on stderr: JSON lines (pino) when it is not a terminal, a short line when it is. */
async function logTo(screen: LiveTable | undefined): Promise<MediatorLog> {
  if (process.stderr.isTTY !== true) {
    const { makeLogger } = await import("./logger.ts");
    const logger = makeLogger(false, "info");
    return (level, message, fields) => logger[level](fields ?? {}, message);
  }
  return (level, message) => {
    const line = `${new Date().toISOString().slice(11, 19)} ${level === "warn" ? "WARN " : ""}${message}`;
    if (screen === undefined) process.stderr.write(`${line}\n`);
    else screen.log(line);
  };
}

/** A table redrawn in place at the bottom of the terminal, with log lines printed above it. */
class LiveTable {
  #lines = 0;
  #last = "";

  draw(text: string): void {
    this.#last = text;
    this.#erase();
    process.stdout.write(`${text}\n`);
    this.#lines = text.split("\n").length;
  }

  log(line: string): void {
    this.#erase();
    process.stderr.write(`${line}\n`);
    if (this.#last !== "") {
      process.stdout.write(`${this.#last}\n`);
      this.#lines = this.#last.split("\n").length;
    }
  }

  #erase(): void {
    if (this.#lines > 0) process.stdout.write(`\x1b[${this.#lines}F\x1b[J`);
    this.#lines = 0;
  }
}

/**
 * `guestlink exec ADDR -- CMD ARGS…`: run a command in the agent. stdin, stdout and stderr stream
 * both ways as raw bytes; the command's exit status becomes ours (signal N gives 128+N); Ctrl-C
 * cancels it in the agent (the whole process group), a second Ctrl-C leaves at once. SIGTERM and
 * SIGHUP (the terminal closed) do what Ctrl-C does, so the command does not outlive us.
 */
import { performance } from "node:perf_hooks";
import type { Command } from "commander";
import type { ExecResult } from "../agent/exec.ts";
import { remoteExec } from "../controller/exec.ts";
import { GuestlinkError, isGuestlinkError } from "../errors.ts";
import { agentCommand, connectAgent, positiveInteger, seconds } from "./common.ts";
import { commandAfterAddress } from "./options.ts";

/** Exit statuses of ours, beside the command's own (documented in the help text). */
export const EXIT_TIMEOUT = 124;
export const EXIT_CANCELLED = 130;
export const EXIT_OUTPUT_LIMIT = 141;

/** Signals that cancel the command: Ctrl-C, a polite kill, the terminal going away. */
const INTERRUPTS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

interface ExecOptions {
  timeout?: number;
  env?: string[];
  cwd?: string;
  shell?: boolean;
  maxOutput?: number;
  connectTimeout: number;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function parseEnv(pairs: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0)
      throw new GuestlinkError("INVALID_OPTION", `--env takes NAME=VALUE, got "${pair}"`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** One line on stderr for what the command's status alone does not say. */
function explain(
  result: ExecResult,
  argv: readonly string[],
  opts: ExecOptions,
): string | undefined {
  switch (result.reason) {
    case "not-found":
    case "not-executable":
    case "start-failed":
      return result.message ?? `${argv[0]}: ${result.reason}`;
    case "timeout":
      return `the command ran past --timeout ${opts.timeout} s and was stopped`;
    case "output-limit":
      return `the output reached --max-output ${opts.maxOutput} bytes and the command was stopped (output truncated)`;
    case "cancelled":
      return "cancelled; the command was stopped in the agent";
    default:
      return undefined;
  }
}

export function registerExec(program: Command): void {
  commandAfterAddress(
    agentCommand(
      program,
      "exec",
      "run a command in the agent, streaming stdin, stdout and stderr; exit with its status",
    ),
  )
    .argument(
      "<command...>",
      "the command and its arguments: everything from here on is the command's (-- before it is optional)",
    )
    .option(
      "--timeout <seconds>",
      "stop the command (its whole process group) after this long; exit 124",
      seconds("--timeout"),
    )
    .option("--env <NAME=VALUE>", "set an environment variable; repeatable", collect)
    .option("--cwd <dir>", "working folder in the agent")
    .option("--shell", "run the command line with /bin/sh -c")
    .option(
      "--max-output <bytes>",
      "stop the command once stdout+stderr reach this many bytes; exit 141",
      positiveInteger("--max-output"),
    )
    .addHelpText(
      "after",
      `
Exit status: the command's own; 128+N if a signal N ended it; 127 not found; 126 not executable;
124 --timeout; 141 --max-output; 130 cancelled (Ctrl-C, SIGTERM, SIGHUP); 125 the command could not be started
for another reason (a missing --cwd); 255 guestlink itself failed.

Examples:
  guestlink exec unix:/run/guestlink.sock -- uname -a
  guestlink exec tcp:10.0.0.5:7070 --timeout 60 -- dmesg > dmesg.txt
  tar c ./src | guestlink exec unix:/run/g.sock -- tar x -C /work
  guestlink exec 'exec:ssh vm guestlink agent --stdio' --shell -- 'ls /proc | wc -l'`,
    )
    .action(async (address: string, argv: string[], opts: ExecOptions) => {
      const session = await connectAgent(address, opts);
      const controller = new AbortController();
      let interrupts = 0;
      const onInterrupt = (signal: NodeJS.Signals) => {
        interrupts++;
        const how = signal === "SIGINT" ? "Ctrl-C" : signal;
        if (interrupts === 1)
          controller.abort(new GuestlinkError("CANCELLED", `interrupted (${how})`));
        else process.exit(EXIT_CANCELLED);
      };
      for (const signal of INTERRUPTS) process.on(signal, onInterrupt);
      let unconfirmed = false;
      try {
        const result = await remoteExec(
          session,
          {
            argv,
            env: opts.env ? parseEnv(opts.env) : undefined,
            cwd: opts.cwd,
            shell: opts.shell,
            maxOutputBytes: opts.maxOutput,
          },
          // stdin is forwarded unless it is a terminal nobody is typing into for this command.
          { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
          {
            signal: controller.signal,
            deadline:
              opts.timeout === undefined ? Infinity : performance.now() + opts.timeout * 1000,
          },
        );
        const note = explain(result, argv, opts);
        if (note) process.stderr.write(`guestlink: ${note}\n`);
        process.exitCode = result.status;
      } catch (err) {
        if (isGuestlinkError(err, "CANCELLED")) {
          // The agent did not confirm (it was unreachable): say only what we know, and go now
          // rather than wait for the link to come back.
          unconfirmed = true;
          process.stderr.write(
            "guestlink: cancelled; the command may still be running in the agent until it is reached or its resume window ends\n",
          );
          process.exitCode = EXIT_CANCELLED;
        } else if (isGuestlinkError(err, "DEADLINE_EXCEEDED")) {
          process.stderr.write(
            `guestlink: the command ran past --timeout ${opts.timeout} s and was stopped\n`,
          );
          process.exitCode = EXIT_TIMEOUT;
        } else {
          throw err;
        }
      } finally {
        for (const signal of INTERRUPTS) process.off(signal, onInterrupt);
        process.stdin.unref?.();
        process.stdin.pause();
        // Closing waits for the agent; a cancel it never confirmed means it cannot be reached.
        if (unconfirmed) session.abort(new GuestlinkError("CANCELLED", "interrupted"));
        else await session.close();
      }
    });
}

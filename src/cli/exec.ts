/**
 * `guestlink exec ADDR -- CMD ARGS…`: run a command in the agent. stdin, stdout and stderr stream
 * both ways as raw bytes; the command's exit status becomes ours (signal N gives 128+N); Ctrl-C
 * cancels it in the agent (the whole process group), a second Ctrl-C leaves at once. SIGTERM and
 * SIGHUP (the terminal closed) do what Ctrl-C does, so the command does not outlive us.
 */
import { fstatSync, statSync } from "node:fs";
import type { Command } from "commander";
import type { ExecResult } from "../agent/exec-contract.ts";
import { GuestlinkError, isGuestlinkError } from "../errors.ts";
import { agentCommand, connectAgent, positiveInteger, seconds, setTerminalRaw } from "./common.ts";
import { commandAfterAddress } from "./options.ts";

/** Exit statuses of ours, beside the command's own (documented in the help text). */
export const EXIT_TIMEOUT = 124;
export const EXIT_CANCELLED = 130;
export const EXIT_OUTPUT_LIMIT = 141;

/** Signals that cancel the command: Ctrl-C, a polite kill, the terminal going away. */
const INTERRUPTS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/** Signals that `--signal-forward` delivers to the command instead of cancelling it. */
const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGWINCH"] as const;

interface ExecOptions {
  timeout?: number;
  env?: string[];
  cwd?: string;
  shell?: boolean;
  maxOutput?: number;
  /** How many times -t was given: once asks for a terminal, twice forces one. */
  tty: number;
  stdin?: boolean;
  signalForward?: boolean;
  connectTimeout: number;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];
const count = (_value: string, previous: number) => previous + 1;

/**
 * The command's stdin: ours, or none when ours is /dev/null (a script's or a service's), which
 * would give nothing: Node reads a device file in libuv's thread pool, and starting the pool
 * cost about 5 ms of an `exec`'s start on a 2-CPU VM.
 */
function localStdin(): typeof process.stdin | null {
  try {
    const ours = fstatSync(0);
    if (ours.isCharacterDevice() && ours.rdev === statSync("/dev/null").rdev) return null;
  } catch {
    // No descriptor 0, or no /dev/null: ours, as ever.
  }
  return process.stdin;
}

/** The local terminal's size, from whichever of stdout and stderr is one; 0 when neither is. */
function terminalSize(): { rows: number; cols: number } {
  for (const out of [process.stdout, process.stderr]) {
    if (out.isTTY) {
      const [cols, rows] = out.getWindowSize();
      return { rows, cols };
    }
  }
  return { rows: 0, cols: 0 };
}

/**
 * Puts the local terminal (stdin) in raw mode, so that every key, Ctrl-C and Ctrl-Z included,
 * goes to the remote terminal as bytes. The returned function puts it back; it also runs at
 * process exit, whatever the way out (an exception, process.exit, a signal handled here).
 */
function rawTerminal(): () => void {
  const stdin = process.stdin;
  if (!stdin.isTTY) return () => {};
  stdin.setRawMode(true);
  setTerminalRaw(true);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    setTerminalRaw(false);
    process.off("exit", restore);
    try {
      stdin.setRawMode(false);
    } catch {
      // the terminal is gone
    }
  };
  process.on("exit", restore);
  return restore;
}

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
    .option(
      "-t, --tty",
      "run the command on a terminal in the agent, sized as this one and resized with it; keys (Ctrl-C, Ctrl-Z too) go to it as typed. Only when stdin is a terminal; -tt forces one",
      count,
      0,
    )
    .option(
      "-i, --stdin",
      "pass stdin to the command (it always is: accepted so that kubectl's -it works)",
    )
    .option(
      "--signal-forward",
      "deliver SIGINT, SIGTERM, SIGHUP and SIGWINCH to the command's process group instead of cancelling it (SIGQUIT still cancels)",
    )
    .addHelpText(
      "after",
      `
Exit status: the command's own; 128+N if a signal N ended it; 127 not found; 126 not executable;
124 --timeout; 141 --max-output; 130 cancelled (Ctrl-C, SIGTERM, SIGHUP); 125 the command could not be started
for another reason (a missing --cwd); 255 guestlink itself failed.

With -t the command's stdout and stderr both come on stdout, through the terminal; the exit
status is the same as without. Without the agent's spawn addon, -t fails (TTY_UNSUPPORTED).

Examples:
  guestlink exec unix:/run/guestlink.sock -- uname -a
  guestlink exec -it unix:/run/guestlink.sock -- bash
  guestlink exec tcp:10.0.0.5:7070 --timeout 60 -- dmesg > dmesg.txt
  tar c ./src | guestlink exec unix:/run/g.sock -- tar x -C /work
  guestlink exec 'exec:ssh vm guestlink agent --stdio' --shell -- 'ls /proc | wc -l'`,
    )
    .action(async (address: string, argv: string[], opts: ExecOptions) => {
      let tty = false;
      if (opts.tty > 0) {
        if (process.stdin.isTTY || opts.tty > 1) tty = true;
        else {
          process.stderr.write(
            "guestlink: stdin is not a terminal, so the command gets none (-tt forces one)\n",
          );
        }
      }
      // Loaded now rather than with the program, so that --help and --version start quickly.
      const { ExecControl, remoteExec } = await import("../controller/exec.ts");
      const session = await connectAgent(address, opts);
      const stdin = localStdin();
      const controller = new AbortController();
      const control = tty || opts.signalForward ? new ExecControl() : undefined;
      let interrupts = 0;
      const onInterrupt = (signal: NodeJS.Signals) => {
        interrupts++;
        const how = signal === "SIGINT" ? "Ctrl-C" : signal;
        if (interrupts === 1)
          controller.abort(new GuestlinkError("CANCELLED", `interrupted (${how})`));
        else process.exit(EXIT_CANCELLED);
      };
      const onForward = (signal: NodeJS.Signals) => {
        if (signal === "SIGWINCH" && tty) return;
        control?.signal(signal as (typeof FORWARDED)[number]);
      };
      const onResize = () => {
        const { rows, cols } = terminalSize();
        control?.resize(rows, cols);
      };
      const cancelling: NodeJS.Signals[] = opts.signalForward ? ["SIGQUIT"] : [...INTERRUPTS];
      const forwarding: NodeJS.Signals[] = opts.signalForward ? [...FORWARDED] : [];
      for (const signal of cancelling) process.on(signal, onInterrupt);
      for (const signal of forwarding) process.on(signal, onForward);
      if (tty) process.on("SIGWINCH", onResize);
      let restoreTerminal = () => {};
      let unconfirmed = false;
      try {
        const env = opts.env ? parseEnv(opts.env) : {};
        // The remote terminal is read as the local one is.
        if (tty && process.env.TERM && env.TERM === undefined) env.TERM = process.env.TERM;
        if (tty) restoreTerminal = rawTerminal();
        const result = await remoteExec(
          session,
          {
            argv,
            env: Object.keys(env).length > 0 ? env : undefined,
            cwd: opts.cwd,
            shell: opts.shell,
            maxOutputBytes: opts.maxOutput,
            ...(tty ? { tty: terminalSize() } : {}),
          },
          // stdin is forwarded unless it is a terminal nobody is typing into for this command.
          {
            stdin,
            stdout: process.stdout,
            stderr: process.stderr,
            // Our stdout and stderr keep nothing once a write is done.
            recycle: true,
            ...(control ? { control } : {}),
          },
          {
            signal: controller.signal,
            deadline:
              opts.timeout === undefined ? Infinity : performance.now() + opts.timeout * 1000,
          },
        );
        restoreTerminal();
        const note = explain(result, argv, opts);
        if (note) process.stderr.write(`guestlink: ${note}\n`);
        process.exitCode = result.status;
      } catch (err) {
        restoreTerminal();
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
        restoreTerminal();
        for (const signal of cancelling) process.off(signal, onInterrupt);
        for (const signal of forwarding) process.off(signal, onForward);
        process.off("SIGWINCH", onResize);
        stdin?.unref?.();
        stdin?.pause();
        // Closing waits for the agent; a cancel it never confirmed means it cannot be reached.
        if (unconfirmed) session.abort(new GuestlinkError("CANCELLED", "interrupted"));
        else await session.close();
      }
    });
}

/**
 * Runs the CLI on a terminal, as a person does: util-linux `script` gives it a pseudo-terminal
 * for stdin, stdout and stderr (Node has no pty of its own). Everything it prints, both streams,
 * arrives on the one terminal.
 */
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import { guestlinkArgs } from "./bin.ts";

/** Why terminal tests cannot run here, or undefined if they can. */
export const noTerminal: string | undefined = (() => {
  try {
    execFileSync("script", ["-qec", "true", "/dev/null"], { stdio: "ignore" });
    return undefined;
  } catch {
    return "util-linux `script` is not installed: it gives the CLI a terminal";
  }
})();

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

export interface TerminalRun {
  readonly child: ChildProcessWithoutNullStreams;
  /** All the terminal showed so far. */
  output(): string;
  /** Resolves once the terminal has shown text matching `pattern`. */
  shows(pattern: RegExp): Promise<string>;
  /** Resolves with the CLI's exit status once it has exited. */
  exited: Promise<number | null>;
}

/** `guestlink ARGS…` from the source, on a terminal. */
export function runOnTerminal(args: readonly string[]): TerminalRun {
  const command = [process.execPath, ...guestlinkArgs(args)].map(quote).join(" ");
  // -e: script exits with the command's status; -q: no banner; /dev/null: no typescript file.
  const child = spawn("script", ["-qec", command, "/dev/null"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let text = "";
  const waiters = new Set<() => void>();
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    text += d;
    for (const w of [...waiters]) w();
  });
  child.stderr.resume();
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => resolve(code)),
  );
  return {
    child,
    output: () => text,
    shows(pattern) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = pattern.exec(text);
          if (m) {
            waiters.delete(check);
            resolve(m[0]);
          }
        };
        waiters.add(check);
        check();
        void exited.then(() => {
          if (waiters.delete(check))
            reject(new Error(`the CLI exited without showing ${pattern}; it showed: ${text}`));
        });
      });
    },
    exited,
  };
}

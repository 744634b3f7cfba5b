/** Finding processes by what they were started with, from /proc (no pgrep needed). */
import { readdirSync, readFileSync } from "node:fs";

/** Pids of the processes whose command line (arguments joined by spaces) contains `text`. */
export function processesMatching(text: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").filter(Boolean);
      if (argv.join(" ").includes(text)) found.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

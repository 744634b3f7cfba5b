/** `guestlink watch ADDR`: live telemetry, redrawn in place on a terminal, one line each otherwise. */
import type { Command } from "commander";
import type { TelemetrySample } from "../agent/telemetry.ts";
import {
  MAX_TELEMETRY_INTERVAL_MS,
  MIN_TELEMETRY_INTERVAL_MS,
} from "../agent/telemetry-interval.ts";
import { InvalidOptionError } from "../errors.ts";
import {
  agentCommand,
  connectAgent,
  formatBytes,
  positiveInteger,
  printJson,
  seconds,
} from "./common.ts";
import { stdoutClosed } from "./output.ts";

interface WatchOptions {
  interval: number;
  count?: number;
  json?: boolean;
  connectTimeout: number;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

function bar(fraction: number, width = 30): string {
  const n = Math.round(Math.max(0, Math.min(1, fraction)) * width);
  return `[${"#".repeat(n).padEnd(width, ".")}]`;
}

function line(s: TelemetrySample): string {
  const mem = s.memory.usedBytes / s.memory.totalBytes;
  const rx = s.net.reduce((a, n) => a + n.rxBytes, 0);
  const tx = s.net.reduce((a, n) => a + n.txBytes, 0);
  return `${new Date(s.t).toISOString()} cpu ${pct(s.cpu.usage)} mem ${pct(mem)} load ${s.load.map((l) => l.toFixed(2)).join(" ")} net rx ${formatBytes(rx)} tx ${formatBytes(tx)}`;
}

function screen(address: string, s: TelemetrySample, n: number): string {
  const mem = s.memory.usedBytes / s.memory.totalBytes;
  const rows = [
    `guestlink watch ${address}   sample ${n}   ${new Date(s.t).toLocaleTimeString()}   (Ctrl-C to stop)`,
    "",
    `cpu     ${bar(s.cpu.usage)} ${pct(s.cpu.usage)} of ${s.cpu.count} cpus`,
    `memory  ${bar(mem)} ${formatBytes(s.memory.usedBytes)} used of ${formatBytes(s.memory.totalBytes)}`,
    `load    ${s.load.map((l) => l.toFixed(2)).join("  ")}`,
    ...s.disks.map(
      (d) =>
        `disk    ${bar(1 - d.freeBytes / d.totalBytes)} ${d.path}: ${formatBytes(d.freeBytes)} free of ${formatBytes(d.totalBytes)}`,
    ),
    ...s.net.map(
      (i) =>
        `net     ${i.iface.padEnd(10)} rx ${formatBytes(i.rxBytes).padStart(10)}  tx ${formatBytes(i.txBytes).padStart(10)}`,
    ),
  ];
  // Home the cursor and clear to the end of the screen: a redraw in place, no scrolling.
  return `\u001b[H\u001b[J${rows.join("\n")}\n`;
}

/** The agent samples from ten times a second to once an hour. */
function sampleInterval(value: string): number {
  const n = seconds("--interval")(value);
  if (n * 1000 < MIN_TELEMETRY_INTERVAL_MS || n * 1000 > MAX_TELEMETRY_INTERVAL_MS) {
    throw new InvalidOptionError(
      `--interval takes ${MIN_TELEMETRY_INTERVAL_MS / 1000} to ${MAX_TELEMETRY_INTERVAL_MS / 1000} seconds, got "${value}"`,
      { details: { option: "--interval", value } },
    );
  }
  return n;
}

export function registerWatch(program: Command): void {
  agentCommand(program, "watch", "show the agent's CPU, memory, load, disk and network live")
    .option("--interval <seconds>", "time between samples (0.1 to 3600)", sampleInterval, 1)
    .option("-n, --count <n>", "stop after this many samples", positiveInteger("--count"))
    .addHelpText(
      "after",
      "\nExamples:\n  guestlink watch unix:/run/guestlink.sock\n  guestlink watch tcp:10.0.0.5:7070 --interval 5 --json > telemetry.ndjson\n",
    )
    .action(async (address: string, opts: WatchOptions) => {
      // Loaded now rather than with the program, so that --help and --version start quickly.
      const { watchTelemetry } = await import("../controller/telemetry.ts");
      const session = await connectAgent(address, opts);
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.on("SIGINT", stop);
      // A reader that went away (`| head -1`) ends the watch as Ctrl-C does: quietly.
      stdoutClosed.addEventListener("abort", stop, { once: true });
      const redraw = !opts.json && Boolean(process.stdout.isTTY);
      let n = 0;
      try {
        for await (const sample of watchTelemetry(session, {
          intervalMs: opts.interval * 1000,
          signal: controller.signal,
        })) {
          n++;
          if (opts.json) printJson(sample);
          else process.stdout.write(redraw ? screen(address, sample, n) : `${line(sample)}\n`);
          if (opts.count !== undefined && n >= opts.count) break;
        }
      } finally {
        process.off("SIGINT", stop);
        stdoutClosed.removeEventListener("abort", stop);
        controller.abort();
        await session.close();
      }
    });
}

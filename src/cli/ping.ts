/** `guestlink ping ADDR`: round trips through the whole stack, with statistics. */
import type { Command } from "commander";
import { InvalidOptionError } from "../errors.ts";
import { agentCommand, connectAgent, positiveInteger, printJson, seconds } from "./common.ts";
import { stdoutClosed } from "./output.ts";

/** Round-trip statistics; the times are null when no call was answered. */
export interface PingStats {
  sent: number;
  answered: number;
  failed: number;
  minMs: number | null;
  avgMs: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
}

export function pingStats(samples: readonly number[], failed: number): PingStats {
  const sorted = [...samples].sort((a, b) => a - b);
  const counts = { sent: samples.length + failed, answered: samples.length, failed };
  if (sorted.length === 0) {
    return { ...counts, minMs: null, avgMs: null, p50Ms: null, p99Ms: null, maxMs: null };
  }
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return {
    ...counts,
    minMs: sorted[0] as number,
    avgMs: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    p50Ms: at(0.5) as number,
    p99Ms: at(0.99) as number,
    maxMs: sorted[sorted.length - 1] as number,
  };
}

const nonNegativeSeconds = (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0)
    throw new InvalidOptionError(`--interval takes seconds (0 or more), got "${value}"`);
  return n;
};

export function registerPing(program: Command): void {
  agentCommand(program, "ping", "measure round trips to the agent through the whole stack")
    .option("-c, --count <n>", "how many calls", positiveInteger("--count"), 5)
    .option(
      "-i, --interval <seconds>",
      "pause between calls (0: back to back)",
      nonNegativeSeconds,
      0.2,
    )
    .option("--timeout <seconds>", "deadline of each call", seconds("--timeout"), 5)
    .addHelpText(
      "after",
      "\nExamples:\n  guestlink ping unix:/run/guestlink.sock\n  guestlink ping tcp:10.0.0.5:7070 -c 1000 -i 0 --json\n",
    )
    .action(
      async (
        address: string,
        opts: {
          count: number;
          interval: number;
          timeout: number;
          json?: boolean;
          connectTimeout: number;
        },
      ) => {
        const session = await connectAgent(address, opts);
        const samples: number[] = [];
        let failed = 0;
        try {
          if (!opts.json)
            process.stdout.write(`PING ${address} (agent ${session.peer?.id ?? "?"})\n`);
          // A reader that went away (`| head -2`) has seen all it wanted: stop, quietly.
          for (let seq = 1; seq <= opts.count && !stdoutClosed.aborted; seq++) {
            const start = performance.now();
            try {
              await session.call("ping", { seq }, { deadline: start + opts.timeout * 1000 });
              const ms = performance.now() - start;
              samples.push(ms);
              if (!opts.json) process.stdout.write(`seq=${seq} time=${ms.toFixed(3)} ms\n`);
            } catch (err) {
              failed++;
              if (!opts.json)
                process.stdout.write(`seq=${seq} failed: ${(err as Error).message}\n`);
            }
            if (seq < opts.count && opts.interval > 0)
              await new Promise((r) => setTimeout(r, opts.interval * 1000));
          }
          const stats = pingStats(samples, failed);
          if (opts.json) {
            printJson({
              address,
              peer: session.peer?.id,
              ...stats,
              keepaliveRttMs: session.rttMs,
              clockOffsetMs: session.clockOffsetMs,
            });
          } else {
            const f = (n: number | null) => (n === null ? "-" : n.toFixed(3));
            process.stdout.write(
              `--- ${address} ping statistics ---\n${stats.sent} calls, ${stats.answered} answered, ${stats.failed} failed\n` +
                (stats.answered === 0
                  ? "round trip: no call was answered\n"
                  : `round trip min/avg/p50/p99/max = ${f(stats.minMs)}/${f(stats.avgMs)}/${f(stats.p50Ms)}/${f(stats.p99Ms)}/${f(stats.maxMs)} ms\n`),
            );
          }
          if (failed > 0) process.exitCode = 1;
        } finally {
          await session.close();
        }
      },
    );
}

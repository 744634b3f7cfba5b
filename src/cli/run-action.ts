/**
 * `guestlink run PLAN`'s work: the run (or the dry run) and what it prints. Loaded by run.ts only
 * when the command runs: the controller's run brings in the YAML reader and the histograms.
 */
import {
  combine,
  formatUs,
  lineOutput,
  ndjsonOutput,
  tableOutput,
} from "../controller/run/live.ts";
import { EXIT } from "../controller/run/outcome.ts";
import { dryRun, runPlan } from "../controller/run/run-plan.ts";
import type { RunSummary } from "../controller/run/summary.ts";

export interface RunOptions {
  results?: string;
  json?: boolean;
  dryRun?: boolean;
}

function printSummary(s: RunSummary, dir: string): void {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`run ${s.name}: ${s.outcome} (exit ${s.exitCode})${s.reason ? `: ${s.reason}` : ""}`);
  for (const stage of s.stages) {
    const c = combine(stage.operations);
    const spread =
      stage.startSpreadMs === null ? "" : `, start spread ${stage.startSpreadMs.toFixed(2)} ms`;
    out(
      `  ${stage.name}: ${stage.completed} of ${stage.agents} agents completed${spread}; ${c.opsPerSec.toFixed(1)} ops/s ${c.mibPerSec.toFixed(2)} MiB/s p50 ${formatUs(c.p50)} p99 ${formatUs(c.p99)} p99.9 ${formatUs(c.p999)} errors ${c.errors}`,
    );
  }
  for (const a of s.agents)
    if (a.state !== "COMPLETED") out(`  ${a.id}: ${a.state}: ${a.reason ?? ""}`);
  for (const t of s.thresholds)
    if (!t.ok)
      out(`  threshold crossed: ${t.threshold} (${t.stage} ${t.operation}: ${t.value.toFixed(1)})`);
  out(`results: ${dir}`);
}

export async function dryRunCommand(plan: string, json: boolean): Promise<number> {
  const { exitCode, agents } = await dryRun(plan);
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ schemaVersion: 1, type: "dry-run", exitCode, agents })}\n`,
    );
    return exitCode;
  }
  for (const a of agents) {
    const clock =
      a.clock === undefined
        ? ""
        : ` clock ${a.clock.offsetMs >= 0 ? "+" : ""}${a.clock.offsetMs.toFixed(1)} ms ± ${a.clock.uncertaintyMs.toFixed(2)}${a.withinSkew ? "" : " (beyond clock.max_skew)"}`;
    process.stdout.write(
      `${a.id} ${a.address}: ${a.reachable ? `reachable${clock}` : `NOT reachable: ${a.error?.message} [${a.error?.code}]`}\n`,
    );
  }
  process.stdout.write(
    exitCode === 0
      ? "plan is valid and every agent is reachable\n"
      : "some agents cannot take part\n",
  );
  return exitCode;
}

export async function run(plan: string, opts: RunOptions): Promise<number> {
  const abort = new AbortController();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) process.exit(EXIT.aborted);
    process.stderr.write(
      `guestlink: ${signal}: aborting the run; waiting for every agent to confirm (again to exit at once)\n`,
    );
    abort.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const write = (text: string) => process.stdout.write(text);
    const tty = process.stdout.isTTY === true;
    const result = await runPlan({
      planPath: plan,
      resultsDir: opts.results,
      signal: abort.signal,
      output: (state) =>
        opts.json
          ? ndjsonOutput(write)
          : tty
            ? tableOutput(write, state, () => process.stdout.columns ?? 100)
            : lineOutput(write, state),
    });
    if (!opts.json) printSummary(result.summary, result.resultsDir);
    return result.exitCode;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** The demo's fleet run: the three agents through a coordinated `io` run, merged live. */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { lineOutput } from "../controller/run/live.ts";
import { runPlan } from "../controller/run/run-plan.ts";
import type { RunSummary } from "../controller/run/summary.ts";

/** Runs a two-stage io plan on `agents` (id → address) in `dir`; what it printed is `say`'s. */
export async function runFleetDemo(
  agents: readonly (readonly [string, string])[],
  dir: string,
  seconds: number,
  say: (line: string) => void,
): Promise<RunSummary> {
  const plan = join(dir, "fleet.yaml");
  await writeFile(
    plan,
    `name: demo
agents:
${agents.map(([id, address]) => `  - { id: ${id}, address: "${address}" }`).join("\n")}
start_delay: 500ms
stages:
  - name: prepare
    workload: { io: { dir: ${join(dir, "fleet-data")}, files: 32, size: 64KiB, op: write, concurrency: 4 } }
  - name: mixed
    duration: ${seconds}s
    barrier: { min: 2 }
    workload: { io: { dir: ${join(dir, "fleet-data")}, files: 32, size: 64KiB, concurrency: 4, mix: { read: 70, write: 30 } } }
`,
  );
  say(`      guestlink run ${plan}`);
  const { summary } = await runPlan({
    planPath: plan,
    resultsDir: join(dir, "fleet-results"),
    output: (state) => lineOutput((text) => say(`      ${text.trimEnd()}`), state),
  });
  return summary;
}

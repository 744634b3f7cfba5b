/**
 * `npm run bench -- NAME [--quick]` runs `bench/NAME.bench.ts`; with no NAME it lists them.
 * Exit status: 0 when the benchmark ran (aims met or not), 1 when it failed (a correctness check
 * threw), 2 for a usage error.
 */
import { readdirSync } from "node:fs";
import type { Bench, BenchOptions } from "./lib.ts";
import { environment, printReport } from "./lib.ts";

const SUFFIX = ".bench.ts";
const USAGE = "usage: npm run bench -- [NAME] [--quick]";

function available(): string[] {
  return readdirSync(new URL(".", import.meta.url))
    .filter((file) => file.endsWith(SUFFIX))
    .map((file) => file.slice(0, -SUFFIX.length))
    .sort();
}

function usageError(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

async function main(argv: readonly string[]): Promise<void> {
  const names = available();
  let name: string | undefined;
  const opts: BenchOptions = { quick: false };
  for (const arg of argv) {
    if (arg === "--quick") opts.quick = true;
    else if (arg === "--help" || arg === "-h") {
      process.stdout.write(`${USAGE}\n`);
      return;
    } else if (arg.startsWith("-")) usageError(`unknown option ${arg} (${USAGE})`);
    else if (name !== undefined) usageError(`one benchmark at a time (${USAGE})`);
    else name = arg;
  }
  if (name === undefined) {
    process.stdout.write(`benchmarks: ${names.join(", ")}\n${USAGE}\n`);
    return;
  }
  if (!names.includes(name)) {
    usageError(`unknown benchmark "${name}" (available: ${names.join(", ")})`);
  }
  const module = (await import(`./${name}${SUFFIX}`)) as { run?: Bench };
  if (typeof module.run !== "function") {
    usageError(`bench/${name}${SUFFIX} does not export run()`);
  }
  const env = environment();
  const report = await module.run(opts);
  printReport(name, opts, env, report);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(
    `bench: failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});

/**
 * The daemon for `serve.bench.ts`, in its own process so that its memory and CPU time are its
 * own, run by plain node (no tsx) from a compiled library:
 *
 *   node --expose-gc bench/serve-daemon.mjs LIBDIR CONFIG.json
 *
 * CONFIG.json is what `guestlink serve --config` reads (agents, socket, http). It starts
 * `Daemon.start(readServeConfig(config))`, prints "ready HTTP-ADDRESS", then "up MS" once every
 * agent of the config has been `up` (MS from just before `Daemon.start`; at once with none). A
 * line "mem" on stdin answers with one line of JSON: `process.memoryUsage()` after two full
 * garbage collections; a line "cpu" with `process.cpuUsage()` (microseconds, the same counters as
/proc/PID/stat's utime and stime without its 10 ms ticks). It closes the daemon and exits when its stdin closes, or on SIGTERM.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const [libDir, configPath] = process.argv.slice(2);
if (libDir === undefined || configPath === undefined) {
  process.stderr.write("usage: serve-daemon.mjs LIBDIR CONFIG.json\n");
  process.exit(2);
}
const load = (path) => import(pathToFileURL(join(libDir, path)).href);
const { Daemon } = await load("daemon/daemon.js");
const { readServeConfig } = await load("daemon/config.js");

const config = readServeConfig(JSON.parse(readFileSync(configPath, "utf8")));
const want = config.agents.length;
const up = new Set();
let upAt;
const start = performance.now();
const log = (level, message) => {
  if (level === "warn" && !message.includes("→ down") && !message.includes("→ stalled")) {
    process.stderr.write(`daemon: ${message}\n`);
  }
};
const reportUp = () => {
  if (upAt !== undefined || up.size < want) return;
  upAt = performance.now() - start;
  process.stdout.write(`up ${upAt.toFixed(1)}\n`);
};
const daemon = await Daemon.start(config, { log });
// Agents that came up while it started, then the others as they do.
for (const [id, held] of daemon.agents) if (held.state === "up") up.add(id);
daemon.onEvent((e) => {
  if (e.type === "state" && e.state === "up") up.add(e.id);
  reportUp();
});
process.stdout.write(`ready ${daemon.httpAddress ?? "-"}\n`);
reportUp();

let closing = false;
const stop = async () => {
  if (closing) return;
  closing = true;
  await daemon.close();
  process.exit(0);
};
createInterface({ input: process.stdin })
  .on("line", (line) => {
    if (line === "mem") {
      globalThis.gc?.();
      globalThis.gc?.();
      process.stdout.write(`${JSON.stringify(process.memoryUsage())}\n`);
    } else if (line === "cpu") {
      process.stdout.write(`${JSON.stringify(process.cpuUsage())}\n`);
    }
  })
  .on("close", stop);
process.once("SIGTERM", stop);

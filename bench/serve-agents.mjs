/**
 * Agents for `serve.bench.ts`, run by plain node (no tsx) from a compiled library:
 *
 *   node bench/serve-agents.mjs LIBDIR DIR FIRST COUNT
 *
 * One `Agent` (src/agent/agent.ts) listening on COUNT Unix sockets DIR/agent-FIRST.sock …
 * (`runAgent` with several `listen` addresses): each socket is an agent as far as the daemon is
 * concerned (its own session, keepalive, calls). It prints "ready" once listening everywhere and
 * stops (aborting its sessions) when its stdin closes, or on SIGTERM.
 */
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [libDir, dir, firstArg, countArg] = process.argv.slice(2);
if (libDir === undefined || dir === undefined || countArg === undefined) {
  process.stderr.write("usage: serve-agents.mjs LIBDIR DIR FIRST COUNT\n");
  process.exit(2);
}
const load = (path) => import(pathToFileURL(join(libDir, path)).href);
const { Agent } = await load("agent/agent.js");
const { runAgent } = await load("agent/run.js");

const first = Number(firstArg);
const count = Number(countArg);
const listen = Array.from(
  { length: count },
  (_, i) => `unix:${join(dir, `agent-${first + i}.sock`)}`,
);
const quiet = { info() {}, warn() {} };
const agent = new Agent({ id: `bench-agents-${first}` });
const running = await runAgent({ agent, listen, log: quiet });

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await running.stop({ abort: true });
  process.exit(0);
};
process.stdin.on("end", stop).resume();
process.once("SIGTERM", stop);
process.stdout.write("ready\n");

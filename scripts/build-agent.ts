/**
 * Bundles the agent into one file, dist/guestlink-agent.cjs, that runs with plain `node` (20 or
 * newer) and no node_modules: what the VM tests put into a guest. msgpackr's optional native
 * extension is left out (msgpackr falls back to JavaScript without it).
 */
import { statSync } from "node:fs";
import { build } from "esbuild";

const outfile = "dist/guestlink-agent.cjs";
await build({
  entryPoints: ["src/cli/agent-main.ts"],
  outfile,
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  external: ["msgpackr-extract"],
  banner: { js: "#!/usr/bin/env node" },
  legalComments: "none",
  logLevel: "warning",
});
console.log(`${outfile}: ${(statSync(outfile).size / 1024).toFixed(0)} KiB`);

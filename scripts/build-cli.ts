/**
 * Bundles the CLI for a quick start: `bin/guestlink` loads dist/bundle/guestlink.mjs, one file
 * for what every command needs, and chunks beside it for what only some load when they run (the
 * daemon, the mediator, fleet runs, the demo, the agent's services). Measured on this machine
 * (2 cores): `guestlink --version` 0.43-0.56 s from dist/cli/ (tsc's output, about 200 modules),
 * 0.16-0.22 s from the bundle; `node -e 0` 0.08-0.11 s.
 *
 * Dependencies are bundled too, except native modules (loaded from node_modules when present;
 * msgpackr's string extractor is left out, see below) and the YAML reader, which
 * config-file.ts loads when a file is read.
 */
import { statSync } from "node:fs";
import { build } from "esbuild";
import { CLI_BUILD_OPTIONS, CLI_BUNDLE_DIR } from "./cli-bundle.ts";

const result = await build({ ...CLI_BUILD_OPTIONS, metafile: true });
const outputs = Object.keys(result.metafile.outputs);
const kib = (path: string) => (statSync(path).size / 1024).toFixed(0);
const entry = `${CLI_BUNDLE_DIR}/guestlink.mjs`;
console.log(
  `${entry}: ${kib(entry)} KiB, with ${outputs.length - 1} chunks in ${CLI_BUNDLE_DIR}/chunks`,
);

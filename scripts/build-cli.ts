/**
 * Bundles the CLI for a quick start (options in cli-bundle.ts): bin/guestlink compiles
 * dist/bundle/guestlink.cjs with V8's code cache, so that a start reads one file and compiles
 * next to nothing. The first line names the build, which bin/guestlink checks a cached
 * compilation against: one made for another build is never used.
 *
 * Dependencies are bundled too, except native modules (loaded from node_modules when present;
 * msgpackr's string extractor is left out, see cli-bundle.ts).
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { build } from "esbuild";
import {
  AGENT_BUILD_OPTIONS,
  CLI_BUILD_OPTIONS,
  CLI_BUNDLE_DIR,
  CLI_BUNDLE_FILE,
  cliBundleFile,
  unloadableExternal,
} from "./cli-bundle.ts";

const result = await build({ ...CLI_BUILD_OPTIONS, write: false });
const [output] = result.outputFiles;
if (output === undefined || result.outputFiles.length !== 1) {
  throw new Error(`esbuild gave ${result.outputFiles.length} files for the CLI, not one`);
}
const { contents, id } = cliBundleFile(output.contents);
const unloadable = unloadableExternal(output.text);
if (unloadable !== undefined) throw new Error(unloadable);
// Chunks of an earlier build go: nothing may load them by mistake.
rmSync(CLI_BUNDLE_DIR, { recursive: true, force: true });
mkdirSync(CLI_BUNDLE_DIR, { recursive: true });
writeFileSync(CLI_BUNDLE_FILE, contents);
console.log(`${CLI_BUNDLE_FILE}: ${(contents.length / 1024).toFixed(0)} KiB, build ${id}`);
// The agent's entry and chunks, beside it (see AGENT_BUILD_OPTIONS).
const agent = await build({ ...AGENT_BUILD_OPTIONS, metafile: true });
const chunks = Object.keys(agent.metafile.outputs).length - 1;
console.log(`${CLI_BUNDLE_DIR}/guestlink.mjs: for guestlink agent, with ${chunks} chunks`);

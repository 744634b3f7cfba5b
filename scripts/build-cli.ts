/**
 * Bundles the CLI for a quick start (options in cli-bundle.ts): `bin/guestlink` loads
 * dist/bundle/guestlink.mjs, the program's shape (commander, every command's options and help),
 * and each command loads its implementation from the chunks beside it when it runs, so
 * `--version` and `--help` load 214 KiB in 13 files where they loaded 928 KiB, and
 * `exec unix:… -- true` 587 KiB (the session, unix.ts, msgpackr, valibot) where it loaded 901.
 * Measured on this 2-core machine, busy with other work, medians of 40 runs taking turns:
 * `--version` 219 -> 146 ms, `exec unix:… -- true` 252-259 -> 226-242 ms, `node -e 0` 101-112 ms.
 * test/cli/startup.test.ts checks what --version, --help and exec load.
 *
 * Dependencies are bundled too, except native modules (loaded from node_modules when present;
 * msgpackr's string extractor is left out, see cli-bundle.ts) and the YAML reader, which
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
